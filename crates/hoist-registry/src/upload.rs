//! Blob uploads: one engine for every way a blob goes up.
//!
//! [`Repository::upload_blob`] takes a [`BlobSource`] (anything that can hand
//! out the blob's bytes) and does what the registry and the network allow;
//! [`Repository::stage_blob`] does the same but stops before the commit and
//! hands back a [`PendingBlob`], an open session holding every byte, to
//! commit or cancel later (a streamed push learns which layers it needs only
//! at the end of its input). Both run the same steps (`session.rs`):
//!
//! 1. HEAD when the digest is known: a blob that is there costs one request.
//! 2. A cross-repository mount when a source repository is named, with a
//!    token that also grants pull there: 201 is done, 202 is an upload
//!    session to carry on with, a refusal is an ordinary upload.
//! 3. Monolithic (POST, then one PUT with `Content-Length`) for blobs whose
//!    digest and size are known and not too large; streamed (one PATCH
//!    without `Content-Range`, then an empty PUT with the digest); chunked
//!    (PATCHes with inclusive `Content-Range`) when asked for, as a
//!    fallback, and always for a source that can be read only once.
//! 4. Recovery: a 413 switches to chunks, and halves them while the registry
//!    or a proxy refuses their size (416 with nothing accepted counts too, as
//!    GHCR caps chunks at 4 MiB); a dropped connection, a stall, a 5xx or a
//!    416 asks the registry where the upload stands (GET on the session) and
//!    resumes there — by reopening the source at that offset, or, for a
//!    source read only once, from the last two chunks, which are kept; a
//!    lost session starts a new one. Giving up cancels the session (DELETE,
//!    best effort).
//! 5. The commit (an empty PUT with the digest) is sent once. If its answer
//!    is lost, a HEAD tells whether the blob is there; only if it is not and
//!    the session still holds every byte is the commit sent again.
//!
//! PATCH and PUT on a session are never re-sent blindly: distribution signs
//! the offset into the `Location`'s `_state`, and a repeat would corrupt the
//! upload. Every other request is retried by `retry.rs`. Sessions opened for
//! an [`OpenUploads`] are recorded there until committed or cancelled, so
//! that whoever stops an operation midway can cancel what it left open.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use hoist_oci::Digest;
use url::Url;

use crate::retry::Budget;
use crate::session::{MountAnswer, Session};
use crate::wire::Activity;
use crate::{ErrorKind, RegistryError, Repository};

/// A chunk size that suits most registries (ECR wants 5–20 MiB parts).
pub const DEFAULT_CHUNK_SIZE: u64 = 8 * 1024 * 1024;
/// Chunks of a source read only once: two are kept for resending, and GHCR
/// refuses larger ones.
const ONE_PASS_CHUNK: u64 = 4 * 1024 * 1024;
/// Chunks are never halved below this, nor grown above [`MAX_CHUNK_SIZE`].
const MIN_CHUNK_SIZE: u64 = 64 * 1024;
/// A registry's `OCI-Chunk-Min-Length` is obeyed up to here: it must not
/// make us hold gigabytes in memory.
const MAX_CHUNK_SIZE: u64 = 256 * 1024 * 1024;
/// Request bodies are handed to the connection in pieces of this size, so
/// that the watchdog sees a slow link's progress.
const BODY_PIECE: usize = 256 * 1024;

/// The bytes of a blob, from any offset.
pub type BlobStream = BoxStream<'static, io::Result<Bytes>>;

/// Where an upload's bytes come from.
///
/// `open(offset)` gives the bytes from `offset` to the end. If the stream
/// fails (an `Err` item, at any point, the end included), the upload fails
/// and its session is cancelled: nothing half-sent is ever committed.
pub trait BlobSource: Send + Sync {
    /// The blob's bytes from `offset` to the end.
    fn open(&self, offset: u64) -> io::Result<BlobStream>;
    /// The blob's size, if known before it has been read.
    fn size(&self) -> Option<u64>;
    /// The blob's digest: known up front, or once a stream has been read to
    /// its end (then an upload cannot be skipped by a HEAD or mount).
    fn digest(&self) -> Option<Digest>;
    /// False for bytes that can be read only once, front to back (a stream
    /// as it is read): `open` is then called once, at offset 0, and the
    /// upload goes in chunks, keeping the last two to resend.
    fn reopenable(&self) -> bool {
        true
    }
}

/// A blob held in memory (configs, small files).
#[derive(Clone, Debug)]
pub struct BytesSource {
    bytes: Bytes,
    digest: Digest,
}

impl BytesSource {
    pub fn new(bytes: Bytes) -> Self {
        Self { digest: Digest::of(&bytes), bytes }
    }
}

impl BlobSource for BytesSource {
    fn open(&self, offset: u64) -> io::Result<BlobStream> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.bytes.len());
        let rest = self.bytes.slice(start..);
        Ok(futures_util::stream::once(async move { Ok(rest) }).boxed())
    }

    fn size(&self) -> Option<u64> {
        Some(self.bytes.len() as u64)
    }

    fn digest(&self) -> Option<Digest> {
        Some(self.digest.clone())
    }
}

/// How [`Repository::upload_blob`] may upload.
#[derive(Clone, Debug)]
pub struct UploadOptions {
    /// Another repository on the same registry that may hold the blob: try a
    /// cross-repository mount from it first.
    pub mount_from: Option<String>,
    /// Always upload in chunks of this many bytes (raised to the registry's
    /// `OCI-Chunk-Min-Length`). `None`: monolithic or streamed, chunks only
    /// as a fallback or for a source read only once.
    pub chunk_size: Option<u64>,
    /// Known blobs up to this size go in one PUT; larger ones are streamed.
    pub monolithic_max: u64,
    /// Resumes, restarts and chunk-size changes allowed in a row, without the
    /// registry holding more in between, before giving up.
    pub max_recoveries: u32,
    /// Where open sessions are recorded until committed or cancelled.
    pub track: Option<OpenUploads>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self { mount_from: None, chunk_size: None, monolithic_max: 512 * 1024 * 1024, max_recoveries: 10, track: None }
    }
}

/// What [`Repository::upload_blob`] had to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadAction {
    /// The repository already had the blob (one HEAD).
    Existed,
    /// The registry linked it from the `mount_from` repository.
    Mounted,
    /// The bytes were sent.
    Uploaded,
}

/// The result of an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOutcome {
    pub action: UploadAction,
    pub digest: Digest,
    /// The blob's size, when known (always for an upload).
    pub size: Option<u64>,
    /// Bytes handed to the network, resends included.
    pub bytes_sent: u64,
    /// Requests retried plus upload recoveries (resumes, restarts, smaller chunks).
    pub retries: u32,
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The source failed; the upload was cancelled and not retried.
    #[error("cannot read the blob to upload: {0}")]
    Source(#[source] io::Error),
}

impl UploadError {
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Registry(e) => e.hint(),
            Self::Source(_) => None,
        }
    }
}

/// What [`Repository::stage_blob`] achieved.
#[derive(Debug)]
pub enum Staged {
    /// The blob is in the repository already (it existed, or was mounted).
    Placed(UploadOutcome),
    /// Every byte is in an open session, waiting for a commit.
    Pending(Box<PendingBlob>),
}

/// An upload session holding every byte of a blob, not yet committed:
/// [`PendingBlob::commit`] makes the blob, [`PendingBlob::cancel`] drops it.
/// Dropped without either, the session stays open until the registry
/// expires it (and stays recorded in the [`OpenUploads`] it was opened for).
#[derive(Debug)]
pub struct PendingBlob {
    session: Session,
    digest: Digest,
    size: u64,
    bytes_sent: u64,
    retries: u32,
}

impl PendingBlob {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Bytes the session holds.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes handed to the network for it so far, resends included.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Requests retried and recoveries so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Closes the session with the blob's digest. The commit is sent once;
    /// if its answer is lost, a HEAD tells whether the blob is there, and
    /// only a session that still holds every byte is committed again.
    pub async fn commit(mut self) -> Result<UploadOutcome, RegistryError> {
        let retries = AtomicU32::new(self.retries);
        let mut budget = Budget::new(&self.session.repo().retry_context(None).policy);
        let mut attempt = 1;
        loop {
            let error = match self.session.commit(&self.digest, &Activity::new()).await {
                Ok(()) => break,
                Err(error) => error,
            };
            if self.session.repo().head_blob(&self.digest, Some(&retries)).await.ok().flatten().is_some() {
                self.session.finished();
                break;
            }
            if !error.is_retryable() {
                self.session.cancel().await;
                return Err(error);
            }
            let Ok(delay) = budget.next(None) else {
                self.session.cancel().await;
                return Err(error);
            };
            let reason = describe(&error);
            let context = self.session.repo().retry_context(Some(&retries));
            context.pause(&format!("commit blob {}", self.digest), attempt, delay, reason).await;
            attempt += 1;
            match self.session.status(&retries).await {
                Ok(Some(held)) if held == self.size => {}
                Ok(held) => {
                    self.session.cancel().await;
                    return Err(RegistryError::new(ErrorKind::Unavailable, format!("commit blob {}", self.digest))
                        .with_detail(format!(
                            "the registry lost the upload (it holds {} of {} bytes) and its bytes are not kept",
                            held.unwrap_or(0),
                            self.size
                        ))
                        .with_hint("push again"));
                }
                Err(status_error) => {
                    self.session.cancel().await;
                    return Err(status_error);
                }
            }
        }
        Ok(UploadOutcome {
            action: UploadAction::Uploaded,
            digest: self.digest,
            size: Some(self.size),
            bytes_sent: self.bytes_sent,
            retries: retries.into_inner(),
        })
    }

    /// Abandons the session (DELETE, best effort: registries may refuse it
    /// for lack of a `delete` scope, and the session expires anyway).
    pub async fn cancel(self) {
        self.session.cancel().await;
    }
}

/// Upload sessions open on behalf of one operation, so that whoever stops it
/// (a signal, a failed sibling upload, a client that went away) can cancel
/// them: dropping an upload midway cannot send the DELETE itself. Cheap to
/// clone; clones share the record.
#[derive(Clone, Debug, Default)]
pub struct OpenUploads {
    inner: Arc<OpenInner>,
}

#[derive(Debug, Default)]
struct OpenInner {
    next: AtomicU64,
    open: Mutex<HashMap<u64, (Repository, Url)>>,
}

impl OpenUploads {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cancels every open session (DELETE, one attempt each, all at once).
    pub async fn cancel_all(&self) {
        let open: Vec<(Repository, Url)> = self.lock().drain().map(|(_, v)| v).collect();
        let deletes = open.into_iter().map(|(repo, url)| async move { crate::session::delete(&repo, &url).await });
        futures_util::future::join_all(deletes).await;
    }

    pub(crate) fn record(&self, repo: &Repository, location: &Url) -> u64 {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (repo.for_lookup(), location.clone()));
        id
    }

    pub(crate) fn moved(&self, id: u64, location: &Url) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.1 = location.clone();
        }
    }

    pub(crate) fn closed(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Repository, Url)>> {
        self.inner.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Monolithic,
    Streamed,
    Chunked,
}

/// How the next pass sends, and where it starts.
#[derive(Debug)]
struct Plan {
    mode: Mode,
    chunk: u64,
    /// Bytes the registry holds.
    offset: u64,
    recoveries: u32,
}

/// Why one pass at sending failed.
enum Failure {
    Registry(RegistryError),
    Source(io::Error),
}

impl From<RegistryError> for Failure {
    fn from(error: RegistryError) -> Self {
        Self::Registry(error)
    }
}

impl Repository {
    /// Puts the blob from `source` into this repository, by whatever route
    /// works (see the module docs of `upload.rs`), and says which it took.
    pub async fn upload_blob(
        &self,
        source: &dyn BlobSource,
        options: &UploadOptions,
    ) -> Result<UploadOutcome, UploadError> {
        let mut upload = Uploader::new(self, source, options);
        let session = match upload.place_or_open().await? {
            Ok(outcome) => return Ok(outcome),
            Err(session) => session,
        };
        upload.run(session, true).await.map(|done| match done {
            Done::Committed(outcome) => outcome,
            Done::Sent(_) => unreachable!("a committing run ends committed"),
        })
    }

    /// Like [`Self::upload_blob`], but stops once every byte is in the
    /// session, before the commit: the caller commits or cancels the
    /// [`PendingBlob`] later.
    pub async fn stage_blob(&self, source: &dyn BlobSource, options: &UploadOptions) -> Result<Staged, UploadError> {
        let mut upload = Uploader::new(self, source, options);
        let session = match upload.place_or_open().await? {
            Ok(outcome) => return Ok(Staged::Placed(outcome)),
            Err(session) => session,
        };
        match upload.run(session, false).await? {
            Done::Sent(pending) => Ok(Staged::Pending(pending)),
            Done::Committed(outcome) => Ok(Staged::Placed(outcome)),
        }
    }
}

/// How a run ended.
enum Done {
    Committed(UploadOutcome),
    Sent(Box<PendingBlob>),
}

/// State shared by the passes of one upload.
struct Uploader<'a> {
    repo: &'a Repository,
    source: &'a dyn BlobSource,
    options: &'a UploadOptions,
    action: String,
    retries: AtomicU32,
    sent: Arc<AtomicU64>,
    /// The first error the source's stream gave, told apart from network errors.
    source_error: Arc<Mutex<Option<io::Error>>>,
    /// Progress of the request in flight, for the stall watchdog.
    activity: Activity,
    reader: Option<Reader>,
    /// Whether `open` was called (a source read only once allows one call).
    opened: bool,
}

impl<'a> Uploader<'a> {
    fn new(repo: &'a Repository, source: &'a dyn BlobSource, options: &'a UploadOptions) -> Self {
        let what = source.digest().map_or_else(|| "a blob".to_owned(), |d| format!("blob {d}"));
        Self {
            repo,
            source,
            options,
            action: format!("upload {what} to {}", repo.name()),
            retries: AtomicU32::new(0),
            sent: Arc::new(AtomicU64::new(0)),
            source_error: Arc::new(Mutex::new(None)),
            activity: Activity::new(),
            reader: None,
            opened: false,
        }
    }

    fn outcome(&self, action: UploadAction, digest: Digest, size: Option<u64>) -> UploadOutcome {
        UploadOutcome {
            action,
            digest,
            size,
            bytes_sent: self.sent.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    /// HEAD and mount when the digest is known; else (or if neither placed
    /// the blob) a session to send into.
    async fn place_or_open(&self) -> Result<Result<UploadOutcome, Session>, UploadError> {
        let track = self.options.track.as_ref();
        if let Some(digest) = self.source.digest() {
            if let Some(size) = self.repo.head_blob(&digest, Some(&self.retries)).await? {
                return Ok(Ok(self.outcome(UploadAction::Existed, digest, Some(size))));
            }
            if let Some(from) = self.options.mount_from.as_deref().filter(|from| *from != self.repo.name()) {
                match Session::mount(self.repo, &digest, from, &self.retries, track).await? {
                    MountAnswer::Mounted => {
                        return Ok(Ok(self.outcome(UploadAction::Mounted, digest, self.source.size())));
                    }
                    MountAnswer::Session(session) => return Ok(Err(*session)),
                    MountAnswer::Refused => {}
                }
            }
        }
        Ok(Err(Session::open(self.repo, &self.retries, track).await?))
    }

    /// Sends every byte into `session` by whatever mode works, recovering as
    /// the module docs say; then commits (`commit`) or hands the session back.
    async fn run(&mut self, mut session: Session, commit: bool) -> Result<Done, UploadError> {
        let mode = match (self.source.digest(), self.source.size(), self.options.chunk_size) {
            (_, _, Some(_)) => Mode::Chunked,
            _ if !self.source.reopenable() => Mode::Chunked,
            (Some(_), Some(size), None) if commit && size <= self.options.monolithic_max => Mode::Monolithic,
            _ => Mode::Streamed,
        };
        let chunk = self.options.chunk_size.unwrap_or(if self.source.reopenable() {
            DEFAULT_CHUNK_SIZE
        } else {
            ONE_PASS_CHUNK
        });
        let mut plan = Plan { mode, chunk, offset: 0, recoveries: 0 };
        let policy = self.repo.retry_context(None).policy;
        let mut budget = Budget::new(&policy);
        // The furthest the registry was known to hold: progress past it gives
        // recoveries and their time budget a fresh start, so a long upload
        // over a flaky link is bounded per failure, not in all.
        let mut furthest = 0;
        loop {
            plan.chunk = plan.chunk.max(session.min_chunk().unwrap_or(0)).clamp(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
            let pass = match plan.mode {
                Mode::Monolithic => self.put_whole(&mut session).await.map(Some),
                Mode::Streamed => self.patch_stream(&mut session, plan.offset).await.map(|()| None),
                Mode::Chunked => self.patch_chunks(&mut session, &mut plan).await.map(|()| None),
            };
            let pass = match pass {
                Err(Failure::Registry(error)) => match self.take_source_error() {
                    Some(source) => Err(Failure::Source(source)),
                    None => Err(Failure::Registry(error)),
                },
                other => other,
            };
            let error = match pass {
                Ok(Some(outcome)) => {
                    session.finished();
                    return Ok(Done::Committed(outcome));
                }
                Ok(None) if !commit => return self.pending(session).await.map(|p| Done::Sent(Box::new(p))),
                Ok(None) => match self.commit(&mut session).await {
                    Ok(outcome) => return Ok(Done::Committed(outcome)),
                    Err(error) => match self.committed_anyway().await {
                        Some(outcome) => {
                            session.finished();
                            return Ok(Done::Committed(outcome));
                        }
                        None => error,
                    },
                },
                Err(Failure::Source(error)) => return Err(give_up(session, UploadError::Source(error)).await),
                // A one-PUT upload also commits: if its answer was lost, the
                // blob may be in already (a HEAD says), and the whole blob is
                // not sent again.
                Err(Failure::Registry(error)) if plan.mode == Mode::Monolithic => match self.committed_anyway().await {
                    Some(outcome) => {
                        session.finished();
                        return Ok(Done::Committed(outcome));
                    }
                    None => error,
                },
                Err(Failure::Registry(error)) => error,
            };
            if plan.offset > furthest {
                furthest = plan.offset;
                plan.recoveries = 0;
                budget = Budget::new(&policy);
            }
            plan.recoveries += 1;
            if plan.recoveries > self.options.max_recoveries {
                return Err(give_up(session, error.into()).await);
            }
            if let Err(error) = self.recover(&mut session, &mut plan, error, &mut budget).await {
                return Err(give_up(session, error).await);
            }
        }
    }

    /// Every byte is sent: the session, as a [`PendingBlob`], once the bytes
    /// that went into it (every chunk the registry took) are as many as the
    /// source says the blob has.
    async fn pending(&self, session: Session) -> Result<PendingBlob, UploadError> {
        let Some(digest) = self.source.digest() else {
            let error = RegistryError::new(ErrorKind::Protocol, self.action.clone())
                .with_detail("the blob's source did not tell its digest after it was read");
            return Err(give_up(session, error.into()).await);
        };
        let in_session = self.reader.as_ref().map(|r| r.pos);
        let size = match (self.source.size(), in_session) {
            (Some(size), Some(sent)) if size != sent => {
                let error = RegistryError::new(ErrorKind::Mismatch, self.action.clone())
                    .with_detail(format!("the session holds {sent} bytes, and the blob has {size}"));
                return Err(give_up(session, error.into()).await);
            }
            (Some(size), _) | (None, Some(size)) => size,
            (None, None) => 0,
        };
        Ok(PendingBlob {
            session,
            digest,
            size,
            bytes_sent: self.sent.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        })
    }

    /// Decides how to carry on after `error`; `Err` means give up.
    async fn recover(
        &mut self,
        session: &mut Session,
        plan: &mut Plan,
        error: RegistryError,
        budget: &mut Budget,
    ) -> Result<(), UploadError> {
        let status = error.status();
        let reason = describe(&error);
        match status {
            // A proxy or the registry refuses bodies this large: chunks, then
            // smaller chunks. The refused request left no data.
            Some(413) => {
                if plan.mode == Mode::Chunked {
                    plan.chunk = shrink(plan.chunk, session.min_chunk()).ok_or(error)?;
                } else {
                    plan.mode = Mode::Chunked;
                    plan.chunk = plan.chunk.min(DEFAULT_CHUNK_SIZE);
                }
                let reason = format!("{reason}; sending {}-byte chunks", plan.chunk);
                self.pause(plan.recoveries, Duration::ZERO, reason).await;
            }
            // Out of range, or a chunk too large for GHCR: ask where the
            // upload stands; if nothing moved, the chunk was the problem.
            Some(416) => {
                let before = plan.offset;
                self.resume_point(session, plan).await?;
                if plan.mode == Mode::Chunked && plan.offset == before {
                    plan.chunk = shrink(plan.chunk, session.min_chunk()).ok_or(error)?;
                }
                let reason = format!("{reason}; resuming at byte {} in {}-byte chunks", plan.offset, plan.chunk);
                self.pause(plan.recoveries, Duration::ZERO, reason).await;
            }
            // The session is gone or broken: start again.
            _ if status == Some(404)
                || error.has_code("BLOB_UPLOAD_UNKNOWN")
                || error.has_code("BLOB_UPLOAD_INVALID") =>
            {
                self.pause(plan.recoveries, Duration::ZERO, format!("{reason}; starting a new upload")).await;
                self.restart(session).await?;
                plan.offset = 0;
            }
            _ if error.is_retryable() => {
                let delay = budget.next(None).map_err(|_| error)?;
                self.pause(plan.recoveries, delay, reason).await;
                self.resume_point(session, plan).await?;
                tracing::debug!(offset = plan.offset, "resuming the upload: {}", self.action);
            }
            _ => return Err(error.into()),
        }
        Ok(())
    }

    /// Asks the registry where the upload stands and plans to go on from
    /// there: in chunks past the start, in a new session if it is gone.
    async fn resume_point(&self, session: &mut Session, plan: &mut Plan) -> Result<(), RegistryError> {
        match session.status(&self.retries).await? {
            Some(stands) => plan.offset = stands,
            None => {
                self.restart(session).await?;
                plan.offset = 0;
            }
        }
        if plan.offset > 0 {
            plan.mode = Mode::Chunked;
        }
        Ok(())
    }

    /// Replaces `session` with a new one; the old one is cancelled (a
    /// registry that said it was gone may still hold it) and no longer
    /// recorded as open.
    async fn restart(&self, session: &mut Session) -> Result<(), RegistryError> {
        let fresh = Session::open(self.repo, &self.retries, self.options.track.as_ref()).await?;
        std::mem::replace(session, fresh).cancel().await;
        Ok(())
    }

    async fn pause(&self, attempt: u32, delay: Duration, reason: String) {
        self.repo.retry_context(Some(&self.retries)).pause(&self.action, attempt, delay, reason).await;
    }

    fn take_source_error(&self) -> Option<io::Error> {
        self.source_error.lock().ok()?.take()
    }

    /// The source's bytes from `offset`, counted as they go out, with
    /// source failures remembered apart from network ones.
    fn stream_from(&mut self, offset: u64) -> Result<BlobStream, Failure> {
        if self.opened && !self.source.reopenable() {
            return Err(Failure::Registry(self.lost(offset)));
        }
        self.opened = true;
        self.reader = None;
        let stream = self.source.open(offset).map_err(Failure::Source)?;
        let failed = Arc::clone(&self.source_error);
        Ok(stream
            .map(move |item| {
                item.map_err(|error| {
                    let message = error.to_string();
                    if let Ok(mut slot) = failed.lock() {
                        slot.get_or_insert(error);
                    }
                    io::Error::other(message)
                })
            })
            .boxed())
    }

    /// A request body from `stream`, in pieces the watchdog can see go.
    fn body(&self, stream: BlobStream) -> reqwest::Body {
        let (sent, activity) = (Arc::clone(&self.sent), self.activity.clone());
        let pieces = stream.flat_map(|item| {
            let pieces: Vec<io::Result<Bytes>> = match item {
                Ok(bytes) => split(bytes),
                Err(error) => vec![Err(error)],
            };
            futures_util::stream::iter(pieces)
        });
        reqwest::Body::wrap_stream(pieces.map(move |item| {
            if let Ok(bytes) = &item {
                sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                activity.touch();
            }
            item
        }))
    }

    /// The error for a resume the source cannot serve: it is read only once
    /// and `offset` lies before the chunks kept.
    fn lost(&self, offset: u64) -> RegistryError {
        RegistryError::new(ErrorKind::Unavailable, self.action.clone())
            .with_detail(format!(
                "the registry lost the upload from byte {offset}, and the blob was read from a stream that cannot be \
                 read again"
            ))
            .with_hint("push again; from a file (not standard input or a wrapped archive), hoist can resume any upload")
    }

    /// POST was done; one PUT with the whole blob and the digest.
    async fn put_whole(&mut self, session: &mut Session) -> Result<UploadOutcome, Failure> {
        let digest = self.source.digest().expect("monolithic uploads have a known digest");
        let len = self.source.size().expect("monolithic uploads have a known size");
        let stream = self.stream_from(0)?;
        let body = self.body(stream);
        session.put_whole(&self.action, &digest, len, body, &self.activity).await?;
        session.finished();
        Ok(self.outcome(UploadAction::Uploaded, digest, Some(len)))
    }

    /// Everything from `offset` in one PATCH without `Content-Range`, as
    /// docker sends it.
    async fn patch_stream(&mut self, session: &mut Session, offset: u64) -> Result<(), Failure> {
        let stream = self.stream_from(offset)?;
        let body = self.body(stream);
        let length = self.source.size().map(|len| len.saturating_sub(offset));
        let stored = session.patch(&self.action, body, None, length, &self.activity).await?;
        if let (Some(stored), Some(size)) = (stored, self.source.size())
            && stored != size
        {
            return Err(Failure::Registry(
                RegistryError::new(ErrorKind::Protocol, self.action.clone())
                    .with_detail(format!("the registry holds {stored} bytes after all {size} were sent")),
            ));
        }
        Ok(())
    }

    /// PATCHes of `plan.chunk` bytes with inclusive `Content-Range`, from
    /// `plan.offset` to the end, reading the next chunk while one is sent so
    /// that the source (a compressor) keeps working during the round trip.
    async fn patch_chunks(&mut self, session: &mut Session, plan: &mut Plan) -> Result<(), Failure> {
        let chunk = plan.chunk;
        let kept = self.reader.take().and_then(|mut reader| reader.seek(plan.offset).then_some(reader));
        let mut reader = match kept {
            Some(reader) => reader,
            None => Reader::new(self.stream_from(plan.offset)?, plan.offset),
        };
        let mut next = reader.read_chunk(chunk).await;
        loop {
            let data = match next {
                Ok(data) => data,
                Err(error) => {
                    self.reader = Some(reader);
                    return Err(Failure::Source(error));
                }
            };
            let len = data.len();
            if len == 0 {
                self.reader = Some(reader);
                return Ok(());
            }
            let start = plan.offset;
            let last = len < chunk;
            let body = self.body(futures_util::stream::iter(data.pieces.into_iter().map(Ok)).boxed());
            let range = format!("{start}-{}", start + len - 1);
            let patching = session.patch(&self.action, body, Some(range), Some(len), &self.activity);
            let (answer, following) = if last {
                (patching.await, Ok(Chunk::default()))
            } else {
                tokio::join!(patching, reader.read_chunk(chunk))
            };
            self.reader = Some(reader);
            let reported = answer?;
            // ECR's Range can lag behind what it stored; trust what was sent.
            if reported.is_some_and(|end| end != start + len) {
                tracing::debug!(
                    sent_to = start + len,
                    ?reported,
                    "the registry's Range disagrees; counting bytes sent"
                );
            }
            plan.offset = start + len;
            if last {
                return Ok(());
            }
            reader = self.reader.take().expect("put back above");
            next = following;
        }
    }

    /// The empty PUT with the whole blob's digest that closes the session.
    async fn commit(&mut self, session: &mut Session) -> Result<UploadOutcome, RegistryError> {
        let Some(digest) = self.source.digest() else {
            return Err(RegistryError::new(ErrorKind::Protocol, self.action.clone())
                .with_detail("the blob's source did not tell its digest after it was read"));
        };
        session.commit(&digest, &self.activity).await?;
        let size = self.source.size().or_else(|| self.reader.as_ref().map(|r| r.pos));
        Ok(self.outcome(UploadAction::Uploaded, digest, size))
    }

    /// After a failed commit: the registry may have stored the blob and lost
    /// only its answer.
    async fn committed_anyway(&self) -> Option<UploadOutcome> {
        let digest = self.source.digest()?;
        let size = self.repo.head_blob(&digest, Some(&self.retries)).await.ok()??;
        Some(self.outcome(UploadAction::Uploaded, digest, Some(size)))
    }
}

async fn give_up(session: Session, error: UploadError) -> UploadError {
    session.cancel().await;
    error
}

/// A retry's reason, without URLs: `HTTP 503`, or what broke.
fn describe(error: &RegistryError) -> String {
    error
        .status()
        .map_or_else(|| error.details().detail.clone().unwrap_or_else(|| "no answer".into()), |s| format!("HTTP {s}"))
}

/// Half of `chunk`, unless that goes below what the registry or we accept.
fn shrink(chunk: u64, min_chunk: Option<u64>) -> Option<u64> {
    let floor = min_chunk.unwrap_or(0).max(MIN_CHUNK_SIZE);
    (chunk / 2 >= floor).then_some(chunk / 2)
}

/// `bytes` in pieces of at most [`BODY_PIECE`], without copying.
fn split(mut bytes: Bytes) -> Vec<io::Result<Bytes>> {
    let mut pieces = Vec::with_capacity(bytes.len() / BODY_PIECE + 1);
    while bytes.len() > BODY_PIECE {
        pieces.push(Ok(bytes.split_to(BODY_PIECE)));
    }
    pieces.push(Ok(bytes));
    pieces
}

/// A chunk as the source's own pieces, not copied into one buffer.
#[derive(Clone, Debug, Default)]
struct Chunk {
    pieces: Vec<Bytes>,
}

impl Chunk {
    fn len(&self) -> u64 {
        self.pieces.iter().map(|p| p.len() as u64).sum()
    }
}

/// Reads a [`BlobStream`] in chunks, keeping the last two chunks so that a
/// resend of either (the one in flight, or the one read ahead) does not
/// reopen the source. Chunks hold the stream's own pieces: nothing is
/// copied, so memory is what is kept, not twice that.
struct Reader {
    /// In a mutex only to be `Sync` (upload futures hold `&Uploader` across
    /// awaits); always reached through `get_mut`, without locking.
    stream: Mutex<BlobStream>,
    /// Source offset of the next byte `read_chunk` returns.
    pos: u64,
    /// Pieces already taken from the stream (or sought back to) but not yet returned.
    front: VecDeque<Bytes>,
    /// The last chunks returned, oldest first, with their offsets.
    kept: VecDeque<(u64, Chunk)>,
    ended: bool,
}

/// Chunks a [`Reader`] keeps for resending.
const KEPT_CHUNKS: usize = 2;

impl Reader {
    fn new(stream: BlobStream, pos: u64) -> Self {
        Self { stream: Mutex::new(stream), pos, front: VecDeque::new(), kept: VecDeque::new(), ended: false }
    }

    /// Moves back to `offset` within the kept chunks (or stays): false when
    /// the source must be reopened instead.
    fn seek(&mut self, offset: u64) -> bool {
        if offset == self.pos {
            return true;
        }
        let Some(oldest) = self.kept.front().map(|(start, _)| *start) else { return false };
        if offset < oldest || offset > self.pos {
            return false;
        }
        let mut front: VecDeque<Bytes> = VecDeque::new();
        for (start, chunk) in &self.kept {
            let mut at = *start;
            for piece in &chunk.pieces {
                let end = at + piece.len() as u64;
                if end > offset {
                    front.push_back(piece.slice(offset.saturating_sub(at) as usize..));
                }
                at = end;
            }
        }
        front.extend(self.front.drain(..));
        self.front = front;
        self.pos = offset;
        self.kept.clear();
        true
    }

    /// Up to `n` bytes; fewer only at the end of the blob.
    async fn read_chunk(&mut self, n: u64) -> io::Result<Chunk> {
        let mut chunk = Chunk::default();
        let mut missing = n;
        while missing > 0 {
            let Some(mut piece) = self.front.pop_front() else {
                if self.ended {
                    break;
                }
                let stream = self.stream.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
                match stream.next().await {
                    Some(Ok(bytes)) if !bytes.is_empty() => self.front.push_back(bytes),
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error),
                    None => self.ended = true,
                }
                continue;
            };
            if piece.len() as u64 > missing {
                self.front.push_front(piece.split_off(missing as usize));
            }
            missing -= piece.len() as u64;
            chunk.pieces.push(piece);
        }
        let len = chunk.len();
        if len > 0 {
            if self.kept.len() == KEPT_CHUNKS {
                self.kept.pop_front();
            }
            self.kept.push_back((self.pos, chunk.clone()));
        }
        self.pos += len;
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_halve_down_to_a_floor() {
        assert_eq!(shrink(8 << 20, None), Some(4 << 20));
        assert_eq!(shrink(MIN_CHUNK_SIZE, None), None);
        assert_eq!(shrink(8 << 20, Some(5 << 20)), None);
    }

    #[test]
    fn bodies_go_in_pieces_without_copies() {
        let bytes = Bytes::from(vec![7u8; BODY_PIECE * 2 + 5]);
        let pieces: Vec<Bytes> = split(bytes).into_iter().map(Result::unwrap).collect();
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [BODY_PIECE, BODY_PIECE, 5]);
    }

    async fn read(reader: &mut Reader, n: u64) -> Vec<u8> {
        reader.read_chunk(n).await.unwrap().pieces.concat()
    }

    #[tokio::test]
    async fn the_reader_resends_its_last_two_chunks_without_reopening() {
        // The source hands out uneven pieces, as a compressor's channel does.
        let pieces = [&b"01"[..], b"2345", b"6", b"789"].map(|p| Ok(Bytes::from_static(p)));
        let mut reader = Reader::new(futures_util::stream::iter(pieces).boxed(), 0);
        assert_eq!(read(&mut reader, 3).await, b"012");
        assert_eq!(read(&mut reader, 3).await, b"345");
        assert_eq!(read(&mut reader, 3).await, b"678");
        assert!(!reader.seek(2), "before the two kept chunks: reopen");
        assert!(reader.seek(4), "inside the older kept chunk");
        assert_eq!(read(&mut reader, 3).await, b"456");
        assert_eq!(read(&mut reader, 3).await, b"789");
        assert!(read(&mut reader, 3).await.is_empty());
        assert!(reader.seek(7));
        assert_eq!(read(&mut reader, 8).await, b"789");
    }
}

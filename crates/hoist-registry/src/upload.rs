//! Blob uploads that survive real registries and the proxies in front of them.
//!
//! [`Repository::upload_blob`] takes a [`BlobSource`] (anything that can hand
//! out the blob's bytes from any offset) and does what the registry and the
//! network allow:
//!
//! 1. HEAD when the digest is known: a blob that is there costs one request.
//! 2. A cross-repository mount when a source repository is named: 201 is
//!    done, 202 is an upload session to carry on with.
//! 3. Monolithic (POST, then one PUT with `Content-Length`) for blobs whose
//!    digest and size are known and not too large; streamed (one PATCH
//!    without `Content-Range`, then an empty PUT with the digest) when the
//!    digest is only known at the end; chunked (PATCHes with inclusive
//!    `Content-Range`) when asked for, or as a fallback.
//! 4. Recovery: a 413 switches to chunks, and halves them while the registry
//!    or a proxy refuses their size (416 with nothing accepted counts too, as
//!    GHCR caps chunks at 4 MiB); a dropped connection, a 5xx or a 416 asks
//!    the registry where the upload stands (GET on the session) and resumes
//!    there by reopening the source at that offset; a lost session starts a
//!    new one. Giving up cancels the session (DELETE, best effort).
//!
//! PATCH and PUT on a session are sent once each: re-sending them blindly
//! would corrupt the upload (distribution signs the offset into the
//! `Location`'s `_state`), so their failures go through the recovery above.
//! Every other request is retried by `retry.rs`.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use hoist_oci::Digest;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::repository::{error_from, header_length, header_str};
use crate::{DOCKER_CONTENT_DIGEST, ErrorKind, OCTET_STREAM, RegistryError, Repository};

/// A chunk size that suits most registries (ECR wants 5–20 MiB parts).
pub const DEFAULT_CHUNK_SIZE: u64 = 8 * 1024 * 1024;
/// Chunks are never halved below this, nor grown above [`MAX_CHUNK_SIZE`].
const MIN_CHUNK_SIZE: u64 = 64 * 1024;
/// A registry's `OCI-Chunk-Min-Length` is obeyed up to here: it must not
/// make us hold gigabytes in memory.
const MAX_CHUNK_SIZE: u64 = 1024 * 1024 * 1024;

/// The bytes of a blob, from any offset.
pub type BlobStream = BoxStream<'static, io::Result<Bytes>>;

/// Where an upload's bytes come from. Must be able to start again at any
/// offset, so that an upload can resume where the registry says it stands.
pub trait BlobSource: Send + Sync {
    /// The blob's bytes from `offset` to the end.
    fn open(&self, offset: u64) -> io::Result<BlobStream>;
    /// The blob's size, if known before it has been read.
    fn size(&self) -> Option<u64>;
    /// The blob's digest: known up front, or once a stream has been read to
    /// its end (then an upload cannot be skipped by a HEAD or mount).
    fn digest(&self) -> Option<Digest>;
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
    /// as a fallback.
    pub chunk_size: Option<u64>,
    /// Known blobs up to this size go in one PUT; larger ones are streamed.
    pub monolithic_max: u64,
    /// Resumes, restarts and chunk-size changes allowed before giving up.
    pub max_recoveries: u32,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self { mount_from: None, chunk_size: None, monolithic_max: 512 * 1024 * 1024, max_recoveries: 10 }
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

/// The result of [`Repository::upload_blob`].
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

/// Why [`Repository::upload_blob`] failed.
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

/// An open upload session: always the newest `Location`.
#[derive(Debug)]
struct Session {
    location: Url,
    /// `OCI-Chunk-Min-Length` from the POST, if any.
    min_chunk: Option<u64>,
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

/// State shared by the passes of one upload.
struct Uploader<'a> {
    repo: &'a Repository,
    source: &'a dyn BlobSource,
    action: String,
    retries: AtomicU32,
    sent: Arc<AtomicU64>,
    source_error: Arc<Mutex<Option<io::Error>>>,
    reader: Option<Reader>,
}

impl Repository {
    /// Puts the blob from `source` into this repository, by whatever route
    /// works (see the module docs of `upload.rs`), and says which it took.
    pub async fn upload_blob(
        &self,
        source: &dyn BlobSource,
        options: &UploadOptions,
    ) -> Result<UploadOutcome, UploadError> {
        let known = source.digest();
        let what = known.as_ref().map_or_else(|| "a blob".to_owned(), |d| format!("blob {d}"));
        let upload = Uploader {
            repo: self,
            source,
            action: format!("upload {what} to {}", self.name()),
            retries: AtomicU32::new(0),
            sent: Arc::new(AtomicU64::new(0)),
            source_error: Arc::new(Mutex::new(None)),
            reader: None,
        };
        let mut session = None;
        if let Some(digest) = &known {
            if let Some(size) = upload.head(digest).await? {
                return Ok(upload.outcome(UploadAction::Existed, digest.clone(), Some(size)));
            }
            if let Some(from) = options.mount_from.as_deref().filter(|from| *from != self.name()) {
                match upload.mount(digest, from).await? {
                    Some(opened) => session = Some(opened),
                    None => {
                        return Ok(upload.outcome(UploadAction::Mounted, digest.clone(), source.size()));
                    }
                }
            }
        }
        let session = match session {
            Some(session) => session,
            None => upload.open_session().await?,
        };
        upload.send(session, options).await
    }
}

impl Uploader<'_> {
    fn outcome(&self, action: UploadAction, digest: Digest, size: Option<u64>) -> UploadOutcome {
        UploadOutcome {
            action,
            digest,
            size,
            bytes_sent: self.sent.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    async fn head(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        let url = self.repo.endpoint(&format!("blobs/{digest}"));
        let action = format!("check for blob {digest} in {}", self.repo.name());
        let request = self.repo.http().head(url.clone());
        let response = self.repo.send_counted(&action, &url, request, Some(&self.retries)).await?;
        match response.status() {
            StatusCode::OK => Ok(Some(header_length(&response))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(error_from(&action, &url, response).await),
        }
    }

    /// `None`: mounted. `Some`: the registry opened a session instead.
    async fn mount(&self, digest: &Digest, from: &str) -> Result<Option<Session>, RegistryError> {
        let mut url = self.repo.endpoint("blobs/uploads/");
        url.query_pairs_mut().append_pair("mount", &digest.to_string()).append_pair("from", from);
        let action = format!("mount blob {digest} from {from} into {}", self.repo.name());
        let request = self.repo.http().post(url.clone()).header(CONTENT_LENGTH, 0);
        let response = self.repo.send_counted(&action, &url, request, Some(&self.retries)).await?;
        match response.status() {
            StatusCode::CREATED => Ok(None),
            StatusCode::ACCEPTED => Ok(Some(session_from(&action, &url, &response)?)),
            // Harbor refuses a mount from a project the account cannot read
            // with 401; others say 403 or 404. An ordinary upload still works.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                tracing::debug!(status = %response.status(), "mount refused; uploading instead");
                Ok(Some(self.open_session().await?))
            }
            _ => Err(error_from(&action, &url, response).await),
        }
    }

    async fn open_session(&self) -> Result<Session, RegistryError> {
        let url = self.repo.endpoint("blobs/uploads/");
        let action = format!("start a blob upload to {}", self.repo.name());
        let request = self.repo.http().post(url.clone()).header(CONTENT_LENGTH, 0);
        let response = self.repo.send_counted(&action, &url, request, Some(&self.retries)).await?;
        // 202 is a session, never a stored blob, even if a registry said 201.
        if !matches!(response.status(), StatusCode::ACCEPTED | StatusCode::CREATED) {
            return Err(error_from(&action, &url, response).await);
        }
        session_from(&action, &url, &response)
    }

    async fn send(mut self, mut session: Session, options: &UploadOptions) -> Result<UploadOutcome, UploadError> {
        let mode = match (self.source.digest(), self.source.size(), options.chunk_size) {
            (_, _, Some(_)) => Mode::Chunked,
            (Some(_), Some(size), None) if size <= options.monolithic_max => Mode::Monolithic,
            _ => Mode::Streamed,
        };
        let mut plan = Plan { mode, chunk: options.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE), offset: 0, recoveries: 0 };
        let mut delays = self.repo.retry_context(None).policy.delays();
        loop {
            plan.chunk = plan.chunk.max(session.min_chunk.unwrap_or(0)).clamp(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
            let pass = match plan.mode {
                Mode::Monolithic => self.put_whole(&mut session).await,
                Mode::Streamed => self.patch_stream(&mut session, plan.offset).await,
                Mode::Chunked => self.patch_chunks(&mut session, &mut plan.offset, plan.chunk).await,
            };
            let pass = match pass {
                Err(Failure::Registry(error)) => match self.take_source_error() {
                    Some(source) => Err(Failure::Source(source)),
                    None => Err(Failure::Registry(error)),
                },
                other => other,
            };
            let error = match pass {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => match self.commit(&mut session).await {
                    Ok(outcome) => return Ok(outcome),
                    Err(Failure::Registry(error)) => match self.committed_anyway().await {
                        Some(outcome) => return Ok(outcome),
                        None => error,
                    },
                    Err(Failure::Source(error)) => return Err(self.give_up(session, UploadError::Source(error)).await),
                },
                Err(Failure::Source(error)) => return Err(self.give_up(session, UploadError::Source(error)).await),
                Err(Failure::Registry(error)) => error,
            };
            plan.recoveries += 1;
            if plan.recoveries > options.max_recoveries {
                return Err(self.give_up(session, error.into()).await);
            }
            if let Err(error) = self.recover(&mut session, &mut plan, error, &mut delays).await {
                return Err(self.give_up(session, error).await);
            }
        }
    }

    /// Decides how to carry on after `error`; `Err` means give up.
    async fn recover(
        &self,
        session: &mut Session,
        plan: &mut Plan,
        error: RegistryError,
        delays: &mut impl Iterator<Item = Duration>,
    ) -> Result<(), UploadError> {
        let status = error.status();
        let reason = status.map_or_else(
            || error.details().detail.clone().unwrap_or_else(|| "no answer".into()),
            |s| format!("HTTP {s}"),
        );
        match status {
            // A proxy or the registry refuses bodies this large: chunks, then
            // smaller chunks. The refused request left no data.
            Some(413) => {
                if plan.mode == Mode::Chunked {
                    plan.chunk = shrink(plan.chunk, session.min_chunk).ok_or(error)?;
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
                    plan.chunk = shrink(plan.chunk, session.min_chunk).ok_or(error)?;
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
                *session = self.open_session().await?;
                plan.offset = 0;
            }
            _ if error.is_retryable() => {
                let delay = delays.next().ok_or(error)?;
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
        match self.status(session).await? {
            Some(stands) => plan.offset = stands,
            None => {
                *session = self.open_session().await?;
                plan.offset = 0;
            }
        }
        if plan.offset > 0 {
            plan.mode = Mode::Chunked;
        }
        Ok(())
    }

    async fn pause(&self, attempt: u32, delay: Duration, reason: String) {
        self.repo.retry_context(Some(&self.retries)).pause(&self.action, attempt, delay, reason).await;
    }

    fn take_source_error(&self) -> Option<io::Error> {
        self.source_error.lock().ok()?.take()
    }

    /// The source's bytes from `offset` as a request body; counts what goes
    /// out and remembers source failures apart from network ones.
    fn body_from(&mut self, offset: u64) -> Result<reqwest::Body, Failure> {
        self.reader = None;
        let stream = self.source.open(offset).map_err(Failure::Source)?;
        let (sent, failed) = (Arc::clone(&self.sent), Arc::clone(&self.source_error));
        let stream = stream.map(move |item| match item {
            Ok(bytes) => {
                sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(bytes)
            }
            Err(error) => {
                let message = error.to_string();
                if let Ok(mut slot) = failed.lock() {
                    slot.get_or_insert(error);
                }
                Err(io::Error::other(message))
            }
        });
        Ok(reqwest::Body::wrap_stream(stream))
    }

    /// POST was done; one PUT with the whole blob and the digest.
    async fn put_whole(&mut self, session: &mut Session) -> Result<Option<UploadOutcome>, Failure> {
        let digest = self.source.digest().expect("monolithic uploads have a known digest");
        let len = self.source.size().expect("monolithic uploads have a known size");
        let url = with_digest(&session.location, &digest);
        let request = self
            .repo
            .http()
            .put(url.clone())
            .header(CONTENT_TYPE, OCTET_STREAM)
            .header(CONTENT_LENGTH, len)
            .body(self.body_from(0)?);
        let response = self.repo.send_once(&self.action, &url, request).await?;
        check_committed(&self.action, &url, &digest, response).await?;
        Ok(Some(self.outcome(UploadAction::Uploaded, digest, Some(len))))
    }

    /// Everything from `offset` in one PATCH without `Content-Range`, as
    /// docker sends it. `None`: all sent, commit next.
    async fn patch_stream(&mut self, session: &mut Session, offset: u64) -> Result<Option<UploadOutcome>, Failure> {
        let url = session.location.clone();
        let mut request = self.repo.http().request(Method::PATCH, url.clone()).header(CONTENT_TYPE, OCTET_STREAM);
        if let Some(len) = self.source.size() {
            request = request.header(CONTENT_LENGTH, len.saturating_sub(offset));
        }
        let request = request.body(self.body_from(offset)?);
        let response = self.repo.send_once(&self.action, &url, request).await?;
        if !matches!(response.status(), StatusCode::ACCEPTED | StatusCode::CREATED | StatusCode::NO_CONTENT) {
            return Err(error_from(&self.action, &url, response).await.into());
        }
        session.location = next_location(&self.action, &url, &response)?;
        Ok(None)
    }

    /// PATCHes of `chunk` bytes with inclusive `Content-Range`, from
    /// `offset` to the end. `None`: all sent, commit next.
    async fn patch_chunks(
        &mut self,
        session: &mut Session,
        offset: &mut u64,
        chunk: u64,
    ) -> Result<Option<UploadOutcome>, Failure> {
        let at = *offset;
        let reuse = self.reader.as_mut().is_some_and(|reader| reader.seek(at));
        if !reuse {
            let stream = self.source.open(at).map_err(Failure::Source)?;
            self.reader = Some(Reader::new(stream, at));
        }
        loop {
            let reader = self.reader.as_mut().expect("opened above");
            let data = reader.read_chunk(chunk).await.map_err(Failure::Source)?;
            if data.is_empty() {
                return Ok(None);
            }
            let (start, len) = (*offset, data.len() as u64);
            let url = session.location.clone();
            let request = self
                .repo
                .http()
                .request(Method::PATCH, url.clone())
                .header(CONTENT_TYPE, OCTET_STREAM)
                .header("Content-Range", format!("{start}-{}", start + len - 1))
                .header(CONTENT_LENGTH, len)
                .body(data);
            self.sent.fetch_add(len, Ordering::Relaxed);
            let response = self.repo.send_once(&self.action, &url, request).await?;
            // ECR answers 201 where the spec says 202; some say 204.
            if !matches!(response.status(), StatusCode::ACCEPTED | StatusCode::CREATED | StatusCode::NO_CONTENT) {
                return Err(error_from(&self.action, &url, response).await.into());
            }
            // ECR's Range can lag behind what it stored; trust what was sent.
            let reported = header_str(&response, "Range").and_then(|r| parse_range_end(&r));
            if reported.is_some_and(|end| end + 1 != start + len) {
                tracing::debug!(
                    sent_to = start + len,
                    ?reported,
                    "the registry's Range disagrees; keeping count of bytes sent"
                );
            }
            session.location = next_location(&self.action, &url, &response)?;
            *offset = start + len;
            if len < chunk {
                return Ok(None);
            }
        }
    }

    /// The empty PUT with the whole blob's digest that closes the session.
    async fn commit(&mut self, session: &mut Session) -> Result<UploadOutcome, Failure> {
        let Some(digest) = self.source.digest() else {
            return Err(Failure::Registry(
                RegistryError::new(ErrorKind::Protocol, self.action.clone())
                    .with_detail("the blob's source did not tell its digest after it was read"),
            ));
        };
        let url = with_digest(&session.location, &digest);
        let request = self.repo.http().put(url.clone()).header(CONTENT_TYPE, OCTET_STREAM).header(CONTENT_LENGTH, 0);
        let response = self.repo.send_once(&self.action, &url, request).await?;
        check_committed(&self.action, &url, &digest, response).await?;
        Ok(self.outcome(UploadAction::Uploaded, digest, self.source.size()))
    }

    /// After a failed commit: the registry may have stored the blob and lost
    /// only its answer.
    async fn committed_anyway(&self) -> Option<UploadOutcome> {
        let digest = self.source.digest()?;
        let size = self.head(&digest).await.ok()??;
        Some(self.outcome(UploadAction::Uploaded, digest, Some(size)))
    }

    /// GET on the session: how many bytes the registry holds (`None` if the
    /// session is gone), and its newest `Location`.
    async fn status(&self, session: &mut Session) -> Result<Option<u64>, RegistryError> {
        let url = session.location.clone();
        let action = format!("ask how far the upload to {} got", self.repo.name());
        let response =
            self.repo.send_counted(&action, &url, self.repo.http().get(url.clone()), Some(&self.retries)).await?;
        match response.status() {
            StatusCode::NO_CONTENT | StatusCode::OK => {}
            // Unknown or invalidated sessions: distribution says 404, or 400
            // BLOB_UPLOAD_INVALID when a broken request left it inconsistent.
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => return Ok(None),
            _ => return Err(error_from(&action, &url, response).await),
        }
        let Some(range) = header_str(&response, "Range") else { return Ok(None) };
        if response.headers().contains_key(LOCATION) {
            session.location = next_location(&action, &url, &response)?;
        }
        // `0-0` is both "nothing" and "one byte" in distribution; a one-byte
        // head start is not worth the ambiguity.
        Ok(Some(parse_range_end(&range).map_or(0, |end| if end == 0 { 0 } else { end + 1 })))
    }

    async fn give_up(&self, session: Session, error: UploadError) -> UploadError {
        let url = session.location;
        let request = self.repo.http().delete(url.clone());
        match self.repo.send_once("cancel an upload", &url, request).await {
            Ok(response) => tracing::debug!(status = %response.status(), "cancelled the upload"),
            Err(error) => tracing::debug!(%error, "could not cancel the upload"),
        }
        error
    }
}

/// Half of `chunk`, unless that goes below what the registry or we accept.
fn shrink(chunk: u64, min_chunk: Option<u64>) -> Option<u64> {
    let floor = min_chunk.unwrap_or(0).max(MIN_CHUNK_SIZE);
    (chunk / 2 >= floor).then_some(chunk / 2)
}

async fn check_committed(
    action: &str,
    url: &Url,
    digest: &Digest,
    response: reqwest::Response,
) -> Result<(), RegistryError> {
    if !matches!(response.status(), StatusCode::CREATED | StatusCode::NO_CONTENT) {
        return Err(error_from(action, url, response).await);
    }
    if let Some(reported) = header_str(&response, DOCKER_CONTENT_DIGEST)
        && reported != digest.to_string()
    {
        return Err(RegistryError::new(ErrorKind::Protocol, action)
            .with_url(url)
            .with_detail(format!("the registry stored it as {reported}")));
    }
    Ok(())
}

fn session_from(action: &str, url: &Url, response: &reqwest::Response) -> Result<Session, RegistryError> {
    let min_chunk = header_str(response, "OCI-Chunk-Min-Length").and_then(|v| v.trim().parse().ok());
    Ok(Session { location: next_location(action, url, response)?, min_chunk })
}

/// The session's next URL, resolved against the request that returned it
/// (registries may answer with a relative or an absolute `Location`).
pub(crate) fn next_location(
    action: &str,
    request_url: &Url,
    response: &reqwest::Response,
) -> Result<Url, RegistryError> {
    let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        RegistryError::new(ErrorKind::Protocol, action)
            .with_url(request_url)
            .with_detail("the registry sent no Location header")
    })?;
    request_url.join(location).map_err(|e| {
        RegistryError::new(ErrorKind::Protocol, action)
            .with_url(request_url)
            .with_detail(format!("its Location header is not a URL: {e}"))
    })
}

/// The session URL with `digest=` added to whatever query it already has.
pub(crate) fn with_digest(location: &Url, digest: &Digest) -> Url {
    let mut url = location.clone();
    url.query_pairs_mut().append_pair("digest", &digest.to_string());
    url
}

/// `0-1023` or `bytes=0-1023` → 1023.
pub(crate) fn parse_range_end(range: &str) -> Option<u64> {
    let range = range.trim().trim_start_matches("bytes=");
    range.split_once('-')?.1.trim().parse().ok()
}

/// Reads a [`BlobStream`] in chunks, keeping the last chunk so that a resend
/// of it does not reopen the source.
struct Reader {
    /// In a mutex only to be `Sync` (upload futures hold `&Uploader` across
    /// awaits); always reached through `get_mut`, without locking.
    stream: Mutex<BlobStream>,
    /// Source offset of the next byte `read_chunk` returns.
    pos: u64,
    /// Bytes already taken from the stream but not yet returned.
    front: Bytes,
    /// The last chunk returned and its offset.
    last: Option<(u64, Bytes)>,
    ended: bool,
}

impl Reader {
    fn new(stream: BlobStream, pos: u64) -> Self {
        Self { stream: Mutex::new(stream), pos, front: Bytes::new(), last: None, ended: false }
    }

    /// Moves back to `offset` within the last chunk (or stays): false when
    /// the source must be reopened instead.
    fn seek(&mut self, offset: u64) -> bool {
        if offset == self.pos {
            return true;
        }
        let Some((start, last)) = &self.last else { return false };
        if offset < *start || offset > self.pos {
            return false;
        }
        let mut front = BytesMut::from(&last[(offset - start) as usize..]);
        front.extend_from_slice(&self.front);
        self.front = front.freeze();
        self.pos = offset;
        self.last = None;
        true
    }

    /// Up to `n` bytes; fewer only at the end of the blob.
    async fn read_chunk(&mut self, n: u64) -> io::Result<Bytes> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if self.front.len() >= n {
            // The source's own chunk holds it all: no copy.
            let out = self.front.split_to(n);
            self.last = Some((self.pos, out.clone()));
            self.pos += out.len() as u64;
            return Ok(out);
        }
        let mut out = BytesMut::with_capacity(n.min(64 * 1024 * 1024));
        loop {
            if !self.front.is_empty() {
                let take = (n - out.len()).min(self.front.len());
                out.extend_from_slice(&self.front.split_to(take));
            }
            if out.len() == n || self.ended {
                break;
            }
            let stream = self.stream.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
            match stream.next().await {
                Some(Ok(bytes)) => self.front = bytes,
                Some(Err(error)) => return Err(error),
                None => self.ended = true,
            }
        }
        let out = out.freeze();
        self.last = Some((self.pos, out.clone()));
        self.pos += out.len() as u64;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_joins_an_existing_query() {
        let digest = Digest::of(b"x");
        let bare = Url::parse("http://r/v2/a/blobs/uploads/1").unwrap();
        assert_eq!(with_digest(&bare, &digest).query(), Some(format!("digest=sha256%3A{}", digest.hex()).as_str()));
        let stateful = Url::parse("http://r/v2/a/blobs/uploads/1?_state=a%2Bb%3D&x=1").unwrap();
        assert_eq!(
            with_digest(&stateful, &digest).query(),
            Some(format!("_state=a%2Bb%3D&x=1&digest=sha256%3A{}", digest.hex()).as_str())
        );
    }

    #[test]
    fn range_headers_are_read_tolerantly() {
        assert_eq!(parse_range_end("0-1023"), Some(1023));
        assert_eq!(parse_range_end("bytes=0-1023"), Some(1023));
        assert_eq!(parse_range_end("garbage"), None);
    }

    #[test]
    fn chunks_halve_down_to_a_floor() {
        assert_eq!(shrink(8 << 20, None), Some(4 << 20));
        assert_eq!(shrink(MIN_CHUNK_SIZE, None), None);
        assert_eq!(shrink(8 << 20, Some(5 << 20)), None);
    }

    #[tokio::test]
    async fn the_reader_resends_its_last_chunk_without_reopening() {
        let source = BytesSource::new(Bytes::from_static(b"0123456789"));
        let mut reader = Reader::new(source.open(0).unwrap(), 0);
        assert_eq!(&reader.read_chunk(4).await.unwrap()[..], b"0123");
        assert_eq!(&reader.read_chunk(4).await.unwrap()[..], b"4567");
        assert!(reader.seek(5));
        assert_eq!(&reader.read_chunk(4).await.unwrap()[..], b"5678");
        assert!(!reader.seek(0), "before the last chunk: reopen");
        assert_eq!(&reader.read_chunk(4).await.unwrap()[..], b"9");
        assert!(reader.read_chunk(4).await.unwrap().is_empty());
    }
}

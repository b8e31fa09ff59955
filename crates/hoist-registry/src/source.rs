//! A blob in one repository as the source of an upload to another: what
//! lets a copy stream registry to registry with nothing staged.
//!
//! [`RegistryBlob::open`] streams a GET of the blob (`Range` from the offset
//! asked for) through the download loop of `fetch.rs`, so a broken source
//! connection resumes with `Range` on its own, and the bytes are hashed as
//! they pass. The last piece is held back until the whole blob has hashed
//! to its digest and has its descriptor's size: a blob that does not is an
//! error at the end of the stream, which the upload engine turns into a
//! cancelled session, so the destination never commits (nor, in one
//! monolithic PUT, even receives all of) bytes that were not verified.
//!
//! The upload engine reopens a source where the destination says the
//! upload stands. To verify the digest from there without reading the blob
//! from its start again, the hash state is kept every [`CHECKPOINT`] bytes;
//! a reopened stream fetches from the checkpoint at or below the offset,
//! hashes up to it without handing those bytes out, and goes on.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use hoist_oci::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::{BlobSink, BlobSource, BlobStream, DownloadError, ErrorKind, RegistryError, Repository};

/// How far apart hash states are kept: a reopened stream downloads at most
/// this much again.
const CHECKPOINT: u64 = 8 * 1024 * 1024;
/// Pieces (as the connection hands them over, up to a few hundred KiB) a
/// download may hold ahead of the upload reading it.
const AHEAD: usize = 8;

/// Told how many new bytes of the blob passed (never the same byte twice,
/// however often the upload reopens the source).
pub type ProgressFn = Box<dyn Fn(u64) + Send + Sync>;

/// A blob of a repository, readable from any offset: the [`BlobSource`] of
/// a registry-to-registry copy. Its repository handle decides the
/// credentials and token scopes of the GETs (a pull-only handle for a copy:
/// [`crate::Client::repository_for_pull`]).
pub struct RegistryBlob {
    repository: Repository,
    digest: Digest,
    size: u64,
    /// Hash states by offset, from every stream opened so far.
    checkpoints: Arc<Mutex<BTreeMap<u64, Sha256>>>,
    /// The furthest byte handed out, for progress.
    reached: Arc<AtomicU64>,
    progress: Option<Arc<ProgressFn>>,
    /// Why the last stream failed, as the download said it.
    failure: Arc<Mutex<Option<DownloadError>>>,
}

impl std::fmt::Debug for RegistryBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryBlob")
            .field("repository", &self.repository.name())
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl RegistryBlob {
    /// Blob `digest` of `repository`, whose descriptor says it has `size` bytes.
    pub fn new(repository: Repository, digest: Digest, size: u64) -> Self {
        Self {
            repository,
            digest,
            size,
            checkpoints: Arc::default(),
            reached: Arc::default(),
            progress: None,
            failure: Arc::default(),
        }
    }

    /// Calls `progress` with the number of new bytes each time some pass.
    #[must_use]
    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// Why the source failed, if it did: the download's own error (the
    /// source registry's, or bytes that are not the blob), which explains
    /// more than the upload's `UploadError::Source`.
    pub fn take_failure(&self) -> Option<DownloadError> {
        lock(&self.failure).take()
    }

    /// The kept hash state nearest at or below `offset` (the empty hash at 0).
    fn checkpoint(&self, offset: u64) -> Sha256 {
        lock(&self.checkpoints).range(..=offset).next_back().map(|(_, state)| state.clone()).unwrap_or_default()
    }
}

impl BlobSource for RegistryBlob {
    fn open(&self, offset: u64) -> io::Result<BlobStream> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let start = self.checkpoint(offset.min(self.size));
        let (sender, receiver) = mpsc::channel(AHEAD);
        let mut sink = Relay {
            sender,
            held: None,
            next: start.len(),
            hand_out_from: offset,
            reached: Arc::clone(&self.reached),
            progress: self.progress.clone(),
        };
        let (repository, digest, size) = (self.repository.clone(), self.digest.clone(), self.size);
        let (checkpoints, failure) = (Arc::clone(&self.checkpoints), Arc::clone(&self.failure));
        let task = runtime.spawn(async move {
            let mut last = start.len();
            let keep = |state: &Sha256| {
                if state.len() >= last + CHECKPOINT {
                    last = state.len();
                    lock(&checkpoints).insert(state.len(), state.clone());
                }
            };
            let result = repository.download_from(&digest, Some(size), start, &mut sink, keep).await;
            let outcome = match result {
                Ok(got) if got == size => Ok(()),
                // The digest matched but the descriptor's size did not: the
                // manifest naming it is wrong, and the upload would be cut short.
                Ok(got) => Err(DownloadError::Registry(
                    RegistryError::new(
                        ErrorKind::Mismatch,
                        format!("download blob {digest} from {}", repository.name()),
                    )
                    .with_detail(format!("it is {got} bytes, but the manifest naming it says {size}")),
                )),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => sink.release().await,
                Err(error) => {
                    let message = error.to_string();
                    lock(&failure).get_or_insert(error);
                    // The upload may have stopped reading; then nobody needs this.
                    let _ = sink.sender.send(Err(io::Error::other(message))).await;
                }
            }
        });
        let guard = AbortOnDrop(task);
        let stream = futures_util::stream::unfold((receiver, guard), |(mut receiver, guard)| async move {
            let item = receiver.recv().await?;
            Some((item, (receiver, guard)))
        });
        Ok(stream.boxed())
    }

    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn digest(&self) -> Option<Digest> {
        Some(self.digest.clone())
    }
}

/// Takes the download's pieces and passes them on one behind, so the last
/// goes out only once the whole blob is verified; drops what lies before
/// the offset the stream was opened at (hashed from a checkpoint below it).
struct Relay {
    sender: mpsc::Sender<io::Result<Bytes>>,
    /// The piece not passed on yet, and its offset in the blob.
    held: Option<(u64, Bytes)>,
    /// Blob offset of the next byte the download hands over.
    next: u64,
    hand_out_from: u64,
    reached: Arc<AtomicU64>,
    progress: Option<Arc<ProgressFn>>,
}

impl Relay {
    async fn pass(&mut self, offset: u64, bytes: Bytes) -> io::Result<()> {
        let end = offset + bytes.len() as u64;
        let reached = self.reached.fetch_max(end, Ordering::Relaxed);
        if let Some(progress) = &self.progress
            && end > reached
        {
            progress(end - reached);
        }
        self.sender.send(Ok(bytes)).await.map_err(|_| io::Error::other("the upload stopped reading"))
    }

    /// The held piece, once the blob is verified.
    async fn release(mut self) {
        if let Some((offset, last)) = self.held.take() {
            let _ = self.pass(offset, last).await;
        }
    }
}

impl BlobSink for Relay {
    async fn accept(&mut self, mut bytes: Bytes) -> io::Result<()> {
        if self.next < self.hand_out_from {
            // Hashed to come level with the offset asked for; not handed out.
            let skip = usize::try_from(self.hand_out_from - self.next).unwrap_or(usize::MAX).min(bytes.len());
            let _ = bytes.split_to(skip);
            self.next += skip as u64;
            if bytes.is_empty() {
                return Ok(());
            }
        }
        let offset = self.next;
        self.next += bytes.len() as u64;
        match self.held.replace((offset, bytes)) {
            Some((previous, piece)) => self.pass(previous, piece).await,
            None => Ok(()),
        }
    }
}

/// Stops the download when its stream is dropped (the upload gave up, or
/// the whole copy was stopped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

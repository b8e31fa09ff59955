use std::sync::Arc;

use hoist_oci::{Digest, Platform, Reference};
use hoist_registry::{RetryEvent, RetryObserver};

use crate::{BlobAction, Created};

/// Identifies a blob in progress events: the layer's diff_id (or the config
/// digest), which is known before any compressed digest is.
pub type BlobId = Digest;

/// Receives progress events from a push. Implemented once in the binary
/// (bars, plain lines or JSON); every method defaults to doing nothing.
/// Called from several threads at once.
pub trait Reporter: Send + Sync {
    /// The push is planned: `blobs` blobs of `bytes` (as read from the archive) in all.
    fn push_planned(&self, _blobs: usize, _bytes: u64) {}
    /// A blob starts; `size` is what will be read from the archive.
    fn blob_started(&self, _id: &BlobId, _repository: &str, _size: u64) {}
    /// `bytes` more of the blob were read and processed.
    fn blob_progress(&self, _id: &BlobId, _bytes: u64) {}
    /// The blob is in the repository.
    fn blob_finished(&self, _id: &BlobId, _action: BlobAction, _digest: &Digest) {}
    /// A push from a stream (standard input, a wrapped archive) has read
    /// `bytes` of it so far: 0 when reading starts, then as it goes, and
    /// once more with `finished` at its end. Its images and sizes are known
    /// only then, so until then this is the only progress; the blob events
    /// follow.
    fn stream_read(&self, _bytes: u64, _finished: bool) {}
    /// A manifest was put under `reference`.
    fn manifest_pushed(&self, _reference: &Reference, _digest: &Digest) {}
    /// A pull resolved `reference` to `digest`: the manifest for `platform`,
    /// or (`None`) the whole index.
    fn image_resolved(&self, _reference: &Reference, _digest: &Digest, _platform: Option<&Platform>) {}
    /// A pull is planned: `blobs` blobs of `bytes` to download. Each then
    /// comes as `download_started`, `blob_progress` (its id is its digest)
    /// and `download_finished`.
    fn pull_planned(&self, _blobs: usize, _bytes: u64) {}
    /// A blob of `size` bytes starts downloading from `repository`.
    fn download_started(&self, _digest: &Digest, _repository: &str, _size: u64) {}
    /// The blob is downloaded, checked and written.
    fn download_finished(&self, _digest: &Digest) {}
    /// A request or upload step failed and is tried again after
    /// `event.delay`. Comes from the registry client, so it names the
    /// request (`event.action`), not a [`BlobId`].
    fn retry(&self, _event: &RetryEvent) {}
    /// A destination's namespace was made before the push (a Harbor project,
    /// by the push's `Provision`).
    fn created(&self, _created: &Created) {}
    /// Something the user should know that changes nothing by itself: where
    /// a stream's layers are staged, a blob cache that was ignored, a
    /// learned layer that did not check out.
    fn warning(&self, _message: &str) {}
}

/// A registry-client retry observer that hands every retry to `reporter`:
/// put it in [`hoist_registry::ClientOptions::on_retry`] of the client given
/// to [`crate::push`].
pub fn retry_observer(reporter: &Arc<dyn Reporter>) -> RetryObserver {
    let reporter = Arc::clone(reporter);
    RetryObserver::new(move |event| reporter.retry(event))
}

/// A reporter that ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReporter;

impl Reporter for NoReporter {}

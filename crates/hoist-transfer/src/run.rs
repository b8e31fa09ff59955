//! What the caller of a push holds while it runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hoist_oci::Reference;
use hoist_registry::OpenUploads;

use crate::{Created, PushedImage, Reporter};

/// One push as its caller sees it while it runs: where its progress goes,
/// the upload sessions it holds open, and the references it has published.
///
/// A push can be stopped midway (a signal, a client that went away): call
/// [`PushRun::interrupt`], which makes a streamed archive's reads fail at
/// once (a seekable archive's layer reads run to their end), drop its
/// future, then [`PushRun::clean_up`] to cancel the upload sessions it
/// left open and delete its staging directory (dropping cannot send
/// requests, and a thread may still be writing there).
/// [`PushRun::published`] tells which tags moved before it stopped. A push
/// that fails on its own cleans up itself.
#[derive(Clone)]
pub struct PushRun {
    reporter: Arc<dyn Reporter>,
    uploads: OpenUploads,
    published: Arc<Mutex<Vec<PushedImage>>>,
    planned: Arc<Mutex<Vec<Reference>>>,
    created: Arc<Mutex<Vec<Created>>>,
    interrupted: Arc<AtomicBool>,
    staging: Arc<Mutex<Option<PathBuf>>>,
}

impl std::fmt::Debug for PushRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushRun").field("open_uploads", &self.uploads.len()).finish_non_exhaustive()
    }
}

impl PushRun {
    pub fn new(reporter: Arc<dyn Reporter>) -> Self {
        Self {
            reporter,
            uploads: OpenUploads::new(),
            published: Arc::default(),
            planned: Arc::default(),
            created: Arc::default(),
            interrupted: Arc::default(),
            staging: Arc::default(),
        }
    }

    pub fn reporter(&self) -> &Arc<dyn Reporter> {
        &self.reporter
    }

    /// The upload sessions open right now.
    pub fn uploads(&self) -> &OpenUploads {
        &self.uploads
    }

    /// Every reference published so far, in order.
    pub fn published(&self) -> Vec<PushedImage> {
        lock(&self.published).clone()
    }

    /// Every reference the push means to publish, once it knows them.
    pub fn planned(&self) -> Vec<Reference> {
        lock(&self.planned).clone()
    }

    /// What the push made before its first blob (Harbor projects, by its
    /// `Provision`), in order.
    pub fn created(&self) -> Vec<Created> {
        lock(&self.created).clone()
    }

    /// The planned references not published (yet).
    pub fn not_published(&self) -> Vec<Reference> {
        let published = self.published();
        self.planned().into_iter().filter(|r| !published.iter().any(|p| p.reference == *r)).collect()
    }

    /// Cancels every upload session the push left open.
    pub async fn cancel_uploads(&self) {
        self.uploads.cancel_all().await;
    }

    /// Asks the push to stop: its archive reads fail from now on.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
    }

    /// Whether `other` is a handle on this same push.
    pub fn same_as(&self, other: &PushRun) -> bool {
        Arc::ptr_eq(&self.interrupted, &other.interrupted)
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// After [`PushRun::interrupt`] and dropping the push: cancels its open
    /// upload sessions and deletes its staging directory.
    pub async fn clean_up(&self) {
        self.cancel_uploads().await;
        let staging = lock(&self.staging).take();
        if let Some(dir) = staging {
            // A reading thread may be finishing a file there: try a few times.
            for _ in 0..20 {
                match std::fs::remove_dir_all(&dir) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    _ => break,
                }
            }
        }
    }

    pub(crate) fn record_published(&self, image: PushedImage) {
        lock(&self.published).push(image);
    }

    pub(crate) fn record_planned(&self, references: impl IntoIterator<Item = Reference>) {
        *lock(&self.planned) = references.into_iter().collect();
    }

    pub(crate) fn record_created(&self, created: Created) {
        lock(&self.created).push(created);
    }

    pub(crate) fn record_staging(&self, dir: &Path) {
        *lock(&self.staging) = Some(dir.to_owned());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

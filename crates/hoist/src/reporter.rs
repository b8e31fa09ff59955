//! The binary's one implementation of the library's progress `Reporter`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hoist_oci::{Digest, Reference};
use hoist_transfer::{BlobAction, BlobId, Reporter};

/// Plain lines on stderr: one when a blob starts, one when it finishes, and
/// a progress line at most every few seconds for long blobs.
#[derive(Debug)]
pub(crate) struct StderrReporter {
    blobs: Mutex<HashMap<BlobId, BlobState>>,
}

#[derive(Debug)]
struct BlobState {
    size: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
}

const LINE_EVERY: Duration = Duration::from_secs(5);

impl StderrReporter {
    pub(crate) fn new() -> Self {
        Self { blobs: Mutex::new(HashMap::new()) }
    }
}

impl Reporter for StderrReporter {
    fn blob_started(&self, id: &BlobId, repository: &str, size: u64) {
        let now = Instant::now();
        self.blobs
            .lock()
            .expect("reporter lock")
            .insert(id.clone(), BlobState { size, done: 0, started: now, last_line: now });
        eprintln!("{}: pushing to {repository} ({})", id.short(), human_bytes(size));
    }

    fn blob_progress(&self, id: &BlobId, bytes: u64) {
        let mut blobs = self.blobs.lock().expect("reporter lock");
        if let Some(state) = blobs.get_mut(id) {
            state.done += bytes;
            if state.last_line.elapsed() >= LINE_EVERY && state.done < state.size {
                state.last_line = Instant::now();
                let percent = state.done * 100 / state.size.max(1);
                eprintln!("{}: {percent}% of {}", id.short(), human_bytes(state.size));
            }
        }
    }

    fn blob_finished(&self, id: &BlobId, action: BlobAction, digest: &Digest) {
        let state = self.blobs.lock().expect("reporter lock").remove(id);
        let took = state.map(|s| s.started.elapsed()).unwrap_or_default();
        eprintln!("{}: {} as {} in {:.1}s", id.short(), action.name(), digest.short(), took.as_secs_f64());
    }

    fn manifest_pushed(&self, reference: &Reference, digest: &Digest) {
        eprintln!("pushed {reference} ({})", digest.short());
    }
}

#[allow(clippy::cast_precision_loss)] // a display approximation
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

//! The binary's implementations of the library's progress `Reporter`:
//! terminal bars, plain periodic lines for logs, or NDJSON events.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_oci::{Digest, Platform, Reference};
use hoist_registry::RetryEvent;
use hoist_transfer::{BlobAction, BlobId, Created, NoReporter, Reporter};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::ProgressMode;

/// The reporter for `mode`; `auto` means bars on a terminal, plain lines otherwise.
pub(crate) fn for_mode(mode: ProgressMode, quiet: bool) -> Arc<dyn Reporter> {
    let mode = match mode {
        _ if quiet => ProgressMode::None,
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bars,
        ProgressMode::Auto => ProgressMode::Plain,
        other => other,
    };
    match mode {
        ProgressMode::Bars => Arc::new(BarsReporter::new()),
        ProgressMode::Plain | ProgressMode::Auto => Arc::new(PlainReporter::default()),
        ProgressMode::Json => Arc::new(JsonReporter::default()),
        ProgressMode::None if quiet => Arc::new(NoReporter),
        ProgressMode::None => Arc::new(WarningsOnly),
    }
}

/// `--progress none`: no progress, but warnings still reach the user.
struct WarningsOnly;

impl Reporter for WarningsOnly {
    fn created(&self, created: &Created) {
        eprintln!("{}", created_line(created));
    }

    fn warning(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}

/// `created project `team` on HOST (private)`.
fn created_line(created: &Created) -> String {
    format!("created {created}")
}

/// What `--output json` and the `created` event say of it.
fn created_value(created: &Created) -> serde_json::Value {
    serde_json::json!({
        "registry": created.registry,
        "kind": created.kind,
        "name": created.name,
        "public": created.public,
    })
}

/// The `created` list of `--output json`.
pub(crate) fn created_json(created: &[Created]) -> serde_json::Value {
    serde_json::Value::Array(created.iter().map(created_value).collect())
}

/// A retry as one line: what failed, why, and when it is tried again.
fn retry_line(event: &RetryEvent) -> String {
    format!(
        "retrying: {} failed ({}, attempt {}); trying again in {:.1}s",
        event.action,
        event.reason,
        event.attempt,
        event.delay.as_secs_f64()
    )
}

fn action_word(action: BlobAction) -> &'static str {
    match action {
        BlobAction::Uploaded => "uploaded",
        BlobAction::Existed => "already there",
        BlobAction::Mounted => "mounted",
    }
}

/// Bars on a terminal: one per blob in flight and a total.
struct BarsReporter {
    multi: MultiProgress,
    total: ProgressBar,
    bars: Mutex<HashMap<BlobId, ProgressBar>>,
    /// Finished bars stay on screen only while someone holds them.
    finished: Mutex<Vec<ProgressBar>>,
    /// How much of a pushed stream was read; made by its first event.
    stream: Mutex<Option<ProgressBar>>,
}

impl BarsReporter {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(ProgressBar::new(0));
        // Only a name until the push is planned: a stream's total is known at its end.
        total.set_style(ProgressStyle::with_template("{prefix:>12}").expect("static template"));
        total.set_prefix("total");
        Self {
            multi,
            total,
            bars: Mutex::new(HashMap::new()),
            finished: Mutex::new(Vec::new()),
            stream: Mutex::new(None),
        }
    }
}

impl Reporter for BarsReporter {
    fn push_planned(&self, _blobs: usize, bytes: u64) {
        if let Some(stream) = self.stream.lock().expect("reporter lock").as_ref() {
            stream.finish();
        }
        self.total.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        self.total.set_length(bytes);
        self.total.reset_elapsed();
    }

    fn stream_read(&self, bytes: u64, finished: bool) {
        let mut stream = self.stream.lock().expect("reporter lock");
        let bar = stream.get_or_insert_with(|| {
            // Its length is unknown: bytes and rate, no bar or eta.
            let bar = self.multi.insert_before(&self.total, ProgressBar::no_length());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12} {bytes} {binary_bytes_per_sec} {elapsed}")
                    .expect("static template"),
            );
            bar.set_prefix("read");
            bar
        });
        bar.set_position(bytes);
        if finished {
            bar.finish();
        }
    }

    fn blob_started(&self, id: &BlobId, _repository: &str, size: u64) {
        let bar = self.multi.insert_before(&self.total, ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(id.short().to_owned());
        self.bars.lock().expect("reporter lock").insert(id.clone(), bar);
    }

    fn blob_progress(&self, id: &BlobId, bytes: u64) {
        if let Some(bar) = self.bars.lock().expect("reporter lock").get(id) {
            bar.inc(bytes);
        }
        self.total.inc(bytes);
    }

    fn blob_finished(&self, id: &BlobId, action: BlobAction, digest: &Digest) {
        if let Some(bar) = self.bars.lock().expect("reporter lock").remove(id) {
            // No rate once done: a streamed push's blobs went up while the
            // stream was read, and only their commit is timed here.
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {total_bytes} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.finish_with_message(format!("{} as {}", action_word(action), digest.short()));
            self.finished.lock().expect("reporter lock").push(bar);
        }
    }

    fn manifest_pushed(&self, reference: &Reference, digest: &Digest) {
        self.multi.suspend(|| eprintln!("pushed {reference} ({})", digest.short()));
        self.total.finish();
    }

    fn retry(&self, event: &RetryEvent) {
        // Above the bars, which keep their place.
        self.multi.suspend(|| eprintln!("{}", retry_line(event)));
    }

    fn created(&self, created: &Created) {
        self.multi.suspend(|| eprintln!("{}", created_line(created)));
    }

    fn warning(&self, message: &str) {
        self.multi.suspend(|| eprintln!("warning: {message}"));
    }

    fn image_resolved(&self, reference: &Reference, digest: &Digest, platform: Option<&Platform>) {
        self.multi.suspend(|| eprintln!("{}", resolved_line(reference, digest, platform)));
    }

    fn pull_planned(&self, blobs: usize, bytes: u64) {
        self.push_planned(blobs, bytes);
    }

    fn download_started(&self, digest: &Digest, repository: &str, size: u64) {
        self.blob_started(digest, repository, size);
    }

    fn download_finished(&self, digest: &Digest) {
        if let Some(bar) = self.bars.lock().expect("reporter lock").remove(digest) {
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {total_bytes} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.finish_with_message("downloaded");
            self.finished.lock().expect("reporter lock").push(bar);
        }
    }
}

/// `REF: sha256:… (linux/amd64)`, or `(every platform)` for a whole index.
fn resolved_line(reference: &Reference, digest: &Digest, platform: Option<&Platform>) -> String {
    let platform = platform.map_or_else(|| "every platform".to_owned(), ToString::to_string);
    format!("{reference}: {digest} ({platform})")
}

/// Plain lines for logs and CI: a line per blob start and finish, and a total
/// line at most every few seconds.
#[derive(Default)]
struct PlainReporter {
    state: Mutex<PlainState>,
}

#[derive(Default)]
struct PlainState {
    total: u64,
    done: u64,
    started: Option<Instant>,
    last_line: Option<Instant>,
    /// When a pushed stream was first read from.
    stream_started: Option<Instant>,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Reporter for PlainReporter {
    fn push_planned(&self, blobs: usize, bytes: u64) {
        let mut state = self.state.lock().expect("reporter lock");
        state.total = bytes;
        state.started = Some(Instant::now());
        state.last_line = state.started;
        eprintln!("pushing {blobs} blobs, {}", human_bytes(bytes));
    }

    fn blob_started(&self, id: &BlobId, repository: &str, size: u64) {
        eprintln!("{}: pushing to {repository} ({})", id.short(), human_bytes(size));
    }

    fn stream_read(&self, bytes: u64, finished: bool) {
        let mut state = self.state.lock().expect("reporter lock");
        let now = Instant::now();
        let started = *state.stream_started.get_or_insert(now);
        let last = *state.last_line.get_or_insert(started);
        let elapsed = now - started;
        let rate = bytes.saturating_mul(1000) / u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX).max(1);
        if finished {
            state.last_line = Some(now);
            eprintln!(
                "read: {} of the stream in {:.1}s, {}/s",
                human_bytes(bytes),
                elapsed.as_secs_f64(),
                human_bytes(rate)
            );
        } else if now - last >= PLAIN_EVERY {
            state.last_line = Some(now);
            eprintln!("read: {} of the stream, {}/s", human_bytes(bytes), human_bytes(rate));
        }
    }

    fn blob_progress(&self, _id: &BlobId, bytes: u64) {
        let mut state = self.state.lock().expect("reporter lock");
        state.done += bytes;
        let now = Instant::now();
        if state.last_line.is_some_and(|last| now - last >= PLAIN_EVERY) && state.done < state.total {
            state.last_line = Some(now);
            let elapsed = state.started.map_or(Duration::ZERO, |s| now - s);
            let rate = state.done.saturating_mul(1000) / u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX).max(1);
            let eta = (state.total - state.done) / rate.max(1);
            eprintln!(
                "progress: {} of {} ({}%), {}/s, eta {eta}s",
                human_bytes(state.done),
                human_bytes(state.total),
                state.done * 100 / state.total.max(1),
                human_bytes(rate),
            );
        }
    }

    fn blob_finished(&self, id: &BlobId, action: BlobAction, digest: &Digest) {
        eprintln!("{}: {} as {}", id.short(), action_word(action), digest.short());
    }

    fn manifest_pushed(&self, reference: &Reference, digest: &Digest) {
        eprintln!("pushed {reference} ({})", digest.short());
    }

    fn retry(&self, event: &RetryEvent) {
        eprintln!("{}", retry_line(event));
    }

    fn created(&self, created: &Created) {
        eprintln!("{}", created_line(created));
    }

    fn warning(&self, message: &str) {
        eprintln!("warning: {message}");
    }

    fn image_resolved(&self, reference: &Reference, digest: &Digest, platform: Option<&Platform>) {
        eprintln!("{}", resolved_line(reference, digest, platform));
    }

    fn pull_planned(&self, blobs: usize, bytes: u64) {
        let mut state = self.state.lock().expect("reporter lock");
        state.total = bytes;
        state.started = Some(Instant::now());
        state.last_line = state.started;
        eprintln!("pulling {blobs} blobs, {}", human_bytes(bytes));
    }

    fn download_started(&self, digest: &Digest, repository: &str, size: u64) {
        eprintln!("{}: downloading from {repository} ({})", digest.short(), human_bytes(size));
    }

    fn download_finished(&self, digest: &Digest) {
        eprintln!("{}: downloaded", digest.short());
    }
}

/// Progress as JSON events, one object each: NDJSON on stderr for programs
/// to follow (`--progress json`), or a `hoist serve` page's event stream.
pub(crate) struct JsonReporter {
    progress: Mutex<HashMap<BlobId, (u64, u64, Instant)>>,
    /// When the last `read` event went out.
    last_read: Mutex<Option<Instant>>,
    /// At most one progress event per blob in this time.
    every: Duration,
    sink: Box<dyn Fn(&serde_json::Value) + Send + Sync>,
}

impl Default for JsonReporter {
    fn default() -> Self {
        Self::new(Duration::from_secs(1), emit)
    }
}

impl JsonReporter {
    pub(crate) fn new(every: Duration, sink: impl Fn(&serde_json::Value) + Send + Sync + 'static) -> Self {
        Self { progress: Mutex::default(), last_read: Mutex::default(), every, sink: Box::new(sink) }
    }

    fn emit(&self, event: &serde_json::Value) {
        (self.sink)(event);
    }
}

fn emit(event: &serde_json::Value) {
    let mut stderr = std::io::stderr().lock();
    let _ = serde_json::to_writer(&mut stderr, event);
    let _ = writeln!(stderr);
}

/// Writes the `error` event of `--progress json`.
pub(crate) fn emit_error(message: &str, hint: Option<&str>) {
    emit(&serde_json::json!({ "event": "error", "message": message, "hint": hint }));
}

impl Reporter for JsonReporter {
    fn push_planned(&self, blobs: usize, bytes: u64) {
        self.emit(&serde_json::json!({ "event": "plan", "blobs": blobs, "bytes": bytes }));
    }

    fn stream_read(&self, bytes: u64, finished: bool) {
        let mut last = self.last_read.lock().expect("reporter lock");
        if finished || last.is_none_or(|last| last.elapsed() >= self.every) {
            *last = Some(Instant::now());
            self.emit(&serde_json::json!({ "event": "read", "bytes": bytes, "finished": finished }));
        }
    }

    fn blob_started(&self, id: &BlobId, repository: &str, size: u64) {
        self.progress.lock().expect("reporter lock").insert(id.clone(), (0, size, Instant::now()));
        self.emit(&serde_json::json!({ "event": "start", "id": id, "repository": repository, "size": size }));
    }

    fn blob_progress(&self, id: &BlobId, bytes: u64) {
        let mut progress = self.progress.lock().expect("reporter lock");
        if let Some((done, size, last)) = progress.get_mut(id) {
            *done += bytes;
            if last.elapsed() >= self.every || *done >= *size {
                *last = Instant::now();
                self.emit(&serde_json::json!({ "event": "progress", "id": id, "bytes": *done, "size": *size }));
            }
        }
    }

    fn blob_finished(&self, id: &BlobId, action: BlobAction, digest: &Digest) {
        self.progress.lock().expect("reporter lock").remove(id);
        let event = match action {
            BlobAction::Uploaded => "done",
            BlobAction::Existed => "skipped",
            BlobAction::Mounted => "mounted",
        };
        self.emit(&serde_json::json!({ "event": event, "id": id, "digest": digest }));
    }

    fn manifest_pushed(&self, reference: &Reference, digest: &Digest) {
        self.emit(&serde_json::json!({ "event": "manifest", "reference": reference.to_string(), "digest": digest }));
    }

    fn retry(&self, event: &RetryEvent) {
        self.emit(&serde_json::json!({
            "event": "retry",
            "action": event.action,
            "attempt": event.attempt,
            "delay_ms": u64::try_from(event.delay.as_millis()).unwrap_or(u64::MAX),
            "reason": event.reason,
        }));
    }

    fn warning(&self, message: &str) {
        self.emit(&serde_json::json!({ "event": "warning", "message": message }));
    }

    fn created(&self, created: &Created) {
        let mut event = created_value(created);
        event["event"] = "created".into();
        self.emit(&event);
    }

    fn image_resolved(&self, reference: &Reference, digest: &Digest, platform: Option<&Platform>) {
        self.emit(&serde_json::json!({
            "event": "resolved",
            "reference": reference.to_string(),
            "digest": digest,
            "platform": platform.map(ToString::to_string),
        }));
    }

    fn pull_planned(&self, blobs: usize, bytes: u64) {
        self.push_planned(blobs, bytes);
    }

    fn download_started(&self, digest: &Digest, repository: &str, size: u64) {
        self.blob_started(digest, repository, size);
    }

    fn download_finished(&self, digest: &Digest) {
        self.progress.lock().expect("reporter lock").remove(digest);
        self.emit(&serde_json::json!({ "event": "downloaded", "id": digest, "digest": digest }));
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

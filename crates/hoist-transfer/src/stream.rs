//! Pushing an archive that can only be read once, front to back: standard
//! input, or a gzip-, zstd- or xz-wrapped file.
//!
//! [`read_stream`] makes the one pass. Each layer-like entry goes through the
//! same read → diff_id → encode → digest pipeline as a seekable push while
//! it streams by, into one of two holding places ([`Hold`]):
//!
//! - [`Hold::Session`]: an upload session in the first destination
//!   repository, left open (never committed) while the stream goes on;
//! - [`Hold::Stage`]: a file in a temporary staging directory, when the
//!   destinations are known only from the archive's RepoTags at its end.
//!
//! Only at the end are the images known (a classic `docker save` writes
//! `manifest.json` after the layers). The caller then plans where each goes
//! and calls [`StreamedPush::push`], which checks every chosen layer's
//! diff_id, commits only the sessions the chosen images use (cancelling the
//! rest), mounts or uploads into the other repositories, sends configs, and
//! puts manifests last. A failure before the manifests moves no tag.
//!
//! Memory stays bounded: one layer is in flight at a time, through one read
//! buffer, the encoder and a few 1 MiB chunks.

use std::collections::HashMap;
use std::error::Error;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hoist_archive::{ArchiveError, Image, LayerVisitor, StreamedArchive, StreamedBlob};
use hoist_oci::{Digest, Reference, Sha256};
use hoist_registry::{
    BlobSource, BlobStream, Client, PendingBlob, Repository, Staged, UploadAction, UploadError, UploadOptions,
    UploadOutcome,
};

use crate::cache::BlobCache;
use crate::pipeline::{self, ChunkSink, SentBlob};
use crate::push::{self, BlobAction, BlobReport, PushOptions, PushPlan, PushedImage, ReadyManifest, RepositoryGroup};
use crate::{PushError, PushRun, Reporter};

/// Where layers wait while the stream goes on.
#[derive(Clone, Debug)]
pub enum Hold {
    /// In open upload sessions in this repository (the first destination;
    /// every destination must be on its registry, so others can mount).
    Session(Reference),
    /// In files under a new temporary directory in `dir` (`None`: `$TMPDIR`).
    Stage(Option<PathBuf>),
}

/// One layer-like entry, as it came out of the pipeline.
#[derive(Debug)]
struct Made {
    diff_id: Digest,
    blob: SentBlob,
    /// Bytes stored in the archive (what progress counts).
    stored_size: u64,
    settings: String,
    /// The codec it was encoded with, or `stored`, for reports.
    compression: String,
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// An open session holding exactly the blob's bytes.
    Session(Box<PendingBlob>),
    Staged(PathBuf),
    /// Already in the held repository when its upload started (the digest
    /// was known by then, and the registry had the blob): nothing to hold.
    Placed(UploadOutcome),
    /// Already committed or cancelled.
    Gone,
}

/// What the pass made of each layer-like entry, by entry name.
#[derive(Debug, Default)]
struct HeldLayers {
    made: HashMap<String, Made>,
    /// Entries made so far, repeats included: names each staged file.
    entries: usize,
}

impl HeldLayers {
    /// Cancels every session still open. Staged files go with their directory.
    async fn abandon(&mut self) {
        for made in self.made.values_mut() {
            if let Held::Session(pending) = std::mem::replace(&mut made.held, Held::Gone) {
                pending.cancel().await;
            }
        }
    }
}

/// Passes the input through, telling the reporter how much was read.
struct ReadCounter {
    inner: Box<dyn Read + Send>,
    /// Reads fail once it is interrupted, so the pass stops.
    run: PushRun,
    reporter: Arc<dyn Reporter>,
    /// Shared with [`read_stream`], which reports the total at the end.
    read: Arc<AtomicU64>,
    /// `None` until the first read, which reports the start.
    reported: Option<u64>,
}

impl ReadCounter {
    /// Reports at most once per this many bytes.
    const EVERY: u64 = 1 << 20;
}

impl Read for ReadCounter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.run.is_interrupted() {
            return Err(io::Error::other("the push was interrupted"));
        }
        if self.reported.is_none() {
            self.reported = Some(0);
            self.reporter.stream_read(0, false);
        }
        let n = self.inner.read(buf)?;
        let read = self.read.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if self.reported.is_some_and(|reported| read - reported >= Self::EVERY) {
            self.reported = Some(read);
            self.reporter.stream_read(read, false);
        }
        Ok(n)
    }
}

/// A stream read to its end, its layers held, its images known.
#[derive(Debug)]
pub struct StreamedPush {
    archive: StreamedArchive,
    held: HeldLayers,
    /// The repository holding the upload sessions, and its `registry/repository`.
    session: Option<(Repository, String)>,
    /// Deleted, with every staged file, when this is dropped.
    _staging: Option<tempfile::TempDir>,
}

/// Reads `input` once, holding each layer-like entry as [`Hold`] says. `label`
/// names the input in messages (`-` for standard input).
pub async fn read_stream(
    input: Box<dyn Read + Send>,
    label: PathBuf,
    client: &Client,
    hold: Hold,
    options: &PushOptions,
    run: &PushRun,
) -> Result<StreamedPush, PushError> {
    let reporter = run.reporter();
    let read = Arc::new(AtomicU64::new(0));
    let input = Box::new(ReadCounter {
        inner: input,
        run: run.clone(),
        reporter: Arc::clone(reporter),
        read: Arc::clone(&read),
        reported: None,
    });
    let (target, staging, session) = match hold {
        Hold::Session(reference) => {
            let repo = client.repository(&reference);
            (Target::Session(repo.clone()), None, Some((repo, reference.location())))
        }
        Hold::Stage(dir) => {
            let mut builder = tempfile::Builder::new();
            builder.prefix("hoist-staging-");
            let staging = match dir {
                Some(dir) => builder.tempdir_in(dir),
                None => builder.tempdir(),
            }
            .map_err(|e| PushError::Staging(format!("cannot create a staging directory: {e}")))?;
            run.record_staging(staging.path());
            reporter.warning(&format!(
                "`{}` names its destinations only at its end: staging its layers in {} until then \
                 (deleted afterwards)",
                label.display(),
                staging.path().display()
            ));
            (Target::Stage(staging.path().to_owned()), Some(staging), None)
        }
    };
    let upload = UploadOptions {
        chunk_size: options.chunk_size,
        track: Some(run.uploads().clone()),
        ..UploadOptions::default()
    };
    let visitor = Visitor {
        handle: tokio::runtime::Handle::current(),
        target,
        options: options.clone(),
        upload,
        reporter: Arc::clone(reporter),
        label: label.display().to_string(),
        held: HeldLayers::default(),
        failure: None,
        staged_bytes: 0,
    };
    let joined = tokio::task::spawn_blocking(move || {
        let mut visitor = visitor;
        let result = hoist_archive::read_stream(input, &label, &mut visitor);
        (result, visitor)
    })
    .await
    .map_err(|e| PushError::Internal(format!("the stream reader failed: {e}")))?;
    let (result, mut visitor) = joined;
    reporter.stream_read(read.load(Ordering::Relaxed), true);
    if let Some(dir) = staging.as_ref().filter(|_| !visitor.held.made.is_empty()) {
        reporter.warning(&format!(
            "staged {} layer(s), {} bytes, in {}",
            visitor.held.made.len(),
            visitor.staged_bytes,
            dir.path().display()
        ));
    }
    let archive = match result {
        Ok(archive) => archive,
        Err(error) => {
            let error = match (visitor.failure.take(), error) {
                (Some(failure), ArchiveError::Visitor { .. }) => failure,
                (_, error) => error.into(),
            };
            visitor.held.abandon().await;
            return Err(error);
        }
    };
    Ok(StreamedPush { archive, held: visitor.held, session, _staging: staging })
}

impl StreamedPush {
    /// The images the stream held.
    pub fn images(&self) -> &[Image] {
        self.archive.images()
    }

    pub fn archive(&self) -> &StreamedArchive {
        &self.archive
    }

    /// Cancels every held session and deletes staged files, pushing nothing.
    pub async fn abandon(mut self) {
        self.held.abandon().await;
    }

    /// Pushes the planned images. Every chosen layer is checked against its
    /// diff_id first; only then are sessions committed (those the images
    /// use; the others are cancelled), and manifests go up last.
    pub async fn push(
        mut self,
        client: &Client,
        plans: &[PushPlan],
        options: &PushOptions,
        run: &PushRun,
    ) -> Result<Vec<PushedImage>, PushError> {
        run.record_planned(plans.iter().flat_map(|p| p.destinations.iter().cloned()));
        let result = self.push_inner(client, plans, options, run).await;
        // Whatever happened, nothing stays open; staged files go with `self`.
        self.held.abandon().await;
        if result.is_err() {
            run.cancel_uploads().await;
        }
        result
    }

    async fn push_inner(
        &mut self,
        client: &Client,
        plans: &[PushPlan],
        options: &PushOptions,
        run: &PushRun,
    ) -> Result<Vec<PushedImage>, PushError> {
        let reporter = run.reporter();
        let label = self.archive.label().display().to_string();
        // Every chosen layer, checked before anything is committed.
        let mut needed: Vec<String> = Vec::new();
        for plan in plans {
            let image = self
                .archive
                .images()
                .get(plan.image)
                .ok_or_else(|| PushError::Internal(format!("image {} is not in the archive", plan.image + 1)))?;
            for layer in &image.layers {
                let made = self.held.made.get(&layer.entry).ok_or_else(|| {
                    PushError::Archive(ArchiveError::BadEntry {
                        path: self.archive.label().to_owned(),
                        entry: layer.entry.clone(),
                        reason: "it does not look like a layer (neither tar, gzip nor zstd)".into(),
                    })
                })?;
                if made.diff_id != layer.diff_id {
                    return Err(PushError::DiffIdMismatch {
                        archive: label,
                        entry: layer.entry.clone(),
                        expected: layer.diff_id.clone(),
                        actual: made.diff_id.clone(),
                    });
                }
                if !needed.contains(&layer.entry) {
                    needed.push(layer.entry.clone());
                }
            }
        }
        reporter.push_planned(needed.len(), needed.iter().map(|e| self.held.made[e].stored_size).sum());
        let groups = push::group_by_repository(plans);
        // (`registry/repository`, digest) → what placing the blob there took.
        let mut done: HashMap<(String, Digest), BlobReport> = HashMap::new();
        // Every layer placed is recorded, committed sessions included, so a
        // later push of the same layers mounts them.
        let cache = push::open_cache(options, reporter).await;
        let mut placed = self.commit_sessions(&needed, options, &cache, reporter, &mut done).await;
        if placed.is_ok() {
            placed = self.place_layers(client, &groups, options, &cache, run, &mut done).await;
        }
        push::save_cache(Arc::clone(&cache), reporter).await;
        placed?;
        self.put_images(client, groups, options, run, &done).await
    }

    /// Puts every layer of `groups` into its repository, unless `done`
    /// says it is there: a HEAD, a mount from where it already is, or an
    /// upload from its staged file.
    async fn place_layers(
        &self,
        client: &Client,
        groups: &[(Reference, RepositoryGroup)],
        options: &PushOptions,
        cache: &BlobCache,
        run: &PushRun,
        done: &mut HashMap<(String, Digest), BlobReport>,
    ) -> Result<(), PushError> {
        let reporter = run.reporter();
        for (reference, images) in groups {
            let repo = client.repository(reference);
            let location = reference.location();
            let mut entries: Vec<&String> = Vec::new();
            for (image, _) in images {
                for layer in &self.archive.images()[*image].layers {
                    if !entries.contains(&&layer.entry) {
                        entries.push(&layer.entry);
                    }
                }
            }
            for entry in entries {
                let made = &self.held.made[entry];
                if done.contains_key(&(location.clone(), made.blob.digest.clone())) {
                    continue;
                }
                let holders: Vec<&String> =
                    done.keys().filter(|(_, digest)| *digest == made.blob.digest).map(|(at, _)| at).collect();
                let started = Instant::now();
                reporter.blob_started(&made.diff_id, repo.name(), made.stored_size);
                let source = HeldSource {
                    digest: made.blob.digest.clone(),
                    size: made.blob.size,
                    staged: match &made.held {
                        Held::Staged(path) => Some(path.clone()),
                        _ => None,
                    },
                };
                let upload = UploadOptions {
                    mount_from: push::mount_source(&location, holders),
                    chunk_size: options.chunk_size,
                    track: Some(run.uploads().clone()),
                    ..UploadOptions::default()
                };
                let outcome = repo.upload_blob(&source, &upload).await.map_err(|error| match error {
                    UploadError::Registry(error) => PushError::Registry(error),
                    UploadError::Source(error) => PushError::Staging(format!(
                        "layer `{entry}` could not be mounted into {location} and its bytes were not kept: \
                         {error}"
                    )),
                })?;
                let action = BlobAction::from(outcome.action);
                reporter.blob_progress(&made.diff_id, made.stored_size);
                reporter.blob_finished(&made.diff_id, action, &made.blob.digest);
                let compression = made.compression.clone();
                let report = push::report(&made.blob, action, options.format, compression, &outcome, started.elapsed());
                let (digest, size) = (&made.blob.digest, made.blob.size);
                cache.record(&made.diff_id, &made.settings, digest, size, &report.media_type, &location);
                done.insert((location.clone(), digest.clone()), report);
            }
        }
        Ok(())
    }

    /// Configs, then manifests: a tag moves only once every blob is in.
    async fn put_images(
        &self,
        client: &Client,
        groups: Vec<(Reference, RepositoryGroup)>,
        options: &PushOptions,
        run: &PushRun,
        done: &HashMap<(String, Digest), BlobReport>,
    ) -> Result<Vec<PushedImage>, PushError> {
        let mut ready: Vec<ReadyManifest> = Vec::new();
        for (reference, images) in groups {
            let repo = client.repository(&reference);
            let location = reference.location();
            for (image_index, tags) in images {
                let image = &self.archive.images()[image_index];
                let staged = push::stage_image(&repo, image, options.format, run, |layer| {
                    let digest = &self.held.made[&layer.entry].blob.digest;
                    done[&(location.clone(), digest.clone())].clone()
                });
                let (manifest, blobs) = staged.await?;
                ready.extend(tags.into_iter().map(|tag| (tag, manifest.clone(), blobs.clone())));
            }
        }
        push::put_manifests(client, ready, run).await
    }

    /// Commits the sessions (in the first planned repository) of `needed` entries (one per digest; none where
    /// the registry already has the blob) and cancels all others.
    async fn commit_sessions(
        &mut self,
        needed: &[String],
        options: &PushOptions,
        cache: &BlobCache,
        reporter: &Arc<dyn Reporter>,
        done: &mut HashMap<(String, Digest), BlobReport>,
    ) -> Result<(), PushError> {
        let Some((repo, location)) = self.session.clone() else { return Ok(()) };
        let mut names: Vec<String> = self.held.made.keys().cloned().collect();
        // Needed entries first, so a duplicate digest keeps a needed session.
        names.sort_by_key(|name| !needed.contains(name));
        for name in names {
            let made = self.held.made.get_mut(&name).expect("a known name");
            let held = match std::mem::replace(&mut made.held, Held::Gone) {
                Held::Session(pending) => Ok(pending),
                Held::Placed(outcome) => Err(outcome),
                other => {
                    made.held = other;
                    continue;
                }
            };
            let key = (location.clone(), made.blob.digest.clone());
            if !needed.contains(&name) || done.contains_key(&key) {
                if let Ok(pending) = held {
                    pending.cancel().await;
                }
                continue;
            }
            let started = Instant::now();
            reporter.blob_started(&made.diff_id, repo.name(), made.stored_size);
            let outcome = match held {
                Err(placed) => placed,
                // A cancelled session costs nothing; a second copy costs storage.
                Ok(pending) => match repo.blob_exists(&made.blob.digest).await? {
                    Some(size) => {
                        let outcome = UploadOutcome {
                            action: UploadAction::Existed,
                            digest: made.blob.digest.clone(),
                            size: Some(size),
                            bytes_sent: pending.bytes_sent(),
                            retries: pending.retries(),
                        };
                        pending.cancel().await;
                        outcome
                    }
                    None => pending.commit().await?,
                },
            };
            let action = BlobAction::from(outcome.action);
            reporter.blob_progress(&made.diff_id, made.stored_size);
            reporter.blob_finished(&made.diff_id, action, &made.blob.digest);
            let compression = made.compression.clone();
            let report = push::report(&made.blob, action, options.format, compression, &outcome, started.elapsed());
            let (digest, size) = (&made.blob.digest, made.blob.size);
            cache.record(&made.diff_id, &made.settings, digest, size, &report.media_type, &location);
            done.insert(key, report);
        }
        Ok(())
    }
}

/// What the visitor sends layers into.
enum Target {
    Session(Repository),
    Stage(PathBuf),
}

struct Visitor {
    handle: tokio::runtime::Handle,
    target: Target,
    options: PushOptions,
    /// How layers go into sessions.
    upload: UploadOptions,
    reporter: Arc<dyn Reporter>,
    /// The input's name in messages.
    label: String,
    held: HeldLayers,
    /// The error that stopped the pass, as the push reports it.
    failure: Option<PushError>,
    staged_bytes: u64,
}

impl LayerVisitor for Visitor {
    fn blob(&mut self, blob: &StreamedBlob<'_>, bytes: &mut dyn Read) -> Result<(), Box<dyn Error + Send + Sync>> {
        let result = match &self.target {
            Target::Session(repo) => self.send_to_session(&repo.clone(), blob, bytes),
            Target::Stage(dir) => self.stage_to_file(&dir.clone(), blob, bytes),
        };
        match result {
            Ok(made) => {
                self.held.entries += 1;
                // A name that comes again replaces the earlier entry (as tar
                // extracts): its session is let go now, so repeats hold none open.
                match self.held.made.insert(blob.name.to_owned(), made).map(|previous| previous.held) {
                    Some(Held::Session(pending)) => self.handle.block_on(pending.cancel()),
                    Some(Held::Staged(path)) => {
                        let _ = std::fs::remove_file(path);
                    }
                    Some(Held::Placed(_) | Held::Gone) | None => {}
                }
                Ok(())
            }
            Err(error) => {
                let message = error.to_string();
                self.failure = Some(error);
                Err(message.into())
            }
        }
    }
}

impl Visitor {
    fn read_error(&self, blob: &StreamedBlob<'_>, source: io::Error) -> PushError {
        PushError::LayerRead { archive: self.label.clone(), entry: blob.name.to_owned(), source }
    }

    /// Streams one entry through the pipeline into a new upload session,
    /// which is left open: the upload engine sends it in chunks, keeping the
    /// last two to resend, since the stream cannot be read again.
    fn send_to_session(
        &mut self,
        repo: &Repository,
        blob: &StreamedBlob<'_>,
        bytes: &mut dyn Read,
    ) -> Result<Made, PushError> {
        let encode = self.options.encoding_for_stored(blob.compression);
        let (tx, stream) = pipeline::body_channel();
        let source = Arc::new(OnePass::new(stream));
        let staging = {
            let (repo, source, upload) = (repo.clone(), Arc::clone(&source), self.upload.clone());
            self.handle.spawn(async move { repo.stage_blob(source.as_ref(), &upload).await })
        };
        let error_tx = tx.clone();
        let made = pipeline::transform(bytes, blob.compression, encode, ChunkSink::new(tx, 0)).and_then(
            |(diff_id, sink, suffix)| {
                sink.finish().map(|(digest, size)| (diff_id.or_output(&digest), digest, size, suffix))
            },
        );
        match &made {
            // Known before the body ends (`error_tx` holds it open), so the
            // engine has the digest when it sees the end.
            Ok((_, digest, size, _)) => source.finished(digest.clone(), *size),
            // Fail the request body, so the registry never sees a clean end.
            Err(error) if error.kind() != io::ErrorKind::BrokenPipe => {
                let _ = error_tx.blocking_send(Err(io::Error::other(error.to_string())));
            }
            Err(_) => {}
        }
        drop(error_tx);
        let staged =
            self.handle.block_on(staging).map_err(|e| PushError::Internal(format!("the upload task failed: {e}")))?;
        match (made, staged) {
            (Ok((diff_id, digest, size, suffix)), Ok(Staged::Pending(pending))) => {
                if pending.size() != size || *pending.digest() != digest {
                    let message = format!(
                        "the upload of layer `{}` holds {} bytes as {}, not {size} bytes as {digest}",
                        blob.name,
                        pending.size(),
                        pending.digest()
                    );
                    self.handle.block_on(pending.cancel());
                    return Err(PushError::Internal(message));
                }
                let sent = SentBlob::made(digest, size, suffix);
                Ok(self.made(blob, diff_id, sent, Held::Session(pending)))
            }
            // The layer was read to its end before the upload task first
            // looked (a small layer, a busy machine), and the repository
            // already had it.
            (Ok((diff_id, digest, size, suffix)), Ok(Staged::Placed(outcome))) if outcome.digest == digest => {
                Ok(self.made(blob, diff_id, SentBlob::made(digest, size, suffix), Held::Placed(outcome)))
            }
            (Ok(_), Ok(Staged::Placed(outcome))) => Err(PushError::Internal(format!(
                "layer `{}` was found as {}, not as what was read",
                blob.name, outcome.digest
            ))),
            // The engine saw the failed body and cancelled the session.
            (Err(error), Err(UploadError::Registry(registry))) if error.kind() == io::ErrorKind::BrokenPipe => {
                Err(registry.into())
            }
            (Err(error), _) => Err(self.read_error(blob, error)),
            (Ok(_), Err(UploadError::Registry(error))) => Err(error.into()),
            (Ok(_), Err(UploadError::Source(error))) => {
                Err(PushError::Internal(format!("the upload of layer `{}` could not read it: {error}", blob.name)))
            }
        }
    }

    /// What `blob` became, with the settings it was made with.
    fn made(&self, blob: &StreamedBlob<'_>, diff_id: Digest, sent: SentBlob, held: Held) -> Made {
        Made {
            diff_id,
            blob: sent,
            stored_size: blob.size,
            settings: self.options.settings_for_stored(blob.compression),
            compression: self.options.compression_name_for_stored(blob.compression),
            held,
        }
    }

    /// Streams one entry through the pipeline into a staging file.
    fn stage_to_file(&mut self, dir: &Path, blob: &StreamedBlob<'_>, bytes: &mut dyn Read) -> Result<Made, PushError> {
        let encode = self.options.encoding_for_stored(blob.compression);
        let path = dir.join(format!("layer-{}", self.held.entries + 1));
        let staging = |e: io::Error| PushError::Staging(format!("cannot write {}: {e}", path.display()));
        let file = File::create(&path).map_err(staging)?;
        let sink = HashingWriter { inner: BufWriter::with_capacity(1024 * 1024, file), hasher: Sha256::new() };
        let (diff_id, sink, suffix) = pipeline::transform(bytes, blob.compression, encode, sink)
            .map_err(|e| if e.kind() == io::ErrorKind::StorageFull { staging(e) } else { self.read_error(blob, e) })?;
        let size = sink.hasher.len();
        let digest = sink.hasher.finish();
        let diff_id = diff_id.or_output(&digest);
        sink.inner.into_inner().map_err(|e| staging(e.into_error()))?.sync_data().map_err(staging)?;
        self.staged_bytes += size;
        self.reporter.warning(&format!("staged layer `{}` as {} ({size} bytes)", blob.name, path.display()));
        Ok(self.made(blob, diff_id, SentBlob::made(digest, size, suffix), Held::Staged(path)))
    }
}

/// Hashes what it writes on its way to `inner`.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A held blob with a known digest: its staged file, or (session mode)
/// nothing to read, so only a HEAD or a mount can place it.
struct HeldSource {
    digest: Digest,
    size: u64,
    staged: Option<PathBuf>,
}

impl BlobSource for HeldSource {
    fn open(&self, offset: u64) -> io::Result<BlobStream> {
        let Some(path) = self.staged.clone() else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "streamed layers are kept only in the first repository",
            ));
        };
        let mut file = File::open(&path)?;
        file.seek(SeekFrom::Start(offset))?;
        let (tx, stream) = pipeline::body_channel();
        tokio::task::spawn_blocking(move || {
            loop {
                let chunk = match pipeline::read_chunk(&mut file) {
                    Ok(Some(chunk)) => Ok(chunk),
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                if tx.blocking_send(chunk).is_err() || failed {
                    return;
                }
            }
        });
        Ok(stream)
    }

    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn digest(&self) -> Option<Digest> {
        Some(self.digest.clone())
    }
}

/// A layer's bytes as the pipeline makes them, readable once: the upload
/// engine sends it in chunks and keeps the last two to resend. Its digest
/// and size are known once the pipeline has finished.
struct OnePass {
    stream: Mutex<Option<BlobStream>>,
    made: Mutex<Option<(Digest, u64)>>,
}

impl OnePass {
    fn new(stream: BlobStream) -> Self {
        Self { stream: Mutex::new(Some(stream)), made: Mutex::new(None) }
    }

    fn finished(&self, digest: Digest, size: u64) {
        *self.made.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((digest, size));
    }

    fn made(&self) -> Option<(Digest, u64)> {
        self.made.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl BlobSource for OnePass {
    fn open(&self, offset: u64) -> io::Result<BlobStream> {
        let stream = self.stream.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match stream {
            Some(stream) if offset == 0 => Ok(stream),
            _ => Err(io::Error::other("a streamed layer can be read only once")),
        }
    }

    fn size(&self) -> Option<u64> {
        self.made().map(|(_, size)| size)
    }

    fn digest(&self) -> Option<Digest> {
        self.made().map(|(digest, _)| digest)
    }

    fn reopenable(&self) -> bool {
        false
    }
}

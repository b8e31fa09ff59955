use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hoist_archive::{Archive, Compression, Image, Layer};
use hoist_codec::Codec;
use hoist_oci::{Descriptor, Digest, ManifestBuilder, ManifestFormat, RawBlob, Reference, media_type};
use hoist_registry::{BytesSource, Client, Repository, UploadAction, UploadError, UploadOptions, UploadOutcome};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cache::BlobCache;
use crate::learn;
use crate::pipeline::{self, SentBlob};
use crate::{PushError, PushRun, Reporter};

/// How to push.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Layers processed at once (each on its own thread and connection).
    pub jobs: usize,
    pub format: ManifestFormat,
    /// What layers stored uncompressed in the archive become.
    pub compression: Codec,
    /// Re-encode layers the archive stores compressed, too, instead of
    /// sending them as they are.
    pub recompress: bool,
    /// Where the blob cache lives; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// Upload layers in chunks of this many bytes instead of one streamed request.
    pub chunk_size: Option<u64>,
}

impl PushOptions {
    /// Refuses options no push can honour: zstd layers in a Docker manifest,
    /// which has no zstd layer type (no client would read the image).
    pub fn validate(&self) -> Result<(), PushError> {
        if self.format == ManifestFormat::Docker && self.compression.media_type_suffix() == Some("zstd") {
            return Err(PushError::plan(
                "zstd layers exist only in OCI images, and the manifest format is docker",
                "push with the OCI format (`--format oci`), or compress with gzip",
            ));
        }
        Ok(())
    }
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            jobs: 2,
            format: ManifestFormat::Docker,
            compression: Codec::default(),
            recompress: false,
            cache_dir: None,
            chunk_size: None,
        }
    }
}

impl PushOptions {
    /// The codec `layer` is re-encoded with, or `None` to send it as stored.
    /// Docker manifests have no zstd layer type, so a Docker push re-encodes
    /// stored zstd layers rather than write a manifest no client can read.
    fn encoding_for(&self, layer: &Layer) -> Option<Codec> {
        self.encoding_for_stored(layer.compression)
    }

    /// The codec bytes stored with `compression` are re-encoded with.
    pub(crate) fn encoding_for_stored(&self, compression: Compression) -> Option<Codec> {
        let docker_cannot_name = compression == Compression::Zstd && self.format == ManifestFormat::Docker;
        (compression == Compression::None || self.recompress || docker_cannot_name).then_some(self.compression)
    }

    /// What decides the bytes a layer becomes: the cache key's second half.
    fn compression_settings(&self, layer: &Layer) -> String {
        self.settings_for_stored(layer.compression)
    }

    /// How the blob is described in reports: the codec, or `stored`.
    pub(crate) fn compression_name_for_stored(&self, compression: Compression) -> String {
        self.encoding_for_stored(compression).map_or_else(|| STORED.to_owned(), |codec| codec.to_string())
    }

    pub(crate) fn settings_for_stored(&self, compression: Compression) -> String {
        match self.encoding_for_stored(compression) {
            Some(codec) => codec.settings_key(),
            None => format!("stored:{}", compression.name()),
        }
    }

    /// The compression suffix of the blob `layer` becomes (`gzip`, `zstd`,
    /// or `None` for a plain tar).
    fn blob_suffix(&self, layer: &Layer) -> Option<&'static str> {
        match self.encoding_for(layer) {
            Some(codec) => codec.media_type_suffix(),
            None => pipeline::stored_suffix(layer.compression),
        }
    }
}

/// Where one image of the archive goes.
#[derive(Clone, Debug)]
pub struct PushPlan {
    /// Index into [`Archive::images`].
    pub image: usize,
    pub destinations: Vec<Reference>,
}

/// What happened to one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobAction {
    Uploaded,
    Existed,
    /// Linked from another repository of the same registry.
    Mounted,
}

impl From<UploadAction> for BlobAction {
    fn from(action: UploadAction) -> Self {
        match action {
            UploadAction::Existed => Self::Existed,
            UploadAction::Mounted => Self::Mounted,
            UploadAction::Uploaded => Self::Uploaded,
        }
    }
}

impl BlobAction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Uploaded => "uploaded",
            Self::Existed => "existed",
            Self::Mounted => "mounted",
        }
    }
}

#[derive(Clone, Debug)]
pub struct BlobReport {
    pub digest: Digest,
    /// Bytes as stored in the registry (compressed).
    pub size: u64,
    pub media_type: String,
    pub action: BlobAction,
    /// Wall time from the blob's start to its commit (or existence check).
    pub elapsed: Duration,
    /// What the bytes are: the codec this push encoded the layer with
    /// (`gzip:1`, `zstd:3`, `none`), or `stored` when sent as the archive
    /// holds it (configs too).
    pub compression: String,
    /// Bytes handed to the network for it, resends included; 0 when it
    /// existed or was mounted.
    pub bytes_sent: u64,
    /// Requests retried and upload recoveries (resumes, restarts).
    pub retries: u32,
}

/// [`BlobReport::compression`] of a blob sent as the archive holds it.
pub(crate) const STORED: &str = "stored";

/// One reference that now points at a pushed image.
#[derive(Clone, Debug)]
pub struct PushedImage {
    /// The destination as given, e.g. `host/app:1`.
    pub reference: Reference,
    pub digest: Digest,
    pub blobs: Vec<BlobReport>,
}

/// Pushes every planned image to every destination. Blobs go to all
/// destinations first; manifests are put only once every blob everywhere is
/// committed, so an error before that leaves every tag where it was. Each
/// reference published is recorded in `run` as it goes.
pub async fn push(
    archive: Arc<Archive>,
    client: &Client,
    plans: &[PushPlan],
    options: &PushOptions,
    run: &PushRun,
) -> Result<Vec<PushedImage>, PushError> {
    let reporter = run.reporter();
    run.record_planned(plans.iter().flat_map(|p| p.destinations.iter().cloned()));
    let jobs = Arc::new(Semaphore::new(options.jobs.max(1)));
    let groups = group_by_repository(plans);
    let (blob_count, byte_count) = planned_work(&archive, &groups);
    reporter.push_planned(blob_count, byte_count);
    let cache = open_cache(options, reporter).await;
    let result = push_all(&archive, client, groups, options, &jobs, &cache, run).await;
    save_cache(cache, reporter).await;
    if result.is_err() {
        // Layers still in flight when another failed left their sessions open.
        run.cancel_uploads().await;
    }
    result
}

/// The blob cache `options` name (or a disabled one), its warnings told.
/// Read off the async workers: it is a file of up to 64 MiB.
pub(crate) async fn open_cache(options: &PushOptions, reporter: &Arc<dyn Reporter>) -> Arc<BlobCache> {
    let dir = options.cache_dir.clone();
    let cache = tokio::task::spawn_blocking(move || dir.as_deref().map_or_else(BlobCache::disabled, BlobCache::open))
        .await
        .unwrap_or_else(|_| BlobCache::disabled());
    for warning in cache.take_warnings() {
        reporter.warning(&warning);
    }
    Arc::new(cache)
}

/// Saves the cache off the async workers: it may wait for another
/// process's lock (up to `cache::LOCK_WAIT`).
pub(crate) async fn save_cache(cache: Arc<BlobCache>, reporter: &Arc<dyn Reporter>) {
    let told = Arc::clone(reporter);
    let saved = tokio::task::spawn_blocking(move || cache.save(&|waiting| told.warning(waiting))).await;
    match saved {
        Ok(Ok(())) => {}
        Ok(Err(error)) => reporter.warning(&format!("could not save the blob cache: {error}")),
        Err(error) => reporter.warning(&format!("could not save the blob cache: {error}")),
    }
}

async fn push_all(
    archive: &Arc<Archive>,
    client: &Client,
    groups: Vec<(Reference, RepositoryGroup)>,
    options: &PushOptions,
    jobs: &Arc<Semaphore>,
    cache: &Arc<BlobCache>,
    run: &PushRun,
) -> Result<Vec<PushedImage>, PushError> {
    // diff_id → what that layer became, so later repositories HEAD before compressing again.
    let mut sent: HashMap<Digest, SentBlob> = HashMap::new();
    let mut ready: Vec<ReadyManifest> = Vec::new();

    for (repository, images) in groups {
        let repo = client.repository(&repository);
        let location = repository.location();
        let learned = if every_layer_known(archive, &images, &sent, cache, options) {
            HashMap::new()
        } else {
            let tags: Vec<&Reference> = images.iter().flat_map(|(_, tags)| tags).collect();
            learn::from_destination(&repo, &tags, options.format).await
        };
        let context = LayerContext { repo: &repo, location: &location, options, jobs, cache, learned: &learned, run };
        let layer_reports = push_layers(archive, &images, &mut sent, &context).await?;
        for (image_index, tags) in images {
            let image = &archive.images()[image_index];
            let staged = stage_image(&repo, image, options.format, run, |layer| layer_reports[&layer.diff_id].clone());
            let (manifest, blobs) = staged.await?;
            ready.extend(tags.into_iter().map(|tag| (tag, manifest.clone(), blobs.clone())));
        }
    }
    put_manifests(client, ready, run).await
}

/// A manifest to put under one tag, with the blobs it names.
pub(crate) type ReadyManifest = (Reference, RawBlob, Vec<BlobReport>);

/// Puts `image`'s config and builds its manifest, each layer described by
/// what `layer_report` says it became in this repository.
pub(crate) async fn stage_image(
    repo: &Repository,
    image: &Image,
    format: ManifestFormat,
    run: &PushRun,
    layer_report: impl Fn(&Layer) -> BlobReport,
) -> Result<(RawBlob, Vec<BlobReport>), PushError> {
    let config = RawBlob {
        media_type: format.config_media_type().to_owned(),
        digest: image.config.digest.clone(),
        bytes: image.config.bytes.clone(),
    };
    let mut blobs = vec![push_config(repo, &config, run).await?];
    let mut manifest = ManifestBuilder::new(format, config.descriptor());
    for layer in &image.layers {
        let report = layer_report(layer);
        manifest = manifest.layer(Descriptor {
            media_type: report.media_type.clone(),
            digest: report.digest.clone(),
            size: report.size,
        });
        blobs.push(report);
    }
    Ok((manifest.build(), blobs))
}

/// Puts every manifest: the last step, once every blob of every image is in,
/// so that a failure before it leaves every tag where it was. Each tag is
/// put on its own; one that fails does not stop the others, and the error
/// names every reference that was not published.
pub(crate) async fn put_manifests(
    client: &Client,
    ready: Vec<ReadyManifest>,
    run: &PushRun,
) -> Result<Vec<PushedImage>, PushError> {
    let mut pushed = Vec::with_capacity(ready.len());
    let mut failed: Vec<(Reference, PushError)> = Vec::new();
    for (reference, manifest, blobs) in ready {
        let repo = client.repository(&reference);
        match repo.put_manifest(&reference.tag_or_digest(), &manifest).await {
            Ok(digest) => {
                run.reporter().manifest_pushed(&reference, &digest);
                let image = PushedImage { reference, digest, blobs };
                run.record_published(image.clone());
                pushed.push(image);
            }
            Err(error) => failed.push((reference, error.into())),
        }
    }
    let mut failed = failed.into_iter();
    match failed.next() {
        None => Ok(pushed),
        Some((reference, first)) => {
            let mut references = vec![reference];
            references.extend(failed.map(|(reference, _)| reference));
            Err(PushError::NotPublished { references, cause: Box::new(first) })
        }
    }
}

/// How many blobs and archive bytes `groups` will process: each distinct
/// layer and config once per repository.
fn planned_work(archive: &Archive, groups: &[(Reference, RepositoryGroup)]) -> (usize, u64) {
    let (mut blobs, mut bytes) = (0, 0);
    for (_, images) in groups {
        let mut seen: Vec<&Digest> = Vec::new();
        for (image, _) in images {
            let image = &archive.images()[*image];
            for layer in &image.layers {
                if !seen.contains(&&layer.diff_id) {
                    seen.push(&layer.diff_id);
                    blobs += 1;
                    bytes += layer.size;
                }
            }
            if !seen.contains(&&image.config.digest) {
                seen.push(&image.config.digest);
                blobs += 1;
                bytes += image.config.size();
            }
        }
    }
    (blobs, bytes)
}

/// Images bound for one repository, each with its references there.
pub(crate) type RepositoryGroup = Vec<(usize, Vec<Reference>)>;

/// Destinations grouped by repository, in first-seen order.
pub(crate) fn group_by_repository(plans: &[PushPlan]) -> Vec<(Reference, RepositoryGroup)> {
    let mut groups: Vec<(Reference, RepositoryGroup)> = Vec::new();
    for plan in plans {
        for destination in &plan.destinations {
            let position = groups.iter().position(|(r, _)| {
                r.registry() == destination.registry() && r.repository() == destination.repository()
            });
            let group = match position {
                Some(i) => &mut groups[i].1,
                None => {
                    groups.push((destination.clone(), Vec::new()));
                    &mut groups.last_mut().expect("just pushed").1
                }
            };
            match group.iter_mut().find(|(image, _)| *image == plan.image) {
                Some((_, references)) => references.push(destination.clone()),
                None => group.push((plan.image, vec![destination.clone()])),
            }
        }
    }
    groups
}

/// What every layer push into one repository shares.
struct LayerContext<'a> {
    repo: &'a Repository,
    /// `registry/repository`, as the cache records it.
    location: &'a str,
    options: &'a PushOptions,
    jobs: &'a Arc<Semaphore>,
    cache: &'a Arc<BlobCache>,
    /// What the destination's existing tags claim the layers became:
    /// candidates, proven before use.
    learned: &'a HashMap<Digest, SentBlob>,
    run: &'a PushRun,
}

/// True when every layer's result is known from this run or the cache, so
/// asking the destination would teach nothing.
fn every_layer_known(
    archive: &Archive,
    images: &RepositoryGroup,
    sent: &HashMap<Digest, SentBlob>,
    cache: &BlobCache,
    options: &PushOptions,
) -> bool {
    images.iter().flat_map(|(image, _)| &archive.images()[*image].layers).all(|layer| {
        sent.contains_key(&layer.diff_id)
            || cache.lookup(&layer.diff_id, &options.compression_settings(layer)).is_some()
    })
}

/// Sends every distinct layer of `images` to the repository, `jobs` at a time.
async fn push_layers(
    archive: &Arc<Archive>,
    images: &[(usize, Vec<Reference>)],
    sent: &mut HashMap<Digest, SentBlob>,
    context: &LayerContext<'_>,
) -> Result<HashMap<Digest, BlobReport>, PushError> {
    let LayerContext { repo, location, options, jobs, cache, learned, run } = context;
    let mut layers: Vec<Layer> = Vec::new();
    for (image, _) in images {
        for layer in &archive.images()[*image].layers {
            if !layers.iter().any(|l| l.diff_id == layer.diff_id) {
                layers.push(layer.clone());
            }
        }
    }
    let mut tasks = JoinSet::new();
    for layer in layers {
        let settings = options.compression_settings(&layer);
        let cached = cache.lookup(&layer.diff_id, &settings);
        let mut seen_at: Vec<String> = cached.as_ref().map(|c| c.seen.iter().cloned().collect()).unwrap_or_default();
        if let Some(at) = sent.get(&layer.diff_id).and_then(|blob| blob.sent_to.clone()) {
            seen_at.insert(0, at);
        }
        let known = match (sent.get(&layer.diff_id), cached) {
            (Some(blob), _) => Some(Known::Sent(blob.clone())),
            (None, Some(c)) => Some(Known::Cached(SentBlob::from_cached(&c.digest, c.size, &c.media_type))),
            // A learned blob counts only if it is what this push would make, and proven.
            (None, None) => learned
                .get(&layer.diff_id)
                .filter(|blob| blob.suffix() == options.blob_suffix(&layer))
                .map(|blob| Known::Learned(blob.clone())),
        };
        let upload = UploadOptions {
            mount_from: mount_source(location, &seen_at),
            chunk_size: options.chunk_size,
            track: Some(run.uploads().clone()),
            ..UploadOptions::default()
        };
        let (cache, location) = (Arc::clone(cache), (*location).to_owned());
        let (archive, repo, jobs, reporter) =
            (Arc::clone(archive), Repository::clone(repo), Arc::clone(jobs), Arc::clone(run.reporter()));
        let (format, encode) = (options.format, options.encoding_for(&layer));
        tasks.spawn(async move {
            let _permit = jobs.acquire_owned().await.expect("the semaphore is never closed");
            let diff_id = layer.diff_id.clone();
            let started = Instant::now();
            let task = LayerTask { archive, repo: &repo, layer, upload, encode, reporter: &reporter };
            let result = task.push(known, &cache, &settings).await;
            let result = result.map(|(mut blob, action, outcome)| {
                blob.sent_to = Some(location.clone());
                let compression = encode.map_or_else(|| STORED.to_owned(), |codec| codec.to_string());
                let report = report(&blob, action, format, compression, &outcome, started.elapsed());
                cache.record(&diff_id, &settings, &blob.digest, blob.size, &report.media_type, &location);
                (blob, report)
            });
            (diff_id, result)
        });
    }
    let mut reports = HashMap::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (diff_id, result) = match joined {
            Ok(done) => done,
            Err(aborted) if aborted.is_cancelled() => continue,
            Err(panicked) => {
                first_error.get_or_insert(PushError::Internal(format!("a layer task failed: {panicked}")));
                continue;
            }
        };
        match result {
            Ok((blob, report)) => {
                sent.insert(diff_id.clone(), blob);
                reports.insert(diff_id, report);
            }
            Err(error) => {
                first_error.get_or_insert(error);
                tasks.abort_all();
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(reports),
    }
}

/// What a layer is believed to become, and why.
#[derive(Clone, Debug)]
enum Known {
    /// This run made it for another repository.
    Sent(SentBlob),
    /// The blob cache says so; the registry can contradict it.
    Cached(SentBlob),
    /// A tag at the destination claims so; used only once proven.
    Learned(SentBlob),
}

/// Uploads an image's config (HEAD first) and reports it like any blob.
pub(crate) async fn push_config(repo: &Repository, config: &RawBlob, run: &PushRun) -> Result<BlobReport, PushError> {
    let reporter = run.reporter();
    let started = Instant::now();
    reporter.blob_started(&config.digest, repo.name(), config.size());
    let source = BytesSource::new(Bytes::from(config.bytes.clone()));
    let options = UploadOptions { track: Some(run.uploads().clone()), ..UploadOptions::default() };
    let outcome = repo.upload_blob(&source, &options).await.map_err(|error| match error {
        UploadError::Registry(error) => PushError::from(error),
        UploadError::Source(error) => PushError::Internal(format!("reading the config from memory: {error}")),
    })?;
    let action = BlobAction::from(outcome.action);
    reporter.blob_progress(&config.digest, config.size());
    reporter.blob_finished(&config.digest, action, &config.digest);
    Ok(BlobReport {
        digest: config.digest.clone(),
        size: config.size(),
        media_type: config.media_type.clone(),
        action,
        elapsed: started.elapsed(),
        compression: STORED.to_owned(),
        bytes_sent: outcome.bytes_sent,
        retries: outcome.retries,
    })
}

pub(crate) fn report(
    blob: &SentBlob,
    action: BlobAction,
    format: ManifestFormat,
    compression: String,
    outcome: &UploadOutcome,
    elapsed: Duration,
) -> BlobReport {
    let media_type = if blob.zstd { media_type::OCI_LAYER_ZSTD } else { format.layer_media_type(blob.gzip) };
    BlobReport {
        digest: blob.digest.clone(),
        size: blob.size,
        media_type: media_type.to_owned(),
        action,
        elapsed,
        compression,
        bytes_sent: outcome.bytes_sent,
        retries: outcome.retries,
    }
}

/// One layer's push into one repository.
struct LayerTask<'a> {
    archive: Arc<Archive>,
    repo: &'a Repository,
    layer: Layer,
    upload: UploadOptions,
    encode: Option<Codec>,
    reporter: &'a Arc<dyn Reporter>,
}

impl LayerTask<'_> {
    /// Places the layer: by HEAD or mount when `known` holds (a learned blob
    /// once proven), else by compressing and uploading it. A cache entry the
    /// registry contradicts is dropped and the layer pushed as usual.
    async fn push(
        self,
        known: Option<Known>,
        cache: &BlobCache,
        settings: &str,
    ) -> Result<(SentBlob, BlobAction, UploadOutcome), PushError> {
        let id = self.layer.diff_id.clone();
        let size = self.layer.size;
        self.reporter.blob_started(&id, self.repo.name(), size);
        let expected = match known {
            Some(Known::Sent(blob) | Known::Cached(blob)) => Some(blob),
            Some(Known::Learned(blob)) => {
                if learn::prove(self.repo, &id, &blob).await {
                    Some(blob)
                } else {
                    self.reporter.warning(&format!(
                        "the image at the destination claims layer {} is blob {}, but it is not; pushing the layer",
                        id.short(),
                        blob.digest.short()
                    ));
                    None
                }
            }
            None => None,
        };
        let (blob, action, outcome) = match self.place(expected.clone()).await? {
            // A digest names its bytes, so their size too: a size the
            // registry disagrees with is a cache entry to drop.
            (_, BlobAction::Existed, outcome)
                if expected.as_ref().is_some_and(|blob| outcome.size.is_some_and(|s| s != blob.size)) =>
            {
                cache.forget(&id, settings);
                self.reporter.warning(&format!(
                    "the blob cache's record of layer {} disagrees with the registry; dropped it and pushing the layer",
                    id.short()
                ));
                self.place(None).await?
            }
            placed => placed,
        };
        if action != BlobAction::Uploaded {
            self.reporter.blob_progress(&id, size);
        }
        self.reporter.blob_finished(&id, action, &blob.digest);
        Ok((blob, action, outcome))
    }

    /// One attempt: `expected` lets the registry client HEAD or mount before
    /// anything is compressed.
    async fn place(&self, expected: Option<SentBlob>) -> Result<(SentBlob, BlobAction, UploadOutcome), PushError> {
        let reporter = Arc::clone(self.reporter);
        let id = self.layer.diff_id.clone();
        let progress = Box::new(move |bytes| reporter.blob_progress(&id, bytes));
        let source = pipeline::LayerSource::new(
            Arc::clone(&self.archive),
            self.layer.clone(),
            self.encode,
            expected.clone(),
            progress,
        );
        let outcome = match self.repo.upload_blob(&source, &self.upload).await {
            Ok(outcome) => outcome,
            // The archive's own error explains more than the failed request it caused.
            Err(error) => {
                return Err(source.take_failure().unwrap_or_else(|| match error {
                    UploadError::Registry(error) => error.into(),
                    UploadError::Source(error) => PushError::Internal(format!("the layer pipeline failed: {error}")),
                }));
            }
        };
        match (outcome.action, expected) {
            (UploadAction::Existed, Some(blob)) => Ok((blob, BlobAction::Existed, outcome)),
            (UploadAction::Mounted, Some(blob)) => Ok((blob, BlobAction::Mounted, outcome)),
            (_, _) => {
                let blob =
                    source.made().ok_or_else(|| PushError::Internal("an uploaded layer has no digest".into()))?;
                Ok((blob, BlobAction::Uploaded, outcome))
            }
        }
    }
}

/// A repository on the same registry, other than `location`, where the blob
/// is known to be: a cross-repository mount saves uploading it.
pub(crate) fn mount_source<'a>(location: &str, seen: impl IntoIterator<Item = &'a String>) -> Option<String> {
    let (registry, _) = location.split_once('/')?;
    seen.into_iter()
        .filter(|other| other.as_str() != location)
        .find_map(|other| other.strip_prefix(registry)?.strip_prefix('/').map(str::to_owned))
}

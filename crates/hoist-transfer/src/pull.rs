//! Pull: images out of registries into one archive.
//!
//! 1. **Resolve** each reference: its manifest (an index is narrowed to one
//!    platform as containerd chooses, or kept whole with `all_platforms`),
//!    and each image's config. Documents are kept as the registry's bytes.
//! 2. **Plan** the archive ([`hoist_archive::write`]): every blob's size is in
//!    its descriptor, so every entry is placed before a byte is downloaded.
//!    For a Docker archive a zstd layer (which `docker load` of Docker 20.10
//!    cannot read) is first downloaded and decompressed into a temporary
//!    file, to be stored as a plain tar named by its diff_id: the one case
//!    whose size is not known up front.
//! 3. **Download** each blob once, `jobs` at a time, hashing as the bytes
//!    arrive (and with `verify` decompressing and hashing against the
//!    diff_id). Into a file, each blob is written at its place as it comes;
//!    the file has a temporary name until everything is in, and is removed
//!    on failure. Into a stream, blobs go in plan order: the first streams
//!    straight through while the next few download ahead into small bounded
//!    channels, so memory stays a few MiB per job whatever the image size.
//!    `index.json`, `manifest.json` and `repositories` come last, so a stream
//!    that fails part-way names no image.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hoist_archive::MAX_JSON_MEMBER;
use hoist_archive::write::{ArchiveBuilder, ArchiveKind, ArchivePlan, Content, DockerImage, TarWriter};
use hoist_oci::document::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use hoist_oci::{
    Compression, Descriptor, Digest, Document, ImageConfig, ImageIndex, ImageManifest, IndexEntry, ManifestBuilder,
    ManifestFormat, OciError, Platform, RawBlob, Reference, Sha256, media_type,
};
use hoist_registry::{BlobSink, Client, DownloadError, RegistryError, Repository};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::Reporter;

/// Bytes handed from a download to the stream writer at a time.
const CHUNK: usize = 1024 * 1024;
/// Chunks a blob downloading ahead of the one being written may hold.
const AHEAD_CHUNKS: usize = 2;
/// Blobs a stream downloads at once, whatever `--jobs` says: each holds up
/// to `AHEAD_CHUNKS + 1` MiB until it is written, so this bounds memory.
const MAX_STREAM_JOBS: usize = 8;

/// How to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Blobs downloaded at once.
    pub jobs: usize,
    pub kind: ArchiveKind,
    /// The platform to take from an index; `None`: this machine's.
    pub platform: Option<Platform>,
    /// Keep whole indexes, every platform (OCI archives only).
    pub all_platforms: bool,
    /// Decompress every layer as it arrives and check it against its diff_id.
    pub verify: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self { jobs: 4, kind: ArchiveKind::Docker, platform: None, all_platforms: false, verify: false }
    }
}

/// Where the archive goes.
pub enum PullOutput {
    /// A file, written under a temporary name beside it and renamed when whole.
    File(PathBuf),
    /// A stream such as standard output, written front to back.
    Stream(Box<dyn Write + Send>),
}

impl std::fmt::Debug for PullOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl PullOutput {
    fn label(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Stream(_) => "standard output".into(),
        }
    }
}

/// One reference as pulled.
#[derive(Clone, Debug)]
pub struct PulledImage {
    pub reference: Reference,
    /// The manifest stored for it (the registry's, or the index with every platform).
    pub digest: Digest,
    pub media_type: String,
    /// The platform chosen; `None` when the whole index was kept.
    pub platform: Option<Platform>,
    /// Every blob it stored: manifests, configs, layers.
    pub blobs: Vec<PulledBlob>,
}

/// One blob in the archive.
#[derive(Clone, Debug)]
pub struct PulledBlob {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The registry's compressed blob this plain tar was decompressed from
    /// (zstd layers in Docker archives); `None`: stored as the registry has it.
    pub decompressed_from: Option<Digest>,
}

/// Why a pull stopped. A file archive is then not left behind.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("`{reference}`: the registry has no such manifest")]
    NoManifest { reference: String },
    #[error("`{reference}`: {source}")]
    Document { reference: String, source: OciError },
    #[error("`{reference}` has no image for {wanted}; it has {}", list(.available))]
    NoPlatform { reference: String, wanted: Platform, available: Vec<Platform> },
    #[error("`{reference}`: {reason}")]
    Inconsistent { reference: String, reason: String },
    #[error("`{reference}`: blob {digest} is corrupt: the bytes received hash to {actual}")]
    Corrupt { reference: String, digest: Digest, actual: Digest },
    #[error("`{reference}`: blob {digest} is larger than the {size} bytes its descriptor says")]
    TooLong { reference: String, digest: Digest, size: u64 },
    #[error("`{reference}`: layer {digest} decompresses to {actual}, but the image config's diff_id is {expected}")]
    DiffId { reference: String, digest: Digest, expected: Digest, actual: Digest },
    #[error("`{reference}`: layer {digest} does not decompress as {compression}, as its media type says it should")]
    Undecodable { reference: String, digest: Digest, compression: Compression },
    /// Writing the archive (or a temporary file) failed: a local problem.
    #[error("cannot write {target}: {source}")]
    Write { target: String, source: io::Error },
    #[error("internal error: {0}")]
    Internal(String),
}

fn list(platforms: &[Platform]) -> String {
    if platforms.is_empty() {
        return "no platform images at all".into();
    }
    platforms.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl PullError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Registry(e) => return e.hint(),
            Self::NoManifest { .. } => {
                "check the name and tag (`skopeo list-tags docker://HOST/NAME` lists tags)".into()
            }
            Self::Document { .. } | Self::Inconsistent { .. } => {
                "the registry serves a document hoist cannot use as an image; check the reference".into()
            }
            Self::NoPlatform { available, .. } => match available.first() {
                Some(first) => format!("choose one with `--platform {first}`"),
                None => "the index holds no runnable image".into(),
            },
            Self::Corrupt { .. } | Self::TooLong { .. } | Self::DiffId { .. } | Self::Undecodable { .. } => {
                "the registry, or something between it and you, served wrong bytes; pull again, and tell the \
                 registry's operators if it persists"
                    .into()
            }
            Self::Write { .. } => {
                "check the free space and permissions where the archive goes (or that the program reading \
                 standard output is still running)"
                    .into()
            }
            Self::Internal(_) => "this is a bug in hoist; please report it".into(),
        })
    }

    /// True for a local failure (the disk, a closed pipe), never the registry's.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Write { .. } | Self::Internal(_))
    }

    /// True when bytes did not match their digest or diff_id.
    pub fn is_verification(&self) -> bool {
        matches!(self, Self::Corrupt { .. } | Self::TooLong { .. } | Self::DiffId { .. } | Self::Undecodable { .. })
    }
}

/// An image manifest with its config, resolved for one reference.
#[derive(Clone, Debug)]
pub(crate) struct ResolvedImage {
    manifest: ImageManifest,
    config: RawBlob,
    /// `None` for what is not an image (an attestation kept with a whole index).
    diff_ids: Option<Vec<Digest>>,
    pub(crate) platform: Option<Platform>,
}

/// A reference, resolved.
#[derive(Debug)]
struct Resolved {
    reference: Reference,
    repository: Repository,
    /// The document `index.json` names: the chosen manifest, or the whole index.
    root: RawBlob,
    root_platform: Option<Platform>,
    images: Vec<ResolvedImage>,
}

/// Where a blob's bytes come from.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per blob, looked up by reference: boxing would buy nothing
enum Source {
    Registry {
        repository: Repository,
        reference: String,
        diff_id: Option<(Digest, Compression)>,
    },
    /// A decompressed layer in a temporary file.
    Staged(PathBuf),
}

/// Pulls `references` into one archive at `output`.
pub async fn pull(
    client: &Client,
    references: &[Reference],
    options: &PullOptions,
    output: PullOutput,
    reporter: Arc<dyn Reporter>,
) -> Result<Vec<PulledImage>, PullError> {
    let mut resolved = Vec::new();
    for reference in references {
        let one = resolve(client, reference, options).await?;
        reporter.image_resolved(&one.reference, &one.root.digest, one.root_platform.as_ref());
        resolved.push(one);
    }
    // Zstd layers Docker cannot load are decompressed first, beside the archive.
    let staging_parent = match &output {
        PullOutput::File(path) => Some(parent_dir(path)),
        PullOutput::Stream(_) => None,
    };
    let mut staging = Staging::new(staging_parent);
    let (plan, sources, pulled) = plan(&resolved, options, &mut staging, &reporter).await?;
    let downloads: Vec<(Digest, u64)> = plan
        .entries()
        .iter()
        .filter_map(|e| match &e.content {
            Content::Blob(d) if matches!(sources.get(d), Some(Source::Registry { .. })) => Some((d.clone(), e.size)),
            _ => None,
        })
        .collect();
    reporter.pull_planned(downloads.len(), downloads.iter().map(|(_, size)| size).sum());
    let sources = Arc::new(sources);
    let label = output.label();
    match output {
        PullOutput::File(path) => write_file(&path, &plan, &sources, options, &reporter).await?,
        PullOutput::Stream(out) => write_stream(out, &label, &plan, &sources, options, &reporter).await?,
    }
    drop(staging);
    Ok(pulled)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// What a reference names, one platform chosen from an index unless the
/// whole index is wanted; documents as the registry's bytes. Shared with
/// `copy`, which keeps whole indexes by default.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per reference, matched at once: boxing would buy nothing
pub(crate) enum Root {
    /// An image manifest: the reference's own, or the entry chosen from its index.
    Image {
        manifest: ImageManifest,
        chosen: Option<IndexEntry>,
    },
    Index(ImageIndex),
}

/// Reads the document `reference` names from `repository` and, unless
/// `whole_index`, narrows an index to `wanted` (this machine's platform
/// when `None`) as containerd chooses.
pub(crate) async fn resolve_root(
    repository: &Repository,
    reference: &Reference,
    wanted: Option<&Platform>,
    whole_index: bool,
) -> Result<Root, PullError> {
    let name = reference.to_string();
    let root = fetch_document(repository, &reference.tag_or_digest(), &name).await?;
    let document_error = |source| PullError::Document { reference: name.clone(), source };
    match Document::parse(root).map_err(document_error)? {
        Document::Manifest(manifest) => Ok(Root::Image { manifest, chosen: None }),
        Document::Index(index) if whole_index => Ok(Root::Index(index)),
        Document::Index(index) => {
            let wanted = wanted.cloned().unwrap_or_else(Platform::host);
            let Some(entry) = index.choose(&wanted) else {
                return Err(PullError::NoPlatform { reference: name, wanted, available: index.platforms() });
            };
            let child = fetch_document(repository, &entry.descriptor.digest.to_string(), &name).await?;
            let Document::Manifest(manifest) = Document::parse(child).map_err(document_error)? else {
                return Err(PullError::Inconsistent {
                    reference: name,
                    reason: format!("the entry for {wanted} is another index; nested indexes are not pulled"),
                });
            };
            Ok(Root::Image { manifest, chosen: Some(entry.clone()) })
        }
    }
}

/// A single-platform image's `platform` against the one asked for.
pub(crate) fn check_platform(reference: &str, wanted: Option<&Platform>, platform: &Platform) -> Result<(), PullError> {
    match wanted.filter(|w| !w.matches(platform)) {
        Some(wanted) => Err(PullError::NoPlatform {
            reference: reference.to_owned(),
            wanted: wanted.clone(),
            available: vec![platform.clone()],
        }),
        None => Ok(()),
    }
}

async fn resolve(client: &Client, reference: &Reference, options: &PullOptions) -> Result<Resolved, PullError> {
    let name = reference.to_string();
    let repository = client.repository_for_pull(reference);
    let document_error = |source| PullError::Document { reference: name.clone(), source };
    let wanted = options.platform.clone();
    let whole_index = options.all_platforms && options.kind == ArchiveKind::Oci;
    match resolve_root(&repository, reference, wanted.as_ref(), whole_index).await? {
        Root::Image { manifest, chosen: None } => {
            let image = resolve_image(&repository, &name, manifest, true).await?;
            let platform = image.platform.clone().unwrap_or_default();
            check_platform(&name, wanted.as_ref(), &platform)?;
            // As docker pull does: a single-platform image is taken, with a word if it will not run here.
            let host = Platform::host();
            if wanted.is_none() && !host.matches(&platform) {
                tracing::warn!("`{name}` is an image for {platform}, not for this machine ({host})");
            }
            Ok(Resolved {
                reference: reference.clone(),
                repository,
                root: image.manifest.raw.clone(),
                root_platform: Some(platform),
                images: vec![image],
            })
        }
        Root::Index(index) => {
            let mut images = Vec::new();
            for entry in &index.manifests {
                let child = fetch_document(&repository, &entry.descriptor.digest.to_string(), &name).await?;
                match Document::parse(child).map_err(document_error)? {
                    Document::Manifest(manifest) => {
                        let runnable = !entry.is_attestation();
                        images.push(resolve_image(&repository, &name, manifest, runnable).await?);
                    }
                    Document::Index(_) => {
                        return Err(PullError::Inconsistent {
                            reference: name,
                            reason: format!(
                                "its index names another index ({}); nested indexes are not pulled",
                                entry.descriptor.digest
                            ),
                        });
                    }
                }
            }
            Ok(Resolved {
                reference: reference.clone(),
                repository,
                root: index.raw.clone(),
                root_platform: None,
                images,
            })
        }
        Root::Image { manifest, chosen: Some(entry) } => {
            let mut image = resolve_image(&repository, &name, manifest, true).await?;
            // The index says which platform this is; the config may say less (no variant).
            image.platform = entry.platform.clone().or(image.platform);
            Ok(Resolved {
                reference: reference.clone(),
                repository,
                root: image.manifest.raw.clone(),
                root_platform: image.platform.clone(),
                images: vec![image],
            })
        }
    }
}

async fn fetch_document(repository: &Repository, tag_or_digest: &str, reference: &str) -> Result<RawBlob, PullError> {
    repository
        .get_manifest(tag_or_digest)
        .await?
        .ok_or_else(|| PullError::NoManifest { reference: reference.to_owned() })
}

/// Fetches the config; for a runnable image checks it against the manifest.
pub(crate) async fn resolve_image(
    repository: &Repository,
    reference: &str,
    manifest: ImageManifest,
    runnable: bool,
) -> Result<ResolvedImage, PullError> {
    let bytes = repository.get_small_blob(&manifest.config.digest, MAX_JSON_MEMBER as usize).await?;
    let media =
        if manifest.config.media_type.is_empty() { media_type::OCI_CONFIG } else { &manifest.config.media_type };
    let config = RawBlob::new(media, bytes.to_vec());
    if !runnable {
        return Ok(ResolvedImage { manifest, config, diff_ids: None, platform: None });
    }
    let view = ImageConfig::parse(&config.bytes)
        .map_err(|source| PullError::Document { reference: reference.to_owned(), source })?;
    if view.diff_ids.len() != manifest.layers.len() {
        return Err(PullError::Inconsistent {
            reference: reference.to_owned(),
            reason: format!(
                "its manifest lists {} layers but its config's rootfs.diff_ids has {}",
                manifest.layers.len(),
                view.diff_ids.len()
            ),
        });
    }
    Ok(ResolvedImage { manifest, config, diff_ids: Some(view.diff_ids), platform: Some(view.platform) })
}

/// Temporary files for decompressed layers, removed when dropped.
struct Staging {
    parent: Option<PathBuf>,
    dir: Option<tempfile::TempDir>,
}

impl Staging {
    fn new(parent: Option<PathBuf>) -> Self {
        Self { parent, dir: None }
    }

    fn path_for(&mut self, digest: &Digest) -> Result<PathBuf, PullError> {
        if self.dir.is_none() {
            let mut builder = tempfile::Builder::new();
            builder.prefix(".hoist-pull-");
            let made = match &self.parent {
                Some(parent) => builder.tempdir_in(parent),
                None => builder.tempdir(),
            };
            let target = self
                .parent
                .as_ref()
                .map_or_else(|| std::env::temp_dir().display().to_string(), |p| p.display().to_string());
            self.dir =
                Some(made.map_err(|source| PullError::Write {
                    target: format!("a temporary directory in {target}"),
                    source,
                })?);
        }
        Ok(self.dir.as_ref().expect("made above").path().join(digest.hex()))
    }
}

/// The RepoTag docker would show for `reference`: none when pulled by digest.
fn repo_tag(reference: &Reference) -> Option<String> {
    if reference.digest().is_some() {
        return None;
    }
    let tag = reference.tag().unwrap_or("latest");
    Some(if reference.registry() == "docker.io" {
        format!("{}:{tag}", reference.familiar_path())
    } else {
        format!("{}/{}:{tag}", reference.registry(), reference.repository())
    })
}

/// `index.json`'s entry for a root document, named as Docker 25 names them.
fn root_entry(descriptor: Descriptor, reference: &Reference, platform: Option<&Platform>) -> IndexEntry {
    let mut entry = IndexEntry::new(descriptor);
    entry.platform = platform.cloned();
    if reference.digest().is_none() {
        let tag = reference.tag().unwrap_or("latest");
        entry.annotations.insert(
            ANNOTATION_CONTAINERD_NAME.into(),
            format!("{}/{}:{tag}", reference.registry(), reference.repository()),
        );
        entry.annotations.insert(ANNOTATION_REF_NAME.into(), tag.to_owned());
    }
    entry
}

/// Decides every entry, staging the layers that must be decompressed.
async fn plan(
    resolved: &[Resolved],
    options: &PullOptions,
    staging: &mut Staging,
    reporter: &Arc<dyn Reporter>,
) -> Result<(ArchivePlan, HashMap<Digest, Source>, Vec<PulledImage>), PullError> {
    let mut builder = ArchiveBuilder::new(options.kind);
    let mut sources: HashMap<Digest, Source> = HashMap::new();
    let mut pulled = Vec::new();
    for one in resolved {
        let mut blobs = Vec::new();
        let document = |blob: &RawBlob, builder: &mut ArchiveBuilder, blobs: &mut Vec<PulledBlob>| {
            builder.document(blob);
            blobs.push(PulledBlob {
                digest: blob.digest.clone(),
                media_type: blob.media_type.clone(),
                size: blob.size(),
                decompressed_from: None,
            });
        };
        if one.root_platform.is_none() {
            document(&one.root, &mut builder, &mut blobs);
        }
        let mut roots = Vec::new();
        for image in &one.images {
            let mut layers = Vec::new();
            let mut rewritten = false;
            for (number, layer) in image.manifest.layers.iter().enumerate() {
                let diff_id = image.diff_ids.as_ref().map(|ids| ids[number].clone());
                let wanted = Wanted { resolved: one, layer, diff_id, options };
                let (stored, blob) = store_layer(wanted, &mut sources, staging, reporter).await?;
                rewritten |= stored.digest != layer.digest;
                builder.blob(&stored);
                blobs.push(blob);
                layers.push(stored);
            }
            // A manifest naming plain tars instead of zstd blobs: a new document.
            let manifest = if rewritten {
                layers
                    .iter()
                    .cloned()
                    .fold(
                        ManifestBuilder::new(ManifestFormat::Oci, image.manifest.config.clone()),
                        ManifestBuilder::layer,
                    )
                    .build()
            } else {
                image.manifest.raw.clone()
            };
            document(&manifest, &mut builder, &mut blobs);
            document(&image.config, &mut builder, &mut blobs);
            if options.kind == ArchiveKind::Docker {
                builder.docker_image(DockerImage {
                    config: image.config.digest.clone(),
                    layers: layers.iter().map(|l| l.digest.clone()).collect(),
                    repo_tags: repo_tag(&one.reference).into_iter().collect(),
                });
            }
            roots.push((manifest, image.platform.clone()));
        }
        let (root, platform) = match &one.root_platform {
            Some(_) => roots.pop().expect("one image for a chosen platform"),
            None => (one.root.clone(), None),
        };
        builder.root(root_entry(root.descriptor(), &one.reference, platform.as_ref()));
        pulled.push(PulledImage {
            reference: one.reference.clone(),
            digest: root.digest.clone(),
            media_type: root.media_type.clone(),
            platform,
            blobs,
        });
    }
    Ok((builder.plan(), sources, pulled))
}

/// A layer of a resolved image, to be stored.
struct Wanted<'a> {
    resolved: &'a Resolved,
    layer: &'a Descriptor,
    diff_id: Option<Digest>,
    options: &'a PullOptions,
}

/// How `wanted` is stored: as the registry has it, or (a zstd layer in a
/// Docker archive, which Docker 20.10's loader cannot read) decompressed
/// into a staged plain tar named by its diff_id.
async fn store_layer(
    wanted: Wanted<'_>,
    sources: &mut HashMap<Digest, Source>,
    staging: &mut Staging,
    reporter: &Arc<dyn Reporter>,
) -> Result<(Descriptor, PulledBlob), PullError> {
    let Wanted { resolved, layer, diff_id, options } = wanted;
    let name = resolved.reference.to_string();
    let compression = Compression::from_media_type(&layer.media_type);
    match (options.kind, compression, diff_id) {
        (ArchiveKind::Docker, Some(Compression::Zstd), Some(diff_id)) => {
            let size = match sources.get(&diff_id) {
                Some(Source::Staged(path)) => std::fs::metadata(path).map(|m| m.len()).unwrap_or_default(),
                _ => {
                    let path = staging.path_for(&diff_id)?;
                    let size = decompress_to(&resolved.repository, &name, layer, &diff_id, &path, reporter).await?;
                    sources.insert(diff_id.clone(), Source::Staged(path));
                    size
                }
            };
            let plain = Descriptor { media_type: media_type::OCI_LAYER.into(), digest: diff_id, size };
            let blob = PulledBlob {
                digest: plain.digest.clone(),
                media_type: plain.media_type.clone(),
                size,
                decompressed_from: Some(layer.digest.clone()),
            };
            Ok((plain, blob))
        }
        (_, _, diff_id) => {
            let source = Source::Registry {
                repository: resolved.repository.clone(),
                reference: name,
                diff_id: diff_id.zip(compression).filter(|_| options.verify),
            };
            sources.entry(layer.digest.clone()).or_insert(source);
            let blob = PulledBlob {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                size: layer.size,
                decompressed_from: None,
            };
            Ok((layer.clone(), blob))
        }
    }
}

/// Downloads a zstd layer, decompressing into `path`; checks the diff_id.
async fn decompress_to(
    repository: &Repository,
    reference: &str,
    layer: &Descriptor,
    diff_id: &Digest,
    path: &Path,
    reporter: &Arc<dyn Reporter>,
) -> Result<u64, PullError> {
    let target = || format!("the temporary file {}", path.display());
    let file = File::create(path).map_err(|source| PullError::Write { target: target(), source })?;
    let decoder = hoist_archive::zstd_writer(HashingFile {
        file: io::BufWriter::with_capacity(CHUNK, file),
        hash: Sha256::new(),
    })
    .map_err(|source| PullError::Write { target: target(), source })?;
    let mut sink =
        DecompressSink { decoder: Some(decoder), done: None, reporter: Arc::clone(reporter), id: layer.digest.clone() };
    reporter.download_started(&layer.digest, repository.name(), layer.size);
    repository
        .download_blob_to(&layer.digest, Some(layer.size), &mut sink)
        .await
        .map_err(|e| download_error(e, reference))?;
    reporter.download_finished(&layer.digest);
    let (actual, size) =
        sink.done.take().ok_or_else(|| PullError::Internal("the decompression did not finish".into()))?;
    if actual != *diff_id {
        return Err(PullError::DiffId {
            reference: reference.to_owned(),
            digest: layer.digest.clone(),
            expected: diff_id.clone(),
            actual,
        });
    }
    Ok(size)
}

struct HashingFile {
    file: io::BufWriter<File>,
    hash: Sha256,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

struct DecompressSink {
    decoder: Option<zstd::stream::write::Decoder<'static, HashingFile>>,
    done: Option<(Digest, u64)>,
    reporter: Arc<dyn Reporter>,
    id: Digest,
}

impl BlobSink for DecompressSink {
    async fn accept(&mut self, bytes: Bytes) -> io::Result<()> {
        self.reporter.blob_progress(&self.id, bytes.len() as u64);
        self.decoder.as_mut().ok_or_else(|| io::Error::other("written after its end"))?.write_all(&bytes)
    }

    async fn finish(&mut self) -> io::Result<()> {
        let mut decoder = self.decoder.take().ok_or_else(|| io::Error::other("finished twice"))?;
        decoder.flush()?;
        let mut inner = decoder.into_inner();
        inner.file.flush()?;
        let size = inner.hash.len();
        self.done = Some((inner.hash.finish(), size));
        Ok(())
    }
}

/// Decompresses and hashes a layer as it arrives, for `verify`.
enum DiffIdCheck {
    Plain(Sha256),
    Gzip(Box<flate2::write::MultiGzDecoder<Sha256>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Sha256>>),
}

impl DiffIdCheck {
    fn new(compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Self::Plain(Sha256::new()),
            Compression::Gzip => Self::Gzip(Box::new(flate2::write::MultiGzDecoder::new(Sha256::new()))),
            Compression::Zstd => Self::Zstd(Box::new(hoist_archive::zstd_writer(Sha256::new())?)),
        })
    }

    fn update(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(hash) => {
                hash.update(bytes);
                Ok(())
            }
            Self::Gzip(decoder) => decoder.write_all(bytes),
            Self::Zstd(decoder) => decoder.write_all(bytes),
        }
    }

    fn finish(self) -> io::Result<Digest> {
        Ok(match self {
            Self::Plain(hash) => hash.finish(),
            Self::Gzip(decoder) => decoder.finish()?.finish(),
            Self::Zstd(mut decoder) => {
                decoder.flush()?;
                decoder.into_inner().finish()
            }
        })
    }
}

/// What every download sink does besides storing: progress, and the diff_id check.
struct Observe {
    reporter: Arc<dyn Reporter>,
    id: Digest,
    check: Option<DiffIdCheck>,
    /// A layer that does not decompress fails the diff_id check, not the download.
    undecodable: bool,
}

impl Observe {
    fn new(reporter: &Arc<dyn Reporter>, id: &Digest, compression: Option<Compression>) -> Self {
        let check = compression.and_then(|c| DiffIdCheck::new(c).ok());
        Self { reporter: Arc::clone(reporter), id: id.clone(), check, undecodable: false }
    }

    fn see(&mut self, bytes: &[u8]) {
        self.reporter.blob_progress(&self.id, bytes.len() as u64);
        if let Some(check) = &mut self.check
            && check.update(bytes).is_err()
        {
            self.undecodable = true;
            self.check = None;
        }
    }

    /// The diff_id of what was seen, if checked.
    fn diff_id(&mut self) -> Option<Result<Digest, ()>> {
        if self.undecodable {
            return Some(Err(()));
        }
        self.check.take().map(|c| c.finish().map_err(|_| ()))
    }
}

/// Checks a downloaded layer's diff_id, when it was computed.
fn check_diff_id(observe: &mut Observe, source: &Source, digest: &Digest) -> Result<(), PullError> {
    let Source::Registry { reference, diff_id: Some((expected, compression)), .. } = source else { return Ok(()) };
    let actual = match observe.diff_id() {
        None => return Ok(()),
        Some(Ok(actual)) => actual,
        Some(Err(())) => {
            return Err(PullError::Undecodable {
                reference: reference.clone(),
                digest: digest.clone(),
                compression: *compression,
            });
        }
    };
    if actual == *expected {
        return Ok(());
    }
    Err(PullError::DiffId { reference: reference.clone(), digest: digest.clone(), expected: expected.clone(), actual })
}

fn download_error(error: DownloadError, reference: &str) -> PullError {
    match error {
        DownloadError::Registry(error) => PullError::Registry(error),
        DownloadError::Sink { digest, source } => PullError::Write { target: format!("blob {digest}"), source },
        DownloadError::Digest { digest, actual, .. } => {
            PullError::Corrupt { reference: reference.to_owned(), digest, actual }
        }
        DownloadError::TooLong { digest, size } => PullError::TooLong { reference: reference.to_owned(), digest, size },
    }
}

// ---- into a file: every blob at its place, at once ----

/// Writes a blob into the archive file at its place, each piece as it comes:
/// hyper hands over reads of a few hundred KiB, so gathering them first
/// would only add a copy.
struct PositionedSink {
    file: Arc<File>,
    offset: u64,
    observe: Observe,
}

impl BlobSink for PositionedSink {
    async fn accept(&mut self, bytes: Bytes) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.observe.see(&bytes);
        self.file.write_all_at(&bytes, self.offset)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

async fn write_file(
    path: &Path,
    plan: &ArchivePlan,
    sources: &Arc<HashMap<Digest, Source>>,
    options: &PullOptions,
    reporter: &Arc<dyn Reporter>,
) -> Result<(), PullError> {
    let write_error = |source| PullError::Write { target: path.display().to_string(), source };
    let name = path.file_name().map_or_else(|| "archive".into(), |n| n.to_string_lossy().into_owned());
    // Beside the archive, so the rename is atomic; removed when dropped unless kept.
    let temporary = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(parent_dir(path))
        .map_err(write_error)?;
    plan.write_frame(temporary.as_file()).map_err(write_error)?;
    let file = Arc::new(temporary.as_file().try_clone().map_err(write_error)?);
    let jobs = Arc::new(Semaphore::new(options.jobs.max(1)));
    let mut tasks = JoinSet::new();
    for entry in plan.entries() {
        let Content::Blob(digest) = &entry.content else { continue };
        let source =
            sources.get(digest).cloned().ok_or_else(|| PullError::Internal(format!("no source for {digest}")))?;
        let (file, offset, size, digest) = (Arc::clone(&file), entry.data_offset(), entry.size, digest.clone());
        let (jobs, reporter) = (Arc::clone(&jobs), Arc::clone(reporter));
        tasks.spawn(async move {
            let _permit = jobs.acquire_owned().await.map_err(|_| PullError::Internal("the job limit closed".into()))?;
            match &source {
                Source::Staged(staged) => {
                    let (staged, target) = (staged.clone(), file);
                    tokio::task::spawn_blocking(move || copy_at(&staged, &target, offset))
                        .await
                        .map_err(|e| PullError::Internal(e.to_string()))?
                        .map_err(|source| PullError::Write { target: "the archive".into(), source })
                }
                Source::Registry { repository, reference, diff_id } => {
                    let observe = Observe::new(&reporter, &digest, diff_id.as_ref().map(|(_, c)| *c));
                    let mut sink = PositionedSink { file, offset, observe };
                    reporter.download_started(&digest, repository.name(), size);
                    repository
                        .download_blob_to(&digest, Some(size), &mut sink)
                        .await
                        .map_err(|e| download_error(e, reference))?;
                    check_diff_id(&mut sink.observe, &source, &digest)?;
                    reporter.download_finished(&digest);
                    Ok(())
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        // The first failure drops the rest (JoinSet aborts them) and the temporary file.
        joined.map_err(|e| PullError::Internal(e.to_string()))??;
    }
    drop(file);
    temporary.persist(path).map_err(|e| write_error(e.error))?;
    Ok(())
}

/// Copies a staged file into the archive at `offset`.
fn copy_at(staged: &Path, file: &File, mut offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut input = File::open(staged)?;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        file.write_all_at(&buffer[..n], offset)?;
        offset += n as u64;
    }
}

// ---- into a stream: in order, downloading a little ahead ----

/// Hands a blob to the stream writer in 1 MiB chunks through a bounded channel.
struct ChannelSink {
    sender: mpsc::Sender<Bytes>,
    buffer: BytesMut,
    observe: Observe,
}

impl ChannelSink {
    async fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buffer, BytesMut::with_capacity(CHUNK)).freeze();
        self.sender.send(chunk).await.map_err(|_| io::Error::other("the archive writer stopped"))
    }
}

impl BlobSink for ChannelSink {
    async fn accept(&mut self, bytes: Bytes) -> io::Result<()> {
        self.observe.see(&bytes);
        // Chunks of exactly 1 MiB: a buffer grown past its capacity would double.
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (now, later) = rest.split_at(rest.len().min(CHUNK - self.buffer.len()));
            self.buffer.extend_from_slice(now);
            rest = later;
            if self.buffer.len() == CHUNK {
                self.send().await?;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() { Ok(()) } else { self.send().await }
    }
}

async fn write_stream(
    out: Box<dyn Write + Send>,
    label: &str,
    plan: &ArchivePlan,
    sources: &Arc<HashMap<Digest, Source>>,
    options: &PullOptions,
    reporter: &Arc<dyn Reporter>,
) -> Result<(), PullError> {
    // One channel per downloaded blob, in plan order; the writer drains them in that order.
    let mut receivers: HashMap<Digest, mpsc::Receiver<Bytes>> = HashMap::new();
    let mut downloads = Vec::new();
    for entry in plan.entries() {
        let Content::Blob(digest) = &entry.content else { continue };
        if let Some(Source::Registry { .. }) = sources.get(digest) {
            let (sender, receiver) = mpsc::channel(AHEAD_CHUNKS);
            receivers.insert(digest.clone(), receiver);
            downloads.push((digest.clone(), entry.size, sender));
        }
    }
    let writer_plan = plan.clone();
    let writer_sources = Arc::clone(sources);
    let target = label.to_owned();
    let writer = tokio::task::spawn_blocking(move || write_in_order(out, &writer_plan, &writer_sources, receivers));
    let fetch = async {
        // Downloads start in plan order and at most `jobs` are under way at
        // once, each until the writer has taken all of it: the one being
        // written always runs, the others fill their channels and wait, so a
        // run of small blobs cannot pile up ahead of a big one.
        let jobs = Arc::new(Semaphore::new(options.jobs.clamp(1, MAX_STREAM_JOBS)));
        let mut tasks = JoinSet::new();
        for (digest, size, sender) in downloads {
            let permit = Arc::clone(&jobs)
                .acquire_owned()
                .await
                .map_err(|_| PullError::Internal("the job limit closed".into()))?;
            let Some(Source::Registry { repository, reference, diff_id }) = sources.get(&digest).cloned() else {
                continue;
            };
            let source = Source::Registry {
                repository: repository.clone(),
                reference: reference.clone(),
                diff_id: diff_id.clone(),
            };
            let reporter = Arc::clone(reporter);
            tasks.spawn(async move {
                let _permit = permit;
                let observe = Observe::new(&reporter, &digest, diff_id.as_ref().map(|(_, c)| *c));
                let mut sink = ChannelSink { sender, buffer: BytesMut::with_capacity(CHUNK), observe };
                reporter.download_started(&digest, repository.name(), size);
                repository
                    .download_blob_to(&digest, Some(size), &mut sink)
                    .await
                    .map_err(|e| download_error(e, &reference))?;
                check_diff_id(&mut sink.observe, &source, &digest)?;
                reporter.download_finished(&digest);
                // The writer drops the receiver once it has the whole blob.
                sink.sender.closed().await;
                Ok::<(), PullError>(())
            });
            // Reap finished downloads as we go, so a failure stops the pull early.
            while let Some(joined) = tasks.try_join_next() {
                joined.map_err(|e| PullError::Internal(e.to_string()))??;
            }
        }
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(|e| PullError::Internal(e.to_string()))??;
        }
        Ok::<(), PullError>(())
    };
    let (written, fetched) = tokio::join!(writer, fetch);
    let written = written
        .map_err(|e| PullError::Internal(e.to_string()))
        .and_then(|w| w.map_err(|source| PullError::Write { target: target.clone(), source }));
    match (written, fetched) {
        // A download's own error explains a writer that saw its channel close early.
        (_, Err(error)) if !matches!(error, PullError::Write { .. }) => Err(error),
        (Err(error), _) | (Ok(()), Err(error)) => Err(error),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// The blocking half of a stream: every entry in order.
fn write_in_order(
    out: Box<dyn Write + Send>,
    plan: &ArchivePlan,
    sources: &HashMap<Digest, Source>,
    mut receivers: HashMap<Digest, mpsc::Receiver<Bytes>>,
) -> io::Result<()> {
    let mut writer = TarWriter::new(io::BufWriter::with_capacity(256 * 1024, out));
    for entry in plan.entries() {
        writer.begin(entry)?;
        let Content::Blob(digest) = &entry.content else { continue };
        match sources.get(digest) {
            Some(Source::Staged(path)) => {
                io::copy(&mut File::open(path)?, &mut writer)?;
            }
            _ => {
                let mut receiver =
                    receivers.remove(digest).ok_or_else(|| io::Error::other(format!("no download for {digest}")))?;
                // Until the planned size, not until the sender goes: the
                // download waits for this receiver to be dropped.
                let mut remaining = entry.size;
                while remaining > 0 {
                    let Some(chunk) = receiver.blocking_recv() else { break };
                    writer.write_all(&chunk)?;
                    remaining = remaining.saturating_sub(chunk.len() as u64);
                }
            }
        }
        writer.end()?;
    }
    writer.finish()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_resolve_as_docker_does() {
        let short = Reference::parse("alpine").unwrap();
        assert_eq!(short.api_host(), "registry-1.docker.io");
        assert_eq!(short.repository(), "library/alpine");
        assert_eq!(repo_tag(&short).as_deref(), Some("alpine:latest"));
        let entry =
            root_entry(Descriptor { media_type: String::new(), digest: Digest::of(b"m"), size: 1 }, &short, None);
        assert_eq!(entry.annotations[ANNOTATION_CONTAINERD_NAME], "docker.io/library/alpine:latest");
        assert_eq!(entry.annotations[ANNOTATION_REF_NAME], "latest");
        let user = Reference::parse("user/tool:2").unwrap();
        assert_eq!(repo_tag(&user).as_deref(), Some("user/tool:2"));
        let private = Reference::parse("registry.example.com:5000/team/app:1.0").unwrap();
        assert_eq!(repo_tag(&private).as_deref(), Some("registry.example.com:5000/team/app:1.0"));
        let pinned = Reference::parse(&format!("alpine@{}", Digest::of(b"x"))).unwrap();
        assert_eq!(repo_tag(&pinned), None, "pulled by digest: no tag");
        assert!(
            root_entry(Descriptor { media_type: String::new(), digest: Digest::of(b"m"), size: 1 }, &pinned, None)
                .annotations
                .is_empty()
        );
    }
}

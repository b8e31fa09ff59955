//! Copy: an image from one registry (or repository) to another, every
//! document byte for byte, so every digest is kept.
//!
//! 1. **Resolve** the source as a pull does (`pull::resolve_root`): an image
//!    manifest, or a whole index by default (with `platform`, the one
//!    child chosen as containerd chooses). Every document is kept as the
//!    source registry's bytes; nothing is re-serialised or converted.
//! 2. **Walk** it: an index's children (nested indexes too, four deep) are
//!    read by digest, each checked against it; every distinct blob they
//!    name is collected once. With `referrers`, the artifacts referring to
//!    each of those manifests (the referrers API, else the `sha256-<hex>`
//!    tag schema, and cosign's `sha256-<hex>.sig|.att|.sbom` tags) are
//!    walked too, and theirs in turn.
//! 3. **Blobs**, `jobs` at once, largest first, through the one upload
//!    engine with a [`RegistryBlob`] as the source: a HEAD first (a blob
//!    the destination has is skipped); inside one registry a mount from the
//!    source repository (the engine asks for pull on it in the same
//!    token), falling back to an upload if refused; across registries never
//!    a mount (Docker Hub and Harbor answer a foreign `from` badly), but a
//!    stream from a GET on the source, hashed as it passes and verified
//!    before the commit.
//! 4. **Manifests**, only once every blob is in: children by digest, then
//!    the referrers and their tags, and the source's root under the
//!    destination's tag last. A failure before that moves no tag.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use hoist_archive::MAX_JSON_MEMBER;
use hoist_oci::{Descriptor, Digest, Document, ImageConfig, ImageManifest, Platform, RawBlob, Reference, media_type};
use hoist_registry::{
    Client, DownloadError, RegistryBlob, RegistryError, Repository, UploadError, UploadOptions, mixed_families,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::pull::{Root, check_platform, resolve_image, resolve_root};
use crate::push::STORED;
use crate::{BlobAction, BlobReport, PullError, PushRun, PushedImage, Reporter};

/// Indexes nested deeper than this are refused (as the layout reader does).
const MAX_DEPTH: usize = 4;
/// Artifacts referring to artifacts are followed this many levels down.
const MAX_REFERRER_DEPTH: usize = 3;
/// The most referrers one copy follows (signatures, attestations, SBOMs are
/// a handful per image): each costs requests, and the source decides how
/// many it lists.
const MAX_REFERRERS: usize = 1000;
/// cosign's tags for what it attaches to `sha256-<hex>` without the referrers API.
const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// How to copy.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// Blobs copied at once.
    pub jobs: usize,
    /// Copy only this platform's manifest of an index; `None`: the whole index.
    pub platform: Option<Platform>,
    /// Also copy the artifacts that refer to the image.
    pub referrers: bool,
    /// Upload in chunks of this many bytes instead of one request per blob.
    pub chunk_size: Option<u64>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self { jobs: 4, platform: None, referrers: false, chunk_size: None }
    }
}

/// One end of a copy: the reference and the client (its credentials) that reaches it.
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    pub client: &'a Client,
    pub reference: &'a Reference,
}

/// Why a copy stopped. No tag moved, except those published before a
/// [`CopyError::NotPublished`].
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// What the source names could not be read as an image (no such
    /// manifest, no such platform, a document that is no image).
    #[error(transparent)]
    Source(#[from] PullError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("`{reference}`: blob {digest} is corrupt: the source sent bytes that hash to {actual}")]
    Corrupt { reference: String, digest: Digest, actual: Digest },
    #[error("`{reference}`: blob {digest} is larger than the {size} bytes its descriptor says")]
    TooLong { reference: String, digest: Digest, size: u64 },
    #[error("`{reference}`: {reason}")]
    Unusable { reference: String, reason: String },
    #[error("`{destination}` names {wanted}, but `{source_name}` is {actual}")]
    OtherDigest { destination: String, source_name: String, wanted: Digest, actual: Digest },
    /// Every blob was in; putting these references failed (others may have
    /// been published: see `PushRun::published`).
    #[error("{cause}; not published: {}", join(references))]
    NotPublished { references: Vec<Reference>, cause: Box<CopyError> },
    #[error("internal error: {0}")]
    Internal(String),
}

use crate::error::join;

impl CopyError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Source(e) => return e.hint(),
            Self::Registry(e) => return e.hint(),
            Self::Corrupt { .. } | Self::TooLong { .. } => {
                "the source registry, or something between it and you, served wrong bytes; nothing was committed \
                 with them. Copy again, and tell the source registry's operators if it persists"
                    .into()
            }
            Self::Unusable { .. } => {
                "the source holds a document hoist cannot copy as an image; check the reference".into()
            }
            Self::OtherDigest { actual, .. } => {
                format!("a copy keeps the source's digest: drop the digest from DEST, or name {actual}")
            }
            Self::NotPublished { cause, .. } => return cause.hint(),
            Self::Internal(_) => "this is a bug in hoist; please report it".into(),
        })
    }

    /// True when bytes did not match their digest or size.
    pub fn is_verification(&self) -> bool {
        match self {
            Self::Corrupt { .. } | Self::TooLong { .. } => true,
            Self::Source(e) => e.is_verification(),
            Self::NotPublished { cause, .. } => cause.is_verification(),
            _ => false,
        }
    }
}

/// Copies what `from` names to `to`. Each reference published is recorded
/// in `run` as it goes, and returned.
pub async fn copy(
    from: Side<'_>,
    to: Side<'_>,
    options: &CopyOptions,
    run: &PushRun,
) -> Result<Vec<PushedImage>, CopyError> {
    let result = copy_all(from, to, options, run).await;
    if result.is_err() {
        // Blobs still in flight when another failed left their sessions open.
        run.cancel_uploads().await;
    }
    result
}

async fn copy_all(
    from: Side<'_>,
    to: Side<'_>,
    options: &CopyOptions,
    run: &PushRun,
) -> Result<Vec<PushedImage>, CopyError> {
    let reporter = run.reporter();
    let source = from.client.repository_for_pull(from.reference);
    let target = to.client.repository(to.reference);
    let name = from.reference.to_string();
    let (root, platform) = resolve(&source, from.reference, options.platform.as_ref()).await?;
    reporter.image_resolved(from.reference, &root.digest, platform.as_ref());
    if let Some(wanted) = to.reference.digest().filter(|d| **d != root.digest) {
        return Err(CopyError::OtherDigest {
            destination: to.reference.to_string(),
            source_name: name,
            wanted: wanted.clone(),
            actual: root.digest.clone(),
        });
    }
    let mut graph = Graph::default();
    graph.walk(&source, &name, root.clone(), 0).await?;
    let image_documents = graph.documents.len();
    let referrers =
        if options.referrers { Some(Referrers::find(&source, &name, &mut graph, reporter).await?) } else { None };
    for problem in graph.mixed.drain(..) {
        reporter.warning(&format!(
            "`{name}`: {problem}; copied as it is, but skopeo, podman and Quay refuse such manifests"
        ));
    }
    if graph.foreign > 0 {
        reporter.warning(&format!(
            "`{name}` has {} foreign (non-distributable) layers; they are not copied, as with docker: their bytes \
             live at the URLs its manifest names",
            graph.foreign
        ));
    }
    let tag = destination_tag(to.reference);
    let untagged = Reference::from_parts(to.reference.registry(), to.reference.repository(), None)
        .map_err(|e| CopyError::Internal(e.to_string()))?;
    // Every tag this copy may move; the referrers' are settled once the
    // destination is asked whether it has the API.
    let mut planned: Vec<Reference> =
        referrers.iter().flat_map(Referrers::tags).map(|t| tagged(&untagged, &t)).collect();
    planned.push(tagged(&untagged, &tag));
    run.record_planned(planned.clone());

    let same_registry = from.reference.registry() == to.reference.registry();
    let context = BlobContext {
        source: &source,
        target: &target,
        name: &name,
        mount_from: same_registry.then(|| from.reference.repository().to_owned()),
        options,
        run,
    };
    let reports = copy_blobs(&graph, &context).await?;
    let blobs_of = |digest: &Digest| -> Vec<BlobReport> {
        graph.needs.get(digest).into_iter().flatten().filter_map(|d| reports.get(d).cloned()).collect()
    };

    // Every blob is in: documents now, children before what names them, tags last.
    let mut publisher = Publisher { target: &target, untagged: &untagged, run, planned, published: Vec::new() };
    let (image, artifacts) = graph.documents.split_at(image_documents);
    for document in image.iter().filter(|d| d.digest != root.digest) {
        publisher.by_digest(document).await?;
    }
    if let Some(referrers) = &referrers
        && !referrers.is_empty()
    {
        // Subjects before the artifacts naming them.
        publisher.by_digest(&root).await?;
        for document in artifacts {
            publisher.by_digest(document).await?;
        }
        // Asked now that the repository exists there: a registry with the
        // API may still say 404 for a repository it does not have.
        let native = target.referrers(&root.digest).await?.is_some();
        let referrer_tags = referrers.documents(&target, native).await?;
        publisher.planned = referrer_tags.iter().map(|(t, _)| tagged(&untagged, t)).collect();
        publisher.planned.push(tagged(&untagged, &tag));
        run.record_planned(publisher.planned.clone());
        for (tag, document) in &referrer_tags {
            publisher.tag(tag, document, blobs_of(&document.digest)).await?;
        }
    }
    publisher.tag(&tag, &root, blobs_of(&root.digest)).await?;
    Ok(publisher.published)
}

/// The source's root document, and its platform when one was chosen or asked for.
async fn resolve(
    source: &Repository,
    reference: &Reference,
    wanted: Option<&Platform>,
) -> Result<(RawBlob, Option<Platform>), CopyError> {
    let name = reference.to_string();
    Ok(match resolve_root(source, reference, wanted, wanted.is_none()).await? {
        Root::Index(index) => (index.raw, None),
        Root::Image { manifest, chosen: Some(entry) } => (manifest.raw, entry.platform),
        Root::Image { manifest, chosen: None } => match wanted {
            // A single image copies as it is, unless a platform was asked
            // for: then its config must say it is that platform.
            None => {
                let platform = config_platform(source, &manifest).await?;
                (manifest.raw, Some(platform))
            }
            Some(wanted) => {
                let raw = manifest.raw.clone();
                let image = resolve_image(source, &name, manifest, true).await?;
                let platform = image.platform.unwrap_or_default();
                check_platform(&name, Some(wanted), &platform)?;
                (raw, Some(platform))
            }
        },
    })
}

/// The platform a single image's config names, to say what is copied;
/// `unknown/unknown` for an artifact whose config is no image config.
async fn config_platform(source: &Repository, manifest: &ImageManifest) -> Result<Platform, CopyError> {
    let config = source.get_small_blob(&manifest.config.digest, MAX_JSON_MEMBER as usize).await?;
    Ok(ImageConfig::parse(&config).map(|c| c.platform).unwrap_or_default())
}

/// What the root goes up under: the destination's tag, else its digest, else `latest`.
fn destination_tag(destination: &Reference) -> String {
    match (destination.tag(), destination.digest()) {
        (Some(tag), _) => tag.to_owned(),
        (None, Some(digest)) => digest.to_string(),
        (None, None) => "latest".to_owned(),
    }
}

/// `untagged` with `tag` (or pinned to it, when it is a digest).
fn tagged(untagged: &Reference, tag: &str) -> Reference {
    match Digest::parse(tag) {
        Ok(digest) => untagged.with_digest(digest),
        Err(_) => Reference::from_parts(untagged.registry(), untagged.repository(), Some(tag))
            .unwrap_or_else(|_| untagged.clone()),
    }
}

/// Every document and blob a copy moves.
#[derive(Debug, Default)]
struct Graph {
    /// Documents to put, each once, children before the indexes naming them.
    documents: Vec<RawBlob>,
    /// Distinct blobs, in the order first named.
    blobs: Vec<Descriptor>,
    /// Document digest → every blob it needs (an index: its children's).
    needs: HashMap<Digest, Vec<Digest>>,
    /// Foreign layers left out.
    foreign: usize,
    /// Image manifests mixing Docker and OCI media types, as said.
    mixed: Vec<String>,
}

impl Graph {
    fn has(&self, digest: &Digest) -> bool {
        self.needs.contains_key(digest)
    }

    /// Adds `raw` and everything under it; returns the blobs it needs.
    async fn walk(
        &mut self,
        source: &Repository,
        name: &str,
        raw: RawBlob,
        depth: usize,
    ) -> Result<Vec<Digest>, CopyError> {
        if let Some(needs) = self.needs.get(&raw.digest) {
            return Ok(needs.clone());
        }
        let document = Document::parse(raw).map_err(|source| PullError::Document { reference: name.into(), source })?;
        let mut needs: Vec<Digest> = Vec::new();
        match &document {
            Document::Manifest(manifest) => {
                if let Some(problem) = mixed_families(&manifest.raw) {
                    self.mixed.push(problem);
                }
                for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
                    if is_foreign(&blob.media_type) {
                        self.foreign += 1;
                        continue;
                    }
                    if !self.blobs.iter().any(|b| b.digest == blob.digest) {
                        self.blobs.push(blob.clone());
                    }
                    needs.push(blob.digest.clone());
                }
            }
            Document::Index(index) => {
                if depth >= MAX_DEPTH {
                    return Err(CopyError::Unusable {
                        reference: name.into(),
                        reason: format!("its indexes are nested more than {MAX_DEPTH} deep"),
                    });
                }
                for entry in &index.manifests {
                    let digest = &entry.descriptor.digest;
                    let blobs = match self.needs.get(digest) {
                        Some(known) => known.clone(),
                        None => {
                            let child = fetch(source, name, &digest.to_string()).await?;
                            Box::pin(self.walk(source, name, child, depth + 1)).await?
                        }
                    };
                    for blob in blobs {
                        if !needs.contains(&blob) {
                            needs.push(blob);
                        }
                    }
                }
            }
        }
        let raw = document.raw().clone();
        self.needs.insert(raw.digest.clone(), needs.clone());
        self.documents.push(raw);
        Ok(needs)
    }
}

/// Non-distributable layers: their bytes are fetched from the URLs in the
/// manifest, not from the registry (Windows base layers).
fn is_foreign(media: &str) -> bool {
    media.contains(".foreign.") || media.contains(".nondistributable.")
}

/// A document by tag or digest, which the source must have.
async fn fetch(source: &Repository, name: &str, tag_or_digest: &str) -> Result<RawBlob, CopyError> {
    source.get_manifest(tag_or_digest).await?.ok_or_else(|| CopyError::Unusable {
        reference: name.into(),
        reason: format!("it names manifest {tag_or_digest}, which the registry does not have"),
    })
}

/// The artifacts that refer to the copied manifests.
#[derive(Debug, Default)]
struct Referrers {
    /// Per subject: its referrers' descriptors as the source lists them (every
    /// field kept), and the source's tag-schema index when they came from one.
    lists: Vec<(Digest, Vec<serde_json::Value>, Option<RawBlob>)>,
    /// cosign's own tags (`sha256-<hex>.sig`, …) and the manifest each names.
    cosign: Vec<(String, RawBlob)>,
}

impl Referrers {
    /// Finds the referrers of every document in `graph` on the source and
    /// adds them (and theirs, a few levels down) to it.
    async fn find(
        source: &Repository,
        name: &str,
        graph: &mut Graph,
        reporter: &Arc<dyn Reporter>,
    ) -> Result<Self, CopyError> {
        let mut found = Self::default();
        let mut queue: VecDeque<(Digest, usize)> = graph.documents.iter().map(|d| (d.digest.clone(), 0)).collect();
        let mut asked: HashSet<Digest> = HashSet::new();
        let mut followed = 0;
        while let Some((subject, depth)) = queue.pop_front() {
            if !asked.insert(subject.clone()) {
                continue;
            }
            let (mut entries, mut tag_index) = listed(source, name, &subject).await?;
            followed += entries.len();
            if followed > MAX_REFERRERS {
                return Err(CopyError::Unusable {
                    reference: name.into(),
                    reason: format!(
                        "the source lists more than {MAX_REFERRERS} referrers; hoist copies at most that many"
                    ),
                });
            }
            let mut kept = Vec::with_capacity(entries.len());
            for entry in entries.drain(..) {
                let digest = entry_digest(name, &entry)?;
                if !graph.has(&digest) {
                    // A list can outlive what it lists (a signature deleted,
                    // its tag index not updated): that one is skipped, and
                    // the source's index, naming it, is not copied as it is.
                    let Some(document) = source.get_manifest(&digest.to_string()).await? else {
                        reporter.warning(&format!(
                            "`{name}`: the source lists {digest} as a referrer of {subject}, but does not have it; \
                             not copied"
                        ));
                        tag_index = None;
                        continue;
                    };
                    graph.walk(source, name, document, 0).await?;
                }
                if depth + 1 < MAX_REFERRER_DEPTH {
                    queue.push_back((digest, depth + 1));
                }
                kept.push(entry);
            }
            let entries = kept;
            if !entries.is_empty() {
                found.lists.push((subject.clone(), entries, tag_index));
            }
            for suffix in COSIGN_SUFFIXES {
                let tag = format!("{}.{suffix}", schema_tag(&subject));
                // A HEAD first: most are absent, and Docker Hub counts GETs as pulls.
                if source.head_manifest(&tag).await?.is_none() {
                    continue;
                }
                let document = fetch(source, name, &tag).await?;
                graph.walk(source, name, document.clone(), 0).await?;
                let resolved = graph.documents.iter().find(|d| d.digest == document.digest).cloned();
                found.cosign.push((tag, resolved.unwrap_or(document)));
            }
        }
        Ok(found)
    }

    fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.cosign.is_empty()
    }

    /// Every tag a copy may write for these referrers.
    fn tags(&self) -> Vec<String> {
        let schema = self.lists.iter().map(|(subject, _, _)| schema_tag(subject));
        schema.chain(self.cosign.iter().map(|(tag, _)| tag.clone())).collect()
    }

    /// The documents to put under tags at the destination: cosign's tags
    /// as they are, and, where the destination has no referrers API (one
    /// that has it indexes each artifact by its `subject` itself), each
    /// subject's tag-schema index: the source's own bytes when the
    /// destination has none yet, else the destination's with the missing
    /// referrers added.
    async fn documents(&self, target: &Repository, native: bool) -> Result<Vec<(String, RawBlob)>, CopyError> {
        let mut documents = Vec::new();
        if !native {
            for (subject, entries, source_index) in &self.lists {
                let tag = schema_tag(subject);
                let existing = target.get_manifest(&tag).await?;
                let index = match (existing, source_index) {
                    (None, Some(source_index)) => Some(source_index.clone()),
                    (None, None) => Some(schema_index(Vec::new(), entries)),
                    (Some(existing), _) => merged(&existing, entries),
                };
                documents.extend(index.map(|index| (tag, index)));
            }
        }
        documents.extend(self.cosign.iter().cloned());
        Ok(documents)
    }
}

/// The referrers of `subject` the source lists: through the API, else
/// under the tag schema's `sha256-<hex>` (whose index is returned too).
async fn listed(
    source: &Repository,
    name: &str,
    subject: &Digest,
) -> Result<(Vec<serde_json::Value>, Option<RawBlob>), CopyError> {
    let unusable = |what: &str| CopyError::Unusable {
        reference: name.into(),
        reason: format!("the referrers of {subject} ({what}) are not an image index"),
    };
    if let Some(index) = source.referrers(subject).await? {
        return Ok((manifests_of(&index).ok_or_else(|| unusable("from the referrers API"))?, None));
    }
    match source.get_manifest(&schema_tag(subject)).await? {
        Some(index) => {
            let entries = manifests_of(&index).ok_or_else(|| unusable("under the tag schema"))?;
            // Put back later as it is, under the type its bytes say.
            let Ok(Document::Index(index)) = Document::parse(index) else {
                return Err(unusable("under the tag schema"));
            };
            Ok((entries, Some(index.raw)))
        }
        None => Ok((Vec::new(), None)),
    }
}

/// The `manifests` of an index, every field of each kept.
fn manifests_of(index: &RawBlob) -> Option<Vec<serde_json::Value>> {
    let value: serde_json::Value = serde_json::from_slice(&index.bytes).ok()?;
    let manifests = value.get("manifests")?.as_array()?.clone();
    manifests.iter().all(|m| m.get("digest").is_some_and(serde_json::Value::is_string)).then_some(manifests)
}

fn entry_digest(name: &str, entry: &serde_json::Value) -> Result<Digest, CopyError> {
    let text = entry.get("digest").and_then(serde_json::Value::as_str).unwrap_or_default();
    Digest::parse(text).map_err(|e| CopyError::Unusable { reference: name.into(), reason: format!("a referrer: {e}") })
}

/// The tag-schema tag for `subject`: `sha256-<hex>`.
fn schema_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// An OCI index of `kept` then `added` descriptors, as the tag schema stores them.
fn schema_index(kept: Vec<serde_json::Value>, added: &[serde_json::Value]) -> RawBlob {
    let mut manifests = kept;
    manifests.extend(added.iter().cloned());
    let document = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": manifests,
    });
    RawBlob::new(media_type::OCI_INDEX, serde_json::to_vec(&document).expect("JSON values serialise"))
}

/// `existing` with the referrers it lacks added; `None` when it lacks none.
fn merged(existing: &RawBlob, entries: &[serde_json::Value]) -> Option<RawBlob> {
    let kept = manifests_of(existing).unwrap_or_default();
    let has = |entry: &serde_json::Value| kept.iter().any(|k| k.get("digest") == entry.get("digest"));
    let missing: Vec<serde_json::Value> = entries.iter().filter(|e| !has(e)).cloned().collect();
    (!missing.is_empty()).then(|| schema_index(kept, &missing))
}

/// What every blob copy shares.
struct BlobContext<'a> {
    source: &'a Repository,
    target: &'a Repository,
    /// The source reference, for messages.
    name: &'a str,
    /// The source repository, when it is on the destination's registry.
    mount_from: Option<String>,
    options: &'a CopyOptions,
    run: &'a PushRun,
}

/// Copies every blob of `graph`, `jobs` at once, largest first.
async fn copy_blobs(graph: &Graph, context: &BlobContext<'_>) -> Result<HashMap<Digest, BlobReport>, CopyError> {
    let reporter = context.run.reporter();
    let mut blobs = graph.blobs.clone();
    blobs.sort_by_key(|b| std::cmp::Reverse(b.size));
    reporter.push_planned(blobs.len(), blobs.iter().map(|b| b.size).sum());
    let jobs = Arc::new(Semaphore::new(context.options.jobs.max(1)));
    let upload = UploadOptions {
        mount_from: context.mount_from.clone(),
        chunk_size: context.options.chunk_size,
        track: Some(context.run.uploads().clone()),
        ..UploadOptions::default()
    };
    let mut tasks = JoinSet::new();
    for blob in blobs {
        let (jobs, reporter, upload) = (Arc::clone(&jobs), Arc::clone(reporter), upload.clone());
        let (source, target, name) = (context.source.clone(), context.target.clone(), context.name.to_owned());
        tasks.spawn(async move {
            let _permit = jobs.acquire_owned().await.map_err(|_| CopyError::Internal("the job limit closed".into()))?;
            let started = Instant::now();
            reporter.blob_started(&blob.digest, target.name(), blob.size);
            let progress = {
                let (reporter, id) = (Arc::clone(&reporter), blob.digest.clone());
                Box::new(move |bytes| reporter.blob_progress(&id, bytes))
            };
            let from = RegistryBlob::new(source, blob.digest.clone(), blob.size).with_progress(progress);
            let outcome = target.upload_blob(&from, &upload).await.map_err(|error| match error {
                UploadError::Registry(error) => CopyError::Registry(error),
                // The source's own error says more than the upload it broke.
                UploadError::Source(error) => match from.take_failure() {
                    Some(failure) => download_error(failure, &name),
                    None => CopyError::Internal(format!("reading blob {}: {error}", blob.digest)),
                },
            })?;
            let action = BlobAction::from(outcome.action);
            if action != BlobAction::Uploaded {
                reporter.blob_progress(&blob.digest, blob.size);
            }
            reporter.blob_finished(&blob.digest, action, &blob.digest);
            Ok(BlobReport {
                digest: blob.digest,
                size: blob.size,
                media_type: blob.media_type,
                action,
                elapsed: started.elapsed(),
                compression: STORED.to_owned(),
                bytes_sent: outcome.bytes_sent,
                retries: outcome.retries,
            })
        });
    }
    let mut reports = HashMap::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(report)) => {
                reports.insert(report.digest.clone(), report);
            }
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
                tasks.abort_all();
            }
            Err(aborted) if aborted.is_cancelled() => {}
            Err(panicked) => {
                first_error.get_or_insert(CopyError::Internal(format!("a blob task failed: {panicked}")));
                tasks.abort_all();
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(reports),
    }
}

fn download_error(error: DownloadError, reference: &str) -> CopyError {
    match error {
        DownloadError::Registry(error) => CopyError::Registry(error),
        DownloadError::Digest { digest, actual, .. } => {
            CopyError::Corrupt { reference: reference.to_owned(), digest, actual }
        }
        DownloadError::TooLong { digest, size } => CopyError::TooLong { reference: reference.to_owned(), digest, size },
        DownloadError::Sink { digest, source } => {
            CopyError::Internal(format!("handing blob {digest} to its upload failed: {source}"))
        }
    }
}

/// Puts documents at the destination, recording every tag published.
struct Publisher<'a> {
    target: &'a Repository,
    untagged: &'a Reference,
    run: &'a PushRun,
    /// The tags still to publish, for the error if one fails.
    planned: Vec<Reference>,
    published: Vec<PushedImage>,
}

impl Publisher<'_> {
    /// A document by its digest: no tag moves.
    async fn by_digest(&mut self, document: &RawBlob) -> Result<(), CopyError> {
        let digest = self.put(&document.digest.to_string(), document).await?;
        self.run.reporter().manifest_pushed(&self.untagged.with_digest(digest.clone()), &digest);
        Ok(())
    }

    /// A document under `tag`: published.
    async fn tag(&mut self, tag: &str, document: &RawBlob, blobs: Vec<BlobReport>) -> Result<(), CopyError> {
        let reference = tagged(self.untagged, tag);
        let digest = self.put(tag, document).await?;
        self.run.reporter().manifest_pushed(&reference, &digest);
        self.planned.retain(|r| *r != reference);
        let image = PushedImage { reference, digest, blobs };
        self.run.record_published(image.clone());
        self.published.push(image);
        Ok(())
    }

    async fn put(&mut self, tag_or_digest: &str, document: &RawBlob) -> Result<Digest, CopyError> {
        self.target.put_copied_manifest(tag_or_digest, document).await.map_err(|error| {
            let cause = Box::new(CopyError::Registry(error));
            if self.published.is_empty() {
                *cause
            } else {
                CopyError::NotPublished { references: self.planned.clone(), cause }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> serde_json::Value {
        serde_json::json!({
            "mediaType": media_type::OCI_MANIFEST,
            "digest": Digest::of(&[n]).to_string(),
            "size": 10 + u64::from(n),
            "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
            "annotations": {"n": n.to_string()},
        })
    }

    #[test]
    fn tag_schema_indexes_keep_every_field_and_only_grow() {
        let first = schema_index(Vec::new(), &[entry(1)]);
        assert_eq!(manifests_of(&first).unwrap(), [entry(1)], "artifactType and annotations are kept");
        assert!(merged(&first, &[entry(1)]).is_none(), "nothing missing: left as it is");
        let grown = merged(&first, &[entry(2), entry(1)]).unwrap();
        assert_eq!(manifests_of(&grown).unwrap(), [entry(1), entry(2)]);
        assert!(manifests_of(&RawBlob::new("", br#"{"manifests":[{"size":1}]}"#.to_vec())).is_none());
    }

    #[test]
    fn the_root_goes_under_the_tag_else_the_digest() {
        let digest = Digest::of(b"m");
        let by_tag = Reference::parse("r.example/a/b:1").unwrap();
        assert_eq!(destination_tag(&by_tag), "1");
        let pinned = Reference::parse(&format!("r.example/a/b@{digest}")).unwrap();
        assert_eq!(destination_tag(&pinned), digest.to_string());
        assert_eq!(destination_tag(&Reference::parse("r.example/a/b").unwrap()), "latest");
        let untagged = Reference::parse("r.example/a/b").unwrap();
        assert_eq!(tagged(&untagged, &digest.to_string()).to_string(), format!("r.example/a/b@{digest}"));
        assert_eq!(tagged(&untagged, "sha256-abc.sig").to_string(), "r.example/a/b:sha256-abc.sig");
        assert!(is_foreign("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"));
        assert!(!is_foreign(media_type::OCI_LAYER_ZSTD));
    }
}

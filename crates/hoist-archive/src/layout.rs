//! Finding images in an indexed archive, whatever tool wrote it.
//!
//! The readers here never touch a file: they ask a [`Members`] for entries by
//! name, so the same code serves a seekable file (positional reads) and a
//! stream (members kept in memory during the single pass).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use hoist_oci::document::{
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, ANNOTATION_REFERENCE_TYPE, sniff_media_type,
};
use hoist_oci::{Compression, Digest, ImageConfig, Platform, RawBlob, media_type};
use serde::Deserialize;

use crate::{ArchiveError, MAX_JSON_MEMBER, TarEntry, TarIndex};

/// Which tool's layout an archive has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save` up to Docker 24: `<id>/layer.tar`, `<config>.json`, `manifest.json`.
    DockerClassic,
    /// `docker save` from Docker 25: an OCI layout plus the compatibility `manifest.json`.
    DockerOciLayout,
    /// containers/image `docker-archive` (podman, skopeo): `<hex>.tar` layers at the top.
    DockerArchive,
    /// An OCI image layout with no `manifest.json` (buildx, skopeo `oci-archive:`).
    OciLayout,
}

impl ArchiveFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::DockerClassic => "docker-save-classic",
            Self::DockerOciLayout => "docker-save-oci",
            Self::DockerArchive => "docker-archive",
            Self::OciLayout => "oci-layout",
        }
    }
}

impl fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One layer of an image, located in the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The entry holding the bytes, after links are followed.
    pub entry: String,
    /// Where the bytes start in the (uncompressed) tar stream.
    pub offset: u64,
    /// Stored size in bytes (compressed if the archive stores it compressed).
    pub size: u64,
    /// The digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    pub compression: Compression,
    /// The digest of the stored bytes, when the archive names it (OCI layouts:
    /// `blobs/sha256/<hex>`). Pushing these bytes as they are keeps it.
    pub digest: Option<Digest>,
    /// The media type the archive's own manifest gives the layer, if any.
    pub media_type: Option<String>,
}

/// One image: its tags, its config (exact bytes) and its layers in order.
#[derive(Clone, Debug)]
pub struct Image {
    /// Full names (`name:tag`, docker's short form for Docker Hub).
    pub tags: Vec<String>,
    /// `org.opencontainers.image.ref.name` values that are not full names
    /// (often just a tag such as `1.0`): shown, but never pushed to.
    pub ref_names: Vec<String>,
    pub config: RawBlob,
    pub platform: Platform,
    pub layers: Vec<Layer>,
    /// The archive's own manifest (OCI layouts), exact bytes: pushing it
    /// unchanged keeps the image's digest.
    pub manifest: Option<RawBlob>,
}

/// What the layout readers need from an archive: the index of its entries
/// and the bytes of small members.
pub(crate) trait Members {
    /// The archive's name for messages (a path, or `-` for standard input).
    fn label(&self) -> &Path;
    fn index(&self) -> &TarIndex;
    /// The bytes of the regular-file entry `name` (links already followed),
    /// at most [`MAX_JSON_MEMBER`] of them.
    fn small(&self, name: &str, entry: &TarEntry) -> Result<Vec<u8>, ArchiveError>;
    /// How the entry's bytes are stored.
    fn compression(&self, name: &str, entry: &TarEntry) -> Result<Compression, ArchiveError>;
}

fn bad_entry(m: &dyn Members, entry: &str, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::BadEntry { path: m.label().to_owned(), entry: entry.to_owned(), reason: reason.into() }
}

/// A member path named by `manifest.json` must stay inside the archive.
fn check_member_path(m: &dyn Members, document: &str, name: &str) -> Result<(), ArchiveError> {
    if name.starts_with('/') || name.split('/').any(|part| part == "..") {
        return Err(bad_entry(m, name, format!("{document} names a path outside the archive")));
    }
    Ok(())
}

/// Reads a JSON member by name, following links, refusing oversized ones.
fn read_member(m: &dyn Members, name: &str) -> Result<(String, Vec<u8>), ArchiveError> {
    let (resolved, entry) = m.index().resolve(name, m.label())?;
    if entry.size > MAX_JSON_MEMBER {
        return Err(bad_entry(
            m,
            &resolved,
            format!("it is {} bytes; JSON members over {MAX_JSON_MEMBER} bytes are refused", entry.size),
        ));
    }
    let bytes = m.small(&resolved, entry)?;
    Ok((resolved, bytes))
}

/// Finds every image: through `index.json` when the archive has one (it
/// keeps the original manifests and compressed blobs), else `manifest.json`.
pub(crate) fn discover(m: &dyn Members) -> Result<(ArchiveFormat, Vec<Image>), ArchiveError> {
    let index = m.index();
    let docker = if index.get("manifest.json").is_some() { Some(read_docker_manifest(m)?) } else { None };
    if index.get("index.json").is_some() {
        let format = if docker.is_some() { ArchiveFormat::DockerOciLayout } else { ArchiveFormat::OciLayout };
        let images = read_oci_layout(m, docker.as_deref())?;
        if !images.is_empty() {
            return Ok((format, images));
        }
        tracing::debug!("index.json names no image; reading manifest.json instead");
    }
    let Some(entries) = docker else {
        return Err(if index.get("index.json").is_some() {
            ArchiveError::NoImages { path: m.label().to_owned() }
        } else {
            ArchiveError::NoManifest { path: m.label().to_owned() }
        });
    };
    let format = if entries.iter().flat_map(|e| &e.layers).any(|l| l.ends_with("/layer.tar")) {
        ArchiveFormat::DockerClassic
    } else {
        ArchiveFormat::DockerArchive
    };
    let images: Vec<Image> = entries
        .into_iter()
        .enumerate()
        .map(|(number, entry)| read_docker_image(m, number + 1, entry))
        .collect::<Result<_, _>>()?;
    if images.is_empty() {
        return Err(ArchiveError::NoImages { path: m.label().to_owned() });
    }
    Ok((format, images))
}

// ---- docker save / docker-archive: manifest.json ----

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn read_docker_manifest(m: &dyn Members) -> Result<Vec<ManifestEntry>, ArchiveError> {
    let (_, bytes) = read_member(m, "manifest.json")?;
    let entries: Vec<ManifestEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| bad_entry(m, "manifest.json", format!("it is not a docker save manifest ({e})")))?;
    for entry in &entries {
        check_member_path(m, "manifest.json", &entry.config)?;
        for layer in &entry.layers {
            check_member_path(m, "manifest.json", layer)?;
        }
    }
    Ok(entries)
}

fn read_docker_image(m: &dyn Members, number: usize, entry: ManifestEntry) -> Result<Image, ArchiveError> {
    let inconsistent =
        |reason: String| ArchiveError::Inconsistent { path: m.label().to_owned(), image: number, reason };
    let (_, config_bytes) = read_member(m, &entry.config)?;
    let config = RawBlob::new(media_type::DOCKER_CONFIG, config_bytes);
    if let Some(named) = digest_in_name(&entry.config)
        && named != config.digest
    {
        return Err(inconsistent(format!(
            "config `{}` hashes to {}, not to the digest in its name",
            entry.config, config.digest
        )));
    }
    let view = ImageConfig::parse(&config.bytes).map_err(|e| bad_entry(m, &entry.config, e.to_string()))?;
    if view.diff_ids.len() != entry.layers.len() {
        return Err(inconsistent(format!(
            "manifest.json lists {} layers but the config's rootfs.diff_ids has {}",
            entry.layers.len(),
            view.diff_ids.len()
        )));
    }
    let layers = entry
        .layers
        .iter()
        .zip(view.diff_ids)
        .map(|(name, diff_id)| {
            let (resolved, tar_entry) = m.index().resolve(name, m.label())?;
            Ok(Layer {
                compression: m.compression(&resolved, tar_entry)?,
                entry: resolved,
                offset: tar_entry.offset,
                size: tar_entry.size,
                diff_id,
                digest: None,
                media_type: None,
            })
        })
        .collect::<Result<_, ArchiveError>>()?;
    Ok(Image {
        tags: entry.repo_tags.unwrap_or_default(),
        ref_names: Vec::new(),
        config,
        platform: view.platform,
        layers,
        manifest: None,
    })
}

/// `abc….json`, `sha256:abc…` or `blobs/sha256/abc…` name their own digest.
fn digest_in_name(name: &str) -> Option<Digest> {
    let file = name.rsplit('/').next()?;
    let hex = file.strip_suffix(".json").or_else(|| file.strip_prefix("sha256:")).unwrap_or(file);
    Digest::from_hex(hex).ok()
}

// ---- OCI image layout: index.json and blobs/sha256 ----

/// Indexes nest (Docker 25 with the containerd store writes index → index →
/// manifests); real ones are two deep, a hostile one must not recurse forever.
const MAX_INDEX_DEPTH: usize = 4;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciManifest {
    #[serde(default)]
    media_type: Option<String>,
    config: OciDescriptor,
    #[serde(default)]
    layers: Vec<OciDescriptor>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

/// Names found on the way down to a manifest.
#[derive(Clone, Default)]
struct Names {
    tags: Vec<String>,
    ref_names: Vec<String>,
}

impl Names {
    fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        let mut names = Self::default();
        if let Some(name) = annotations.get(ANNOTATION_CONTAINERD_NAME) {
            names.tags.push(familiar(name));
        }
        if let Some(name) = annotations.get(ANNOTATION_REF_NAME) {
            if name.contains(':') || name.contains('/') {
                let name = familiar(name);
                if !names.tags.contains(&name) {
                    names.tags.push(name);
                }
            } else {
                names.ref_names.push(name.clone());
            }
        }
        names
    }

    fn merge(&mut self, other: Self) {
        for tag in other.tags {
            if !self.tags.contains(&tag) {
                self.tags.push(tag);
            }
        }
        for name in other.ref_names {
            if !self.ref_names.contains(&name) {
                self.ref_names.push(name);
            }
        }
    }
}

/// `docker.io/library/busybox:1` → `busybox:1`, as docker shows RepoTags.
fn familiar(name: &str) -> String {
    let short = name.strip_prefix("docker.io/").unwrap_or(name);
    short.strip_prefix("library/").filter(|rest| !rest.contains('/')).unwrap_or(short).to_owned()
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Parses a descriptor's digest; anything but `sha256:<hex>` is refused, so
/// no digest can make a path outside `blobs/sha256`.
fn descriptor_digest(m: &dyn Members, document: &str, descriptor: &OciDescriptor) -> Result<Digest, ArchiveError> {
    Digest::parse(&descriptor.digest).map_err(|_| {
        bad_entry(
            m,
            document,
            format!(
                "it names the blob `{}`, which is not a sha256 digest (no path outside blobs/sha256 is read)",
                descriptor.digest
            ),
        )
    })
}

/// Reads a JSON blob and checks that it hashes to its digest.
fn read_json_blob(m: &dyn Members, digest: &Digest) -> Result<Vec<u8>, ArchiveError> {
    let path = blob_path(digest);
    let (resolved, bytes) = read_member(m, &path)?;
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(bad_entry(m, &resolved, format!("it hashes to {actual}, not to the digest in its name")));
    }
    Ok(bytes)
}

fn read_oci_layout(m: &dyn Members, docker: Option<&[ManifestEntry]>) -> Result<Vec<Image>, ArchiveError> {
    let (_, bytes) = read_member(m, "index.json")?;
    let index: OciIndex = serde_json::from_slice(&bytes)
        .map_err(|e| bad_entry(m, "index.json", format!("it is not an OCI image index ({e})")))?;
    let mut found: Vec<(Digest, Names, Image)> = Vec::new();
    for descriptor in &index.manifests {
        walk(m, "index.json", descriptor, Names::default(), 0, &mut found)?;
    }
    // `docker save` of Docker 25 also names each image in manifest.json: its
    // RepoTags are what users expect, so they come first.
    if let Some(entries) = docker {
        for entry in entries {
            let Some(config) = digest_in_name(&entry.config) else { continue };
            for (_, names, image) in &mut found {
                if image.config.digest == config {
                    let mut tags = Names { tags: entry.repo_tags.clone().unwrap_or_default(), ref_names: Vec::new() };
                    tags.merge(std::mem::take(names));
                    *names = tags;
                }
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|(_, names, mut image)| {
            image.tags = names.tags;
            image.ref_names = names.ref_names;
            image
        })
        .collect())
}

fn walk(
    m: &dyn Members,
    parent: &str,
    descriptor: &OciDescriptor,
    inherited: Names,
    depth: usize,
    found: &mut Vec<(Digest, Names, Image)>,
) -> Result<(), ArchiveError> {
    // buildx marks attestation manifests so; they are not images.
    if descriptor.annotations.contains_key(ANNOTATION_REFERENCE_TYPE) {
        tracing::debug!(digest = %descriptor.digest, "skipping an attestation manifest");
        return Ok(());
    }
    let digest = descriptor_digest(m, parent, descriptor)?;
    let mut names = inherited;
    names.merge(Names::from_annotations(&descriptor.annotations));
    let path = blob_path(&digest);
    if depth > 0 && m.index().get(&path).is_none() {
        // Multi-platform images are often saved with only the local platform's blobs.
        let platform = descriptor.platform.as_ref().map(ToString::to_string);
        tracing::debug!(%digest, platform = platform.as_deref().unwrap_or("unknown"), "platform not in the archive; skipped");
        return Ok(());
    }
    if let Some((_, known, _)) = found.iter_mut().find(|(d, _, _)| *d == digest) {
        known.merge(names);
        return Ok(());
    }
    let bytes = read_json_blob(m, &digest)?;
    // An entry without a media type: the document's own fields decide.
    let media = if descriptor.media_type.is_empty() {
        sniff_media_type(&bytes).unwrap_or_else(|| media_type::OCI_MANIFEST.to_owned())
    } else {
        descriptor.media_type.clone()
    };
    match media.as_str() {
        media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST => {
            if depth >= MAX_INDEX_DEPTH {
                return Err(bad_entry(m, &path, format!("indexes nest more than {MAX_INDEX_DEPTH} deep")));
            }
            let nested: OciIndex = serde_json::from_slice(&bytes)
                .map_err(|e| bad_entry(m, &path, format!("it is not an image index ({e})")))?;
            for child in &nested.manifests {
                walk(m, &path, child, names.clone(), depth + 1, found)?;
            }
        }
        media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => {
            let image = read_oci_image(m, &path, &media, bytes)?;
            found.push((digest, names, image));
        }
        other => tracing::debug!(%digest, media_type = other, "not an image manifest; skipped"),
    }
    Ok(())
}

fn read_oci_image(m: &dyn Members, path: &str, media: &str, bytes: Vec<u8>) -> Result<Image, ArchiveError> {
    let manifest: OciManifest =
        serde_json::from_slice(&bytes).map_err(|e| bad_entry(m, path, format!("it is not an image manifest ({e})")))?;
    let config_digest = descriptor_digest(m, path, &manifest.config)?;
    let config_bytes = read_json_blob(m, &config_digest)?;
    let config_media =
        if manifest.config.media_type.is_empty() { media_type::OCI_CONFIG } else { &manifest.config.media_type };
    let config = RawBlob::new(config_media, config_bytes);
    let config_path = blob_path(&config_digest);
    let view = ImageConfig::parse(&config.bytes).map_err(|e| bad_entry(m, &config_path, e.to_string()))?;
    if view.diff_ids.len() != manifest.layers.len() {
        return Err(bad_entry(
            m,
            path,
            format!(
                "the manifest lists {} layers but the config's rootfs.diff_ids has {}",
                manifest.layers.len(),
                view.diff_ids.len()
            ),
        ));
    }
    let layers = manifest
        .layers
        .iter()
        .zip(view.diff_ids)
        .map(|(descriptor, diff_id)| {
            let digest = descriptor_digest(m, path, descriptor)?;
            let (resolved, entry) = m.index().resolve(&blob_path(&digest), m.label())?;
            if entry.size != descriptor.size {
                return Err(bad_entry(
                    m,
                    &resolved,
                    format!("it is {} bytes but the manifest says {}", entry.size, descriptor.size),
                ));
            }
            Ok(Layer {
                compression: m.compression(&resolved, entry)?,
                entry: resolved,
                offset: entry.offset,
                size: entry.size,
                diff_id,
                digest: Some(digest),
                media_type: Some(descriptor.media_type.clone()).filter(|t| !t.is_empty()),
            })
        })
        .collect::<Result<_, ArchiveError>>()?;
    let media = manifest.media_type.as_deref().unwrap_or(media);
    Ok(Image {
        tags: Vec::new(),
        ref_names: Vec::new(),
        config,
        platform: view.platform,
        layers,
        manifest: Some(RawBlob::new(media, bytes)),
    })
}

#[cfg(test)]
mod tests {
    use super::familiar;

    #[test]
    fn familiar_names_drop_docker_hub_prefixes() {
        assert_eq!(familiar("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(familiar("docker.io/user/app:2"), "user/app:2");
        assert_eq!(familiar("registry.example/app:3"), "registry.example/app:3");
    }
}

//! Parsed views of manifests and indexes, each keeping the exact bytes it
//! was read from: a digest is the hash of those bytes, so hoist never
//! re-serialises a document it did not write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Descriptor, OciError, Platform, RawBlob, media_type};

/// The annotation buildx puts on attestation manifests in an index.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The full name of an image in an OCI layout's `index.json` (containerd, Docker 25).
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI name annotation: a tag (Docker 25 writes just that) or a full name.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image manifest (Docker v2 schema 2 or OCI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The document as read; `raw.media_type` is its resolved media type.
    pub raw: RawBlob,
}

/// An OCI image index or a Docker manifest list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageIndex {
    pub manifests: Vec<IndexEntry>,
    pub raw: RawBlob,
}

/// A descriptor in an index: what it points at, for which platform, and its annotations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    #[serde(flatten)]
    pub descriptor: Descriptor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest or an index, told apart by media type (or, where a registry or
/// layout gives none, by the document's own fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    Manifest(ImageManifest),
    Index(ImageIndex),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    config: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RawManifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

impl Document {
    /// Parses `raw`, whose `media_type` is what the registry or layout said
    /// (may be empty or generic). The returned view's `raw.media_type` is
    /// the resolved type; the bytes and digest are unchanged.
    pub fn parse(raw: RawBlob) -> Result<Self, OciError> {
        let digest = raw.digest.to_string();
        let invalid = |reason: String| OciError::InvalidDocument { digest: digest.clone(), reason };
        let probe: Probe = serde_json::from_slice(&raw.bytes).map_err(|e| invalid(format!("it is not JSON ({e})")))?;
        if probe.schema_version == Some(1)
            || raw.media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
        {
            return Err(invalid(
                "it is a Docker schema 1 manifest, which is deprecated and not supported; push the image again with a \
                 current client"
                    .into(),
            ));
        }
        let stated = [raw.media_type.as_str(), probe.media_type.as_deref().unwrap_or_default()];
        let known = stated.into_iter().find(|t| {
            [
                media_type::OCI_INDEX,
                media_type::DOCKER_MANIFEST_LIST,
                media_type::OCI_MANIFEST,
                media_type::DOCKER_MANIFEST,
            ]
            .contains(t)
        });
        let resolved = match known {
            Some(t) => t.to_owned(),
            None if probe.manifests.is_some() => media_type::OCI_INDEX.to_owned(),
            None if probe.config.is_some() => media_type::OCI_MANIFEST.to_owned(),
            None => return Err(invalid(format!("`{}` is neither an image manifest nor an index", raw.media_type))),
        };
        let raw = RawBlob { media_type: resolved, ..raw };
        if is_index(&raw.media_type) {
            let index: RawIndex =
                serde_json::from_slice(&raw.bytes).map_err(|e| invalid(format!("it is not a valid index ({e})")))?;
            Ok(Self::Index(ImageIndex { manifests: index.manifests, raw }))
        } else {
            let manifest: RawManifest =
                serde_json::from_slice(&raw.bytes).map_err(|e| invalid(format!("it is not a valid manifest ({e})")))?;
            Ok(Self::Manifest(ImageManifest { config: manifest.config, layers: manifest.layers, raw }))
        }
    }

    pub fn raw(&self) -> &RawBlob {
        match self {
            Self::Manifest(m) => &m.raw,
            Self::Index(i) => &i.raw,
        }
    }
}

/// The media type a document's own fields give it: its `mediaType`, else an
/// index if it has `manifests`, else a manifest if it has `config`; `None`
/// for what is none of these (or not JSON). For layouts and registries that
/// name no type.
pub fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    match probe {
        Probe { media_type: Some(media), .. } => Some(media),
        Probe { manifests: Some(_), .. } => Some(media_type::OCI_INDEX.to_owned()),
        Probe { config: Some(_), .. } => Some(media_type::OCI_MANIFEST.to_owned()),
        _ => None,
    }
}

/// An OCI index or a Docker manifest list.
pub fn is_index(media: &str) -> bool {
    media == media_type::OCI_INDEX || media == media_type::DOCKER_MANIFEST_LIST
}

impl IndexEntry {
    /// An entry for `descriptor` with no platform and no annotations.
    pub fn new(descriptor: Descriptor) -> Self {
        Self { descriptor, platform: None, annotations: BTreeMap::new() }
    }

    /// buildx attestations (in-toto provenance, SBOMs): never an image to run.
    pub fn is_attestation(&self) -> bool {
        self.annotations.contains_key(ANNOTATION_REFERENCE_TYPE)
            || self.platform.as_ref().is_some_and(Platform::is_unknown)
    }

    /// Whether it points at an image manifest (not a nested index or an artifact).
    pub fn is_image_manifest(&self) -> bool {
        let media = self.descriptor.media_type.as_str();
        media.is_empty() || media == media_type::OCI_MANIFEST || media == media_type::DOCKER_MANIFEST
    }
}

impl ImageIndex {
    /// The image manifests an index offers, by platform; attestations left out.
    pub fn platforms(&self) -> Vec<Platform> {
        self.images().filter_map(|e| e.platform.clone()).collect()
    }

    fn images(&self) -> impl Iterator<Item = &IndexEntry> {
        self.manifests.iter().filter(|e| e.is_image_manifest() && !e.is_attestation())
    }

    /// The entry for `wanted`, chosen as containerd does ([`Platform::choose`]).
    pub fn choose(&self, wanted: &Platform) -> Option<&IndexEntry> {
        wanted.choose(self.images().filter_map(|e| e.platform.as_ref().map(|p| (p, e))))
    }
}

/// Writes an OCI image index (an OCI layout's `index.json`).
#[derive(Debug, Default)]
pub struct IndexBuilder {
    manifests: Vec<IndexEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexDocument<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: &'a [IndexEntry],
}

impl IndexBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn entry(mut self, entry: IndexEntry) -> Self {
        self.manifests.push(entry);
        self
    }

    pub fn build(self) -> RawBlob {
        let document =
            IndexDocument { schema_version: 2, media_type: media_type::OCI_INDEX, manifests: &self.manifests };
        let bytes = serde_json::to_vec(&document).expect("an index of strings and numbers always serialises");
        RawBlob::new(media_type::OCI_INDEX, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    fn digest(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    fn index_json() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": [
                {"mediaType": media_type::OCI_MANIFEST, "digest": digest(1), "size": 10,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": media_type::OCI_MANIFEST, "digest": digest(2), "size": 11,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": media_type::OCI_MANIFEST, "digest": digest(3), "size": 12,
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                 "vnd.docker.reference.digest": digest(1)}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn an_index_keeps_its_bytes_and_chooses_platforms() {
        let bytes = index_json();
        let Document::Index(index) = Document::parse(RawBlob::new("", bytes.clone())).unwrap() else {
            panic!("an index")
        };
        assert_eq!(index.raw.bytes, bytes);
        assert_eq!(index.raw.digest, Digest::of(&bytes));
        assert_eq!(index.raw.media_type, media_type::OCI_INDEX);
        let shown: Vec<String> = index.platforms().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["linux/amd64", "linux/arm64/v8"]);
        let arm = index.choose(&Platform::parse("linux/arm64").unwrap()).unwrap();
        assert_eq!(arm.descriptor.digest.to_string(), digest(2));
        assert!(index.manifests[2].is_attestation());
        assert!(index.choose(&Platform::parse("unknown/unknown").unwrap()).is_none());
        assert!(index.choose(&Platform::parse("linux/s390x").unwrap()).is_none());
    }

    #[test]
    fn manifests_are_told_by_content_when_the_type_is_generic() {
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": media_type::OCI_CONFIG, "digest": digest(1), "size": 2},
            "layers": [{"mediaType": media_type::OCI_LAYER_ZSTD, "digest": digest(2), "size": 3}]
        }))
        .unwrap();
        let Document::Manifest(manifest) = Document::parse(RawBlob::new("application/json", bytes)).unwrap() else {
            panic!("a manifest")
        };
        assert_eq!(manifest.raw.media_type, media_type::OCI_MANIFEST);
        assert_eq!(manifest.layers[0].size, 3);
        let docker = RawBlob::new(media_type::DOCKER_MANIFEST_LIST, br#"{"schemaVersion":2,"manifests":[]}"#.to_vec());
        assert!(matches!(Document::parse(docker), Ok(Document::Index(_))));
    }

    #[test]
    fn schema1_and_garbage_are_refused() {
        let schema1 = RawBlob::new(
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            br#"{"schemaVersion":1}"#.to_vec(),
        );
        assert!(Document::parse(schema1).unwrap_err().to_string().contains("schema 1"));
        assert!(Document::parse(RawBlob::new("", b"<html>".to_vec())).is_err());
        assert!(Document::parse(RawBlob::new("", b"{}".to_vec())).is_err());
    }

    #[test]
    fn built_indexes_round_trip() {
        let mut entry = IndexEntry::new(Descriptor {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: Digest::of(b"m"),
            size: 1,
        });
        entry.annotations.insert(ANNOTATION_REF_NAME.into(), "1.0".into());
        let built = IndexBuilder::new().entry(entry.clone()).build();
        let Document::Index(index) = Document::parse(built).unwrap() else { panic!("an index") };
        assert_eq!(index.manifests, [entry]);
    }
}

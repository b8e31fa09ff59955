use serde::{Deserialize, Serialize};

use crate::Digest;
use crate::media_type;

/// A document or blob as exact bytes, with its digest and media type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawBlob {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

impl RawBlob {
    pub fn new(media_type: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self { media_type: media_type.into(), digest: Digest::of(&bytes), bytes }
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor { media_type: self.media_type.clone(), digest: self.digest.clone(), size: self.size() }
    }
}

/// A content descriptor as it appears in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// Which family of media types a pushed image uses. They are never mixed in
/// one manifest: podman and others refuse such manifests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ManifestFormat {
    /// Docker v2 schema 2: what `docker push` writes; accepted everywhere.
    #[default]
    Docker,
    Oci,
}

impl ManifestFormat {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Self::Docker => media_type::DOCKER_MANIFEST,
            Self::Oci => media_type::OCI_MANIFEST,
        }
    }

    pub fn config_media_type(self) -> &'static str {
        match self {
            Self::Docker => media_type::DOCKER_CONFIG,
            Self::Oci => media_type::OCI_CONFIG,
        }
    }

    /// The layer media type for gzip-compressed (`gzip = true`) or plain tar layers.
    pub fn layer_media_type(self, gzip: bool) -> &'static str {
        match (self, gzip) {
            (Self::Docker, true) => media_type::DOCKER_LAYER_GZIP,
            (Self::Docker, false) => media_type::DOCKER_LAYER,
            (Self::Oci, true) => media_type::OCI_LAYER_GZIP,
            (Self::Oci, false) => media_type::OCI_LAYER,
        }
    }
}

/// Writes an image manifest once, so that its digest, size and the bytes
/// sent are the same bytes.
#[derive(Debug)]
pub struct ManifestBuilder {
    format: ManifestFormat,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDocument<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
}

impl ManifestBuilder {
    pub fn new(format: ManifestFormat, config: Descriptor) -> Self {
        Self { format, config, layers: Vec::new() }
    }

    #[must_use]
    pub fn layer(mut self, layer: Descriptor) -> Self {
        self.layers.push(layer);
        self
    }

    pub fn build(self) -> RawBlob {
        let media_type = self.format.manifest_media_type();
        let document = ManifestDocument { schema_version: 2, media_type, config: &self.config, layers: &self.layers };
        let bytes = serde_json::to_vec_pretty(&document).expect("a manifest of strings and numbers always serialises");
        RawBlob::new(media_type, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_manifest_has_the_schema2_shape() {
        let config = RawBlob::new(media_type::DOCKER_CONFIG, b"{}".to_vec());
        let layer = Descriptor { media_type: media_type::DOCKER_LAYER_GZIP.into(), digest: Digest::of(b"x"), size: 1 };
        let manifest = ManifestBuilder::new(ManifestFormat::Docker, config.descriptor()).layer(layer).build();
        let value: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
        assert_eq!(value["schemaVersion"], 2);
        assert_eq!(value["mediaType"], media_type::DOCKER_MANIFEST);
        assert_eq!(value["config"]["digest"], config.digest.to_string());
        assert_eq!(value["layers"][0]["size"], 1);
        assert_eq!(manifest.digest, Digest::of(&manifest.bytes));
    }
}

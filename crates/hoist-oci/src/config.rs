use serde::Deserialize;

use crate::{Digest, OciError, Platform};

/// The fields of an image config that hoist needs. The config itself always
/// travels as its original bytes; this is only a view of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageConfig {
    pub diff_ids: Vec<Digest>,
    pub platform: Platform,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    rootfs: RawRootfs,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl ImageConfig {
    /// Reads the view from a config's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, OciError> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| OciError::InvalidConfig(e.to_string()))?;
        if raw.rootfs.kind != "layers" {
            return Err(OciError::InvalidConfig(format!("rootfs.type is `{}`, expected `layers`", raw.rootfs.kind)));
        }
        let diff_ids = raw
            .rootfs
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d).map_err(|e| OciError::InvalidConfig(format!("rootfs.diff_ids: {e}"))))
            .collect::<Result<_, _>>()?;
        Ok(Self { diff_ids, platform: Platform { os: raw.os, architecture: raw.architecture, variant: raw.variant } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_diff_ids_and_platform() {
        let d = format!("sha256:{}", "1".repeat(64));
        let json = format!(
            r#"{{"architecture":"arm64","variant":"v8","os":"linux","rootfs":{{"type":"layers","diff_ids":["{d}"]}},"config":{{"ExposedPorts":{{"80/tcp":{{}}}}}}}}"#
        );
        let config = ImageConfig::parse(json.as_bytes()).unwrap();
        assert_eq!(config.diff_ids.len(), 1);
        assert_eq!(config.platform.to_string(), "linux/arm64/v8");
    }

    #[test]
    fn refuses_configs_without_rootfs_or_with_bad_digests() {
        assert!(ImageConfig::parse(b"{}").is_err());
        assert!(ImageConfig::parse(br#"{"rootfs":{"type":"layers","diff_ids":["md5:x"]}}"#).is_err());
        assert!(ImageConfig::parse(b"not json").is_err());
    }
}

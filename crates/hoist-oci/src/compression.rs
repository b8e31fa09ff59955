//! How a layer's bytes are compressed: told by magic bytes or by media type.
//!
//! One type for every crate: the archive reader sniffs stored layers with it,
//! push decides what to re-encode with it, and pull decides what Docker can
//! load with it.

use std::fmt;

/// The compression of a layer blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    /// Tells gzip and zstd by their magic bytes; anything else is taken as plain.
    pub fn sniff(magic: &[u8]) -> Self {
        match magic {
            [0x1f, 0x8b, ..] => Self::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::Zstd,
            _ => Self::None,
        }
    }

    /// What a layer media type says: `…tar+gzip`/`…tar.gzip` is gzip, `…+zstd`
    /// zstd, `…tar` plain; `None` for a type that names no layer tar (an
    /// artifact's blob, an attestation).
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        // Foreign (non-distributable) layers have the same suffixes.
        let (_, suffix) = media_type.rsplit_once(['+', '.'])?;
        match suffix.to_ascii_lowercase().as_str() {
            "gzip" => Some(Self::Gzip),
            "zstd" => Some(Self::Zstd),
            "tar" => Some(Self::None),
            _ => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_type;

    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(Compression::sniff(b"ustar"), Compression::None);
        assert_eq!(Compression::sniff(&[]), Compression::None);
    }

    #[test]
    fn reads_layer_media_types() {
        assert_eq!(Compression::from_media_type(media_type::DOCKER_LAYER_GZIP), Some(Compression::Gzip));
        assert_eq!(Compression::from_media_type(media_type::OCI_LAYER_GZIP), Some(Compression::Gzip));
        assert_eq!(Compression::from_media_type(media_type::OCI_LAYER_ZSTD), Some(Compression::Zstd));
        assert_eq!(Compression::from_media_type(media_type::OCI_LAYER), Some(Compression::None));
        assert_eq!(Compression::from_media_type(media_type::DOCKER_LAYER), Some(Compression::None));
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::from_media_type("application/vnd.in-toto+json"), None);
    }
}

use std::path::PathBuf;

use hoist_oci::Digest;

/// Why an archive could not be read. Every variant names the archive, and the
/// entry where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("`{path}` is empty")]
    Empty { path: PathBuf },
    #[error("`{path}` is not a tar archive{detail}")]
    NotTar { path: PathBuf, detail: String },
    #[error("`{path}` is {compression}-compressed; it can only be read as a stream")]
    Compressed { path: PathBuf, compression: &'static str },
    #[error("`{path}` is truncated: entry `{entry}` needs {needed} bytes but the file has {available}")]
    Truncated { path: PathBuf, entry: String, needed: u64, available: u64 },
    #[error("`{path}` has no `manifest.json` or `index.json`, so it is not an image archive")]
    NoManifest { path: PathBuf },
    #[error("`{path}`: entry `{entry}` is not valid: {reason}")]
    BadEntry { path: PathBuf, entry: String, reason: String },
    #[error("`{path}`: `{entry}` is referenced but not in the archive")]
    MissingEntry { path: PathBuf, entry: String },
    #[error("`{path}`: image {image} is inconsistent: {reason}")]
    Inconsistent { path: PathBuf, image: usize, reason: String },
    #[error("`{path}` holds no images")]
    NoImages { path: PathBuf },
    #[error("`{path}` has more than {limit} entries; image archives hold a few per layer")]
    TooManyEntries { path: PathBuf, limit: usize },
    #[error("`{path}`: cannot read entry `{entry}`: {source}")]
    LayerRead { path: PathBuf, entry: String, source: std::io::Error },
    #[error("`{path}`: cannot read past its last entry: {source}")]
    Trailer { path: PathBuf, source: std::io::Error },
    #[error("`{path}`: entry `{entry}` does not match: {what} is {actual}, but the archive says {expected}")]
    Mismatch { path: PathBuf, entry: String, what: &'static str, expected: Digest, actual: Digest },
    /// A [`crate::LayerVisitor`] failed; its own error is the source.
    #[error("`{path}`: entry `{entry}`: {source}")]
    Visitor { path: PathBuf, entry: String, source: Box<dyn std::error::Error + Send + Sync> },
}

impl ArchiveError {
    /// A next step for the user, where one helps.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Io { .. } => "check the path and that you can read it".into(),
            Self::Empty { .. } | Self::Truncated { .. } => {
                "the archive was cut short; write it again (`docker save -o FILE IMAGE`)".into()
            }
            Self::NotTar { .. } | Self::NoManifest { .. } => {
                "give an archive written by `docker save`, `podman save` or `skopeo copy … docker-archive:`".into()
            }
            Self::Compressed { .. } => "decompress it first, e.g. `gunzip -k FILE` or `zstd -d FILE`".into(),
            Self::LayerRead { .. } | Self::Trailer { .. } => {
                "the archive is damaged or was cut short; save the image again".into()
            }
            Self::Mismatch { .. } => {
                "the layer's bytes were changed after the image was saved; save the image again".into()
            }
            Self::Visitor { .. } => return None,
            Self::BadEntry { .. } | Self::MissingEntry { .. } | Self::Inconsistent { .. } => {
                "the archive is damaged or was not written by a known tool; save the image again".into()
            }
            Self::NoImages { .. } => "the archive lists no images; save at least one image".into(),
            Self::TooManyEntries { .. } => {
                "an archive this large is not what `docker save` writes; if it is genuine, save fewer images per \
                 archive"
                    .into()
            }
        })
    }

    /// True when the archive reads fine but its content does not match its
    /// digests (a `--verify` failure), rather than being unreadable.
    pub fn is_verification(&self) -> bool {
        matches!(self, Self::Mismatch { .. })
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}

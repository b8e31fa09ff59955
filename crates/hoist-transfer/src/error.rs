use hoist_archive::ArchiveError;
use hoist_oci::{Digest, Reference};
use hoist_registry::RegistryError;

/// Why a push stopped. No tag was moved when this is returned, except those
/// published before a [`PushError::NotPublished`].
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("layer `{entry}` in `{archive}` hashes to {actual}, but the image config says {expected}")]
    DiffIdMismatch { archive: String, entry: String, expected: Digest, actual: Digest },
    #[error("cannot read layer `{entry}` in `{archive}`: {source}")]
    LayerRead { archive: String, entry: String, source: std::io::Error },
    /// Staging a streamed layer on disk, or placing it from there, failed.
    #[error("{0}")]
    Staging(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("image {image} of the archive has no tags and no destination was given")]
    NoDestination { image: usize },
    /// Every blob was in; putting these references' manifests failed
    /// (others may have been published: see `PushRun::published`).
    #[error("{cause}; not published: {}", join(references))]
    NotPublished { references: Vec<Reference>, cause: Box<PushError> },
}

fn join(references: &[Reference]) -> String {
    references.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl PushError {
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Archive(e) => e.hint(),
            Self::Registry(e) => e.hint(),
            Self::DiffIdMismatch { .. } | Self::LayerRead { .. } => {
                Some("the archive is corrupt; save the image again".into())
            }
            Self::NoDestination { .. } => {
                Some("name a destination: `hoist push ARCHIVE REGISTRY/REPOSITORY:TAG`".into())
            }
            Self::Staging(_) => {
                Some("give DEST so layers go straight to the registry, or point TMPDIR at a disk with room".into())
            }
            Self::Internal(_) => Some("this is a bug in hoist; please report it".into()),
            Self::NotPublished { cause, .. } => cause.hint(),
        }
    }
}

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
    /// What was asked cannot be done with this archive (no such image, an
    /// image without RepoTags and no destination): a usage error.
    #[error("{message}")]
    Plan { message: String, hint: String },
    #[error(transparent)]
    Reference(#[from] hoist_oci::OciError),
    /// A destination could not be made ready (see `Provision`); nothing
    /// was pushed.
    #[error(transparent)]
    Provision(#[from] crate::ProvisionError),
    /// Every blob was in; putting these references' manifests failed
    /// (others may have been published: see `PushRun::published`).
    #[error("{cause}; not published: {}", join(references))]
    NotPublished { references: Vec<Reference>, cause: Box<PushError> },
}

/// References as `a, b, c`, for messages.
pub(crate) fn join(references: &[Reference]) -> String {
    references.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl PushError {
    pub(crate) fn plan(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::Plan { message: message.into(), hint: hint.into() }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Archive(e) => e.hint(),
            Self::Registry(e) => e.hint(),
            Self::DiffIdMismatch { .. } | Self::LayerRead { .. } => {
                Some("the archive is corrupt; save the image again".into())
            }
            Self::Staging(_) => {
                Some("give DEST so layers go straight to the registry, or point TMPDIR at a disk with room".into())
            }
            Self::Internal(_) => Some("this is a bug in hoist; please report it".into()),
            Self::NotPublished { cause, .. } => cause.hint(),
            Self::Plan { hint, .. } => Some(hint.clone()),
            Self::Reference(_) => Some("write references as `host[:port]/path/name[:tag]`".into()),
            Self::Provision(e) => e.hint(),
        }
    }
}

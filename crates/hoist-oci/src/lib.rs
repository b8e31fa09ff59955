//! The vocabulary every other hoist crate speaks: image references, content
//! digests, media types, and the manifests hoist writes.
//!
//! Nothing here does I/O. Manifests and configs travel as their exact bytes
//! ([`RawBlob`]) plus a parsed view, because a digest is the hash of bytes:
//! re-serialising a foreign document through typed structs would change it.
//!
//! - [`Reference`] parses `host[:port]/path/name[:tag][@digest]` by docker's
//!   rules (`docker.io` and `library/` for short names).
//! - [`Digest`] is a validated `sha256:<hex>`; [`Sha256`] hashes streams.
//! - [`ImageConfig`] reads the few fields of an image config hoist needs.
//! - [`ManifestBuilder`] writes Docker v2 schema 2 or OCI image manifests,
//!   [`IndexBuilder`] an OCI index.
//! - [`Document`] parses a manifest or an index into a view that keeps its
//!   bytes; [`Platform`] chooses from an index as containerd does.
//! - [`Compression`] is the one compression type, told by magic bytes or
//!   media type.

mod compression;
mod config;
mod digest;
pub mod document;
mod manifest;
pub mod media_type;
mod platform;
mod reference;

pub use compression::Compression;
pub use config::ImageConfig;
pub use digest::{Digest, Sha256};
pub use document::{Document, ImageIndex, ImageManifest, IndexBuilder, IndexEntry};
pub use manifest::{Descriptor, ManifestBuilder, ManifestFormat, RawBlob};
pub use platform::Platform;
pub use reference::{Reference, RegistryTarget, host_without_port, is_loopback_host};

/// Why a reference, digest or document was refused.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("invalid digest `{value}`: {reason}")]
    InvalidDigest { value: String, reason: &'static str },
    #[error("invalid image reference `{value}`: {reason}")]
    InvalidReference { value: String, reason: String },
    #[error("invalid image config: {0}")]
    InvalidConfig(String),
    #[error("invalid platform `{value}`: {reason}")]
    InvalidPlatform { value: String, reason: String },
    #[error("document {digest} cannot be used: {reason}")]
    InvalidDocument { digest: String, reason: String },
}

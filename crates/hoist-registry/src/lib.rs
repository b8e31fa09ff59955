//! A client for the Docker Registry HTTP API v2 / OCI distribution spec.
//!
//! [`Client`] holds the connection pool and the options that apply to every
//! registry (plain HTTP, TLS, the [`RetryPolicy`] and a [`RetryObserver`]);
//! [`Client::repository`] gives a [`Repository`] handle that speaks the
//! protocol for one repository:
//!
//! - blobs up: [`Repository::upload_blob`] takes any [`BlobSource`] (bytes
//!   from any offset; digest known up front or at the end) and HEADs, mounts,
//!   or uploads monolithically, streamed or in chunks, falling back and
//!   resuming from the registry's offset when a proxy or the network fails
//!   (see `upload.rs`). [`Repository::push_blob`] is the in-memory shortcut.
//!   [`Repository::start_upload`] → [`Upload::send_stream`] →
//!   [`Upload::commit`] is the bare streamed protocol, without recovery;
//! - blobs down: [`Repository::download_blob`] (and `download_blob_to`, into
//!   any [`BlobSink`]) resumes with `Range` and verifies the digest;
//!   redirects to other hosts carry no credentials; a reader asks
//!   [`Client::repository_for_pull`] for a handle whose tokens ask only `pull`;
//! - manifests: [`Repository::put_manifest`] sends exact bytes with their
//!   media type as `Content-Type`; [`Repository::get_manifest`] and
//!   [`Repository::head_manifest`] ask for every manifest type hoist knows;
//!   all three check `Docker-Content-Digest` against the bytes' own digest,
//!   hold manifests to 4 MiB and refuse anything but a tag or a digest before
//!   any request; a PUT also refuses an image manifest that mixes Docker and
//!   OCI media types (see `manifest.rs`).
//!
//! Authentication is the client's business, not the caller's: every request
//! goes through one place that answers the registry's `401` challenges
//! (Basic, or bearer tokens cached per scope and renewed before they expire;
//! see [`auth`]) with credentials from a [`CredentialStore`] (flags, docker's
//! `config.json` and helpers, podman's `auth.json`; see [`credentials`]).
//! [`Repository::with_pull_scope`] widens a handle's tokens for a
//! cross-repository mount. TLS trust comes from the system, from
//! [`ClientOptions::ca_certs`] and from docker's `certs.d`
//! ([`ClientOptions::certs_dir`]), which can also hold a client certificate.
//! Every request passes through one place, `Repository::send`: it retries
//! 408, 429, 500, 502, 503, 504 and broken connections with capped, jittered
//! exponential backoff and `Retry-After`, never DENIED, UNAUTHORIZED or quota
//! errors, and tells the [`RetryObserver`] each time (the library never
//! prints). Session requests (PATCH, PUT) are sent once; the upload recovers
//! them itself.
//!
//! A `Warning: 299 - "text"` on any answer is logged once per distinct text
//! with `tracing::warn!` and changes nothing else (see `warning.rs`).
//!
//! Every error is a [`RegistryError`] that knows its kind (auth, not found,
//! retryable, …) and carries a hint. URLs in errors and logs go through
//! [`RedactedUrl`], which hides upload `_state` tokens and passwords.

pub mod auth;
mod client;
pub mod credentials;
mod error;
mod fetch;
mod manifest;
mod redact;
mod repository;
mod retry;
mod upload;
mod warning;

/// The header a registry names a blob's or manifest's digest in.
const DOCKER_CONTENT_DIGEST: &str = "Docker-Content-Digest";
/// The content type of blob bytes on the wire.
const OCTET_STREAM: &str = "application/octet-stream";

pub use auth::Scope;
pub use client::{Client, ClientOptions, DEFAULT_CERTS_DIR};
pub use credentials::{Credential, CredentialSource, CredentialStore, Secret};
pub use error::{Details, ErrorCode, ErrorKind, RegistryError};
pub use fetch::{BlobSink, DownloadError};
pub use manifest::{MAX_MANIFEST_SIZE, ManifestInfo};
pub use redact::RedactedUrl;
pub use repository::{BlobPush, Repository, Upload};
pub use retry::{RetryEvent, RetryObserver, RetryPolicy};
pub use upload::{
    BlobSource, BlobStream, BytesSource, DEFAULT_CHUNK_SIZE, UploadAction, UploadError, UploadOptions, UploadOutcome,
};

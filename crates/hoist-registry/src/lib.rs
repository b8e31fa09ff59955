//! A client for the Docker Registry HTTP API v2 / OCI distribution spec.
//!
//! [`Client`] holds the connection pool and the options that apply to every
//! registry (plain HTTP, TLS, time limits, the [`RetryPolicy`] and a
//! [`RetryObserver`]); [`Client::repository`] gives a [`Repository`] handle
//! that speaks the protocol for one repository:
//!
//! - blobs up, through one upload engine (`upload.rs`, its protocol steps in
//!   `session.rs`): [`Repository::upload_blob`] takes any [`BlobSource`]
//!   (bytes from any offset, or read once; digest known up front or at the
//!   end) and HEADs, mounts (asking for pull on the mount's source), or
//!   uploads monolithically, streamed or in chunks, falling back and resuming
//!   from the registry's offset when a proxy or the network fails;
//!   [`Repository::stage_blob`] stops before the commit and hands back a
//!   [`PendingBlob`] to commit or cancel later. Sessions opened for an
//!   [`OpenUploads`] can be cancelled by whoever stops the work midway;
//! - blobs down: [`Repository::download_blob`] (and `download_blob_to`, into
//!   any [`BlobSink`]) resumes with `Range` and verifies size and digest;
//!   redirects to other hosts carry no credentials; a reader asks
//!   [`Client::repository_for_pull`] for a handle whose tokens ask only `pull`;
//! - blobs across: a [`RegistryBlob`] is a [`BlobSource`] reading another
//!   repository (of any registry) with `Range` GETs, verified as they pass,
//!   so a copy streams from one registry into the upload engine of another;
//! - manifests: [`Repository::put_manifest`] sends exact bytes with their
//!   media type as `Content-Type`; [`Repository::get_manifest`] and
//!   [`Repository::head_manifest`] ask for every manifest type hoist knows;
//!   all three check `Docker-Content-Digest` against the bytes' own digest,
//!   hold manifests to 4 MiB and refuse anything but a tag or a digest before
//!   any request; a PUT also refuses an image manifest that mixes Docker and
//!   OCI media types (see `manifest.rs`), unless it is a copy
//!   ([`Repository::put_copied_manifest`]);
//! - referrers: [`Repository::referrers`] asks the OCI 1.1 referrers API,
//!   telling a registry without it (404) from an empty list.
//!
//! Authentication is the client's business, not the caller's: every request
//! goes through one place that answers the registry's `401` challenges
//! (Basic, or bearer tokens cached per scope and renewed before they expire;
//! see [`auth`]) with credentials from a [`CredentialStore`] (flags, docker's
//! `config.json` and helpers, podman's `auth.json`; see [`credentials`]).
//! TLS trust comes from the system, from [`ClientOptions::ca_certs`] and
//! from docker's `certs.d` ([`ClientOptions::certs_dir`]), which can also
//! hold a client certificate. Every request passes through
//! `Repository::send`: it retries 408, 429, 500, 502, 503, 504 and broken
//! or stalled connections with capped, jittered exponential backoff and
//! `Retry-After`, within a time budget, never DENIED, UNAUTHORIZED or quota
//! errors nor answers HTTP cannot parse, and tells the [`RetryObserver`]
//! each time (the library never prints). PATCH and PUT on a session are
//! never re-sent blindly; the upload engine recovers them itself.
//!
//! Nothing a registry does can hold hoist without bound (hoist-http's
//! `wire`): a request fails after [`ClientOptions::timeout`] without
//! progress, every answer is read chunk by chunk within it and up to a cap
//! (an error body: its first 16 KiB, within 5 s), and
//! [`Repository::for_lookup`] gives optional lookups one short attempt.
//!
//! The transport under it all (TLS trust, `certs.d`, proxies, retries and
//! those bounds) is hoist-http's, shared with hoist's other API clients;
//! this crate adds the distribution protocol and its authentication.
//!
//! A `Warning: 299 - "text"` on any answer is logged once per distinct text
//! with `tracing::warn!` and changes nothing else (hoist-http's `Warnings`).
//!
//! Every error is a [`RegistryError`] that knows its kind (auth, not found,
//! retryable, protocol, digest mismatch, local, …) and carries a hint. URLs
//! in errors and logs go through [`RedactedUrl`], which hides upload
//! `_state` tokens and passwords.

pub mod auth;
mod client;
pub mod credentials;
mod error;
mod fetch;
mod manifest;
mod referrers;
mod registry;
mod repository;
mod retry;
mod session;
mod source;
mod upload;
mod wire;

/// The header a registry names a blob's or manifest's digest in.
const DOCKER_CONTENT_DIGEST: &str = "Docker-Content-Digest";
/// The content type of blob bytes on the wire.
const OCTET_STREAM: &str = "application/octet-stream";

pub use auth::Scope;
pub use client::{Client, ClientOptions, Connection, DEFAULT_CERTS_DIR, DEFAULT_TIMEOUT};
pub use credentials::{Credential, CredentialSource, CredentialStore, Secret};
pub use error::{Details, ErrorCode, ErrorKind, RegistryError};
pub use fetch::{BlobSink, DownloadError};
pub use hoist_http::RedactedUrl;
pub use manifest::{MAX_MANIFEST_SIZE, ManifestInfo, mixed_families};
pub use registry::RegistryCheck;
pub use repository::Repository;
pub use retry::{RetryEvent, RetryObserver, RetryPolicy};
pub use source::{ProgressFn, RegistryBlob};
pub use upload::{
    BlobSource, BlobStream, BytesSource, DEFAULT_CHUNK_SIZE, OpenUploads, PendingBlob, Staged, UploadAction,
    UploadError, UploadOptions, UploadOutcome,
};

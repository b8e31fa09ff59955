//! A client for the Docker Registry HTTP API v2 / OCI distribution spec.
//!
//! [`Client`] holds the connection pool and the options that apply to every
//! registry (plain HTTP, TLS); [`Client::repository`] gives a [`Repository`]
//! handle that speaks the protocol for one repository:
//!
//! - blobs: [`Repository::blob_exists`] (HEAD), [`Repository::push_blob`]
//!   (monolithic POST + PUT for bodies whose digest is known), and
//!   [`Repository::start_upload`] → [`Upload::send_stream`] →
//!   [`Upload::commit`] for bodies whose digest is known only once they
//!   have been sent (one streamed PATCH, then a PUT with the digest);
//! - manifests: [`Repository::put_manifest`] sends exact bytes with their
//!   media type and checks the digest the registry reports.
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
//!
//! Every error is a [`RegistryError`] that knows its kind (auth, not found,
//! retryable, …) and carries a hint. URLs in errors and logs go through
//! [`RedactedUrl`], which hides upload `_state` tokens and passwords.

pub mod auth;
mod client;
pub mod credentials;
mod error;
mod fetch;
mod redact;
mod repository;

pub use auth::Scope;
pub use client::{Client, ClientOptions, DEFAULT_CERTS_DIR};
pub use credentials::{Credential, CredentialSource, CredentialStore, Secret};
pub use error::{Details, ErrorCode, ErrorKind, RegistryError};
pub use redact::RedactedUrl;
pub use repository::{BlobPush, Repository, Upload};

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
//! Every error is a [`RegistryError`] that knows its kind (auth, not found,
//! retryable, …) and carries a hint. URLs in errors and logs go through
//! [`RedactedUrl`], which hides upload `_state` tokens and passwords.

mod client;
mod error;
mod fetch;
mod redact;
mod repository;
mod retry;
mod upload;

pub use client::{Client, ClientOptions};
pub use error::{Details, ErrorCode, ErrorKind, RegistryError};
pub use redact::RedactedUrl;
pub use repository::{BlobPush, Repository, Upload};
pub use retry::{RetryEvent, RetryObserver, RetryPolicy};
pub use upload::{
    BlobSource, BlobStream, BytesSource, DEFAULT_CHUNK_SIZE, UploadAction, UploadError, UploadOptions, UploadOutcome,
};

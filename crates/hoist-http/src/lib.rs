//! hoist's HTTP transport, shared by every API client it has (the registry
//! client in `hoist-registry`, Harbor's REST API in `hoist-harbor`), which
//! each add their own authentication and errors on top:
//!
//! - [`Transport`]: reqwest pools built once from [`TransportOptions`] —
//!   the system's CA store (or the bundled Mozilla roots where there is
//!   none), extra CAs, docker's `certs.d` (CAs and client certificates per
//!   `host:port`), proxies from the environment (never for loopback), plain
//!   HTTP for loopback as docker does; [`Connection`] is the network flags
//!   every command shares;
//! - [`retry`]: [`RetryPolicy`], [`retry::with_retries`] (408, 429, 5xx and
//!   broken connections, capped jittered backoff, `Retry-After`, a time
//!   budget) and [`RetryEvent`]s for the caller's [`RetryObserver`];
//! - [`wire`]: the bounds on every exchange — a request fails after the
//!   timeout without progress, bodies are read chunk by chunk up to a cap,
//!   error bodies only their first 16 KiB within 5 s;
//! - [`RedactedUrl`]: URLs as they may appear in logs and errors;
//! - [`Warnings`]: `Warning: 299` headers, logged once per distinct text;
//! - [`Secret`]: a password or token whose `Debug` shows nothing.
//!
//! Failures below any API are [`HttpError`]s; each API crate converts them
//! into its own error type. The library never prints.

mod error;
mod redact;
pub mod retry;
mod secret;
mod transport;
mod warning;
pub mod wire;

pub use error::{HttpError, HttpErrorKind, body_excerpt, error_chain, error_entries};
pub use redact::RedactedUrl;
pub use retry::{RetryError, RetryEvent, RetryObserver, RetryPolicy};
pub use secret::{Secret, basic_authorization, sensitive_header};
pub use transport::{Connection, DEFAULT_CERTS_DIR, DEFAULT_TIMEOUT, Transport, TransportOptions};
pub use warning::Warnings;

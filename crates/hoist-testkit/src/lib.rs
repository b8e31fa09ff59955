//! Test support for hoist: real things to test against.
//!
//! - [`TestRegistry`] runs a real CNCF distribution registry (Debian's
//!   `docker-registry`) on a free loopback port with a generated config and
//!   throwaway storage, and stops it when dropped.
//! - [`fixtures`] builds image archives in memory, layout by layout.
//! - [`TestRegistry::builder`] configures it: htpasswd basic auth, token
//!   auth against a [`TokenIssuer`] (real signed JWTs), TLS with a
//!   [`TestCa`], and TLS requiring a client certificate.
//! - [`fault_proxy::FaultProxy`] sits in front of a registry and injects the
//!   faults of real networks and registry front ends, logging every request.
//! - [`tools`] wraps the independent checkers: skopeo and the Docker Engine.
//!
//! Missing tools fail the test with one line naming the package to install;
//! nothing is skipped silently.

#![allow(clippy::missing_panics_doc, clippy::print_stderr)] // test support panics on setup failure by design

pub mod fault_proxy;
pub mod fixtures;
pub mod harbor;
mod jwt;
mod registry;
pub mod tls;
pub mod token_issuer;
pub mod tools;

pub use fault_proxy::{Fault, FaultProxy, Rule};
pub use registry::{RegistryBuilder, TestRegistry};
pub use tls::TestCa;
pub use token_issuer::{IssuerConfig, TokenIssuer};

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// The bare hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

//! hoist-registry's integration tests, one binary grouped by area (each module says what it covers).

mod auth;
mod client;
mod manifest;
mod source;

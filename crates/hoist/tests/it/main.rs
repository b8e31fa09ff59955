//! The hoist binary against real registries, grouped by area.

mod auth;
mod cache;
mod docker;
mod errors;
mod inspect;
mod output;
mod push;
mod support;
mod tls;

//! The hoist binary against real registries, grouped by area.

mod archive_hostile;
mod archive_layouts;
mod auth;
mod cache;
mod compression;
mod copy;
mod docker;
mod errors;
mod faults;
mod harbor;
mod hostile;
mod inspect;
mod login;
mod media_types;
mod output;
mod pull;
mod push;
mod release;
mod serve;
mod signals;
mod stream;
mod support;
mod tls;

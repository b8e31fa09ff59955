//! The hoist binary against real registries, grouped by area.

mod cache;
mod docker;
mod errors;
mod faults;
mod inspect;
mod output;
mod push;
mod support;

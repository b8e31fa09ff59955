//! The hoist binary against real registries, grouped by area.

mod docker;
mod errors;
mod inspect;
mod push;
mod support;

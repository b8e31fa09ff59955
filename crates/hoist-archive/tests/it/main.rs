//! hoist-archive's integration tests, one binary grouped by area (each module says what it covers).

mod stream;
mod write;

//! Moves images from archives to registries, and back ([`pull`]: see `pull.rs`).
//!
//! [`push`] takes an opened [`hoist_archive::Archive`], the destinations for
//! each image ([`PushPlan`]) and a [`hoist_registry::Client`], and for every
//! destination repository:
//!
//! 1. streams each layer once through [`pipeline`]: the stored bytes are
//!    hashed and checked against the config's diff_id, gzip-compressed when
//!    stored plain, hashed again, and sent to the registry as they are made;
//! 2. uploads the config blob;
//! 3. only when every blob is committed, puts the manifest under each tag.
//!
//! A failure anywhere stops before step 3, so no tag ever points at an image
//! with missing blobs. Progress goes to a [`Reporter`]; this crate prints
//! nothing; retries inside the registry client reach the same reporter
//! through [`retry_observer`].

mod cache;
mod error;
mod learn;
mod pipeline;
mod pull;
mod push;
mod reporter;
mod stream;

pub use cache::{BlobCache, CachedBlob};
pub use error::PushError;
pub use pull::{PullError, PullOptions, PullOutput, PulledBlob, PulledImage, pull};
pub use push::{BlobAction, BlobReport, PushOptions, PushPlan, PushedImage, push};
pub use reporter::{BlobId, NoReporter, Reporter, retry_observer};
pub use stream::{Hold, StreamedPush, read_stream};

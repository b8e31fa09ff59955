//! Moves images from archives to registries, and back ([`pull`]: see
//! `pull.rs`), and between registries ([`copy`]: see `copy.rs`).
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
//! with missing blobs; in step 3 each tag is put on its own. The caller holds
//! a [`PushRun`] for the push: its [`Reporter`] (progress and warnings; this
//! crate prints nothing, and retries inside the registry client reach the
//! same reporter through [`retry_observer`]), the upload sessions open at any
//! moment (to cancel when the push is stopped midway), and the references
//! published so far. [`read_stream`] and [`StreamedPush`] do the same for an
//! archive that can be read only once.
//!
//! [`push_archive`] is the one call a push is made with. A [`Provision`]
//! given to it makes each destination ready before the first blob (the
//! binary's makes Harbor projects); this crate knows no registry by name.

mod cache;
mod copy;
mod error;
mod learn;
mod pipeline;
mod plan;
mod provision;
mod pull;
mod push;
mod reporter;
mod run;
mod stream;

pub use cache::{BlobCache, CachedBlob};
pub use copy::{CopyError, CopyOptions, Side, copy};
pub use error::PushError;
pub use plan::{Destinations, PushRequest, check_destinations, plan, push_archive, registry_client, summary};
pub use provision::{Created, Provision, ProvisionError, Provisioned, provision_destination};
pub use pull::{PullError, PullOptions, PullOutput, PulledBlob, PulledImage, pull};
pub use push::{BlobAction, BlobReport, PushOptions, PushPlan, PushedImage, push};
pub use reporter::{BlobId, NoReporter, Reporter, retry_observer};
pub use run::PushRun;
pub use stream::{Hold, StreamedPush, read_stream};

//! Reads container image archives without extracting them.
//!
//! An archive is opened in two steps. [`TarIndex::build`] makes one pass over
//! the tar headers only, seeking over every body, and records where each
//! entry's bytes lie. [`Archive::open`] then finds the images through the
//! archive's `manifest.json` (written by `docker save` of every version,
//! podman and skopeo), checks what it can without reading layers (config
//! digests, layer counts against `rootfs.diff_ids`, links, paths), and hands
//! out [`Image`]s whose [`Layer`]s are read by position with
//! [`Archive::layer_reader`], as many at once as the caller likes.
//!
//! Errors name the archive and the entry, and say what to do
//! ([`ArchiveError::hint`]).

mod error;
mod index;
mod layout;
mod reader;

pub use error::ArchiveError;
pub use index::{EntryKind, TarEntry, TarIndex};
pub use layout::{Archive, ArchiveFormat, Compression, Image, Layer};
pub use reader::SliceReader;

/// JSON members (`manifest.json`, configs, `index.json`) larger than this are
/// refused: real ones are kilobytes, and a hostile one must not exhaust memory.
pub const MAX_JSON_MEMBER: u64 = 16 * 1024 * 1024;

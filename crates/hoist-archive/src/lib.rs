//! Reads container image archives without extracting them.
//!
//! Every layout in use is understood: `docker save` before and after Docker
//! 25 (the latter an OCI image layout plus `manifest.json`), the
//! containers/image `docker-archive` of podman and skopeo, and a pure OCI
//! image layout. When an archive has `index.json` the images are read through
//! it, which keeps the original manifests and the digests of compressed
//! blobs; otherwise through `manifest.json`.
//!
//! There are two ways in:
//!
//! - **A seekable plain tar**: [`Archive::open`]. [`TarIndex::build`] makes one
//!   pass over the tar headers only, seeking over every body, and records
//!   where each entry's bytes lie. The images' [`Layer`]s are then read by
//!   position with [`Archive::layer_reader`], as many at once as the caller
//!   likes; [`Archive::verify`] hashes them against their diff_ids.
//! - **A stream** (standard input, or a gzip-, zstd- or xz-wrapped archive,
//!   told by magic bytes): [`read_stream`] makes one sequential pass in bounded
//!   memory with no temporary copy, handing each entry that may be a layer to
//!   a [`LayerVisitor`] as it passes; the images are known at the end.
//!
//! A consumer of the stream keys what it did with each blob by entry name,
//! then matches the images' layers to it:
//!
//! ```
//! # use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, layer_tar};
//! # let bytes = DockerSaveClassic::new()
//! #     .image(ImageFixture::new().tag("app:1").layer(layer_tar(&[("a", b"a")])))
//! #     .build();
//! use hoist_archive::{HashingVisitor, read_stream};
//!
//! let mut hashing = HashingVisitor::default(); // or an uploader of your own
//! let archive = read_stream(&bytes[..], "-", &mut hashing)?;
//! archive.verify(&hashing.hashes)?; // every layer against its diff_id
//! for layer in &archive.images()[0].layers {
//!     let seen = &hashing.hashes[&layer.entry];
//!     assert_eq!(seen.diff_id, layer.diff_id);
//! }
//! # Ok::<(), hoist_archive::ArchiveError>(())
//! ```
//!
//! Archives are written by [`write`]: an [`write::ArchivePlan`] places every
//! entry before any byte is written (sizes come from descriptors), so an
//! archive streams to standard output, or its blobs are written into a file
//! by position, many at once.
//!
//! Before any layer is read, what can be checked is checked: config digests
//! against their names, layer counts against `rootfs.diff_ids`, blob sizes
//! against descriptors, links (loops, missing targets), and paths that would
//! leave the archive. Errors name the archive and the entry, and say what to
//! do ([`ArchiveError::hint`]).

mod archive;
mod error;
mod hash;
mod index;
mod input;
mod layout;
mod reader;
mod sniff;
mod stream;
pub mod write;

/// The largest zstd window accepted, as `zstd -d --long=31`: frames made
/// with `--long` (and windows up to 2 GiB) decode, at the memory their
/// window asks for.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 31;

/// A zstd decoder reading from `inner` that takes every window up to
/// [`ZSTD_WINDOW_LOG_MAX`]: the one way hoist reads zstd, so an archive,
/// a pushed layer and a pulled one are read alike.
pub fn zstd_reader<R: std::io::BufRead>(inner: R) -> std::io::Result<zstd::stream::read::Decoder<'static, R>> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(inner)?;
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
    Ok(decoder)
}

/// [`zstd_reader`] for bytes written in: decodes into `inner`.
pub fn zstd_writer<W: std::io::Write>(inner: W) -> std::io::Result<zstd::stream::write::Decoder<'static, W>> {
    let mut decoder = zstd::stream::write::Decoder::new(inner)?;
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
    Ok(decoder)
}

pub use archive::Archive;
pub use error::ArchiveError;
pub use hash::{LayerHasher, LayerHashes};
pub use hoist_oci::Compression;
pub use index::{EntryKind, MAX_ENTRIES, TarEntry, TarIndex};
pub use input::ArchiveInput;
pub use layout::{ArchiveFormat, Image, Layer};
pub use reader::SliceReader;
pub use stream::{
    HashingVisitor, LayerVisitor, MAX_KEPT_JSON, SkipBlobs, StreamedArchive, StreamedBlob, Wrapper, read_stream,
};

/// JSON members (`manifest.json`, configs, `index.json`) larger than this are
/// refused: real ones are kilobytes, and a hostile one must not exhaust memory.
pub const MAX_JSON_MEMBER: u64 = 16 * 1024 * 1024;

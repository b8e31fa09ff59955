//! Layer compression for hoist.
//!
//! A [`Codec`] names what a layer becomes on the wire (`gzip:LEVEL`,
//! `zstd:LEVEL` or `none`); [`Codec::encoder`] wraps any [`std::io::Write`]
//! in a [`LayerEncoder`] that compresses what is written through it.
//!
//! The one property everything else rests on is determinism: the same layer
//! compressed with the same [`Codec`] gives the same bytes, and so the same
//! digest, on every run and whatever the number of threads. That is what
//! makes a repeat push cost a HEAD per layer, and what lets an interrupted
//! upload be resumed by compressing again and skipping what the registry
//! already holds.
//!
//! gzip is compressed in fixed 1 MiB blocks, each primed with the 32 KiB
//! before it as its dictionary and ended with a sync flush, as pigz does: the
//! blocks are independent work for the shared thread pool, and the stream is
//! a single ordinary gzip member whatever the thread count. The blocks are
//! deflated by Intel's ISA-L for levels 1 to 3 (the `isal` feature, on by
//! default) and by zlib-rs otherwise; the backend is part of
//! [`Codec::settings_key`], since the two make different bytes.
//!
//! zstd uses libzstd's own multi-threaded mode with a fixed worker count,
//! which also gives the same bytes on every run.

mod buffers;
mod gzip;
#[cfg(feature = "isal")]
mod isal;

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::OnceLock;

pub use buffers::BufferPool;
pub use gzip::{BLOCK_SIZE, GzipEncoder};

/// How a layer is compressed for the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// gzip at a zlib-style level, 1 (fastest) to 9 (smallest).
    Gzip { level: u32 },
    /// zstd at a level, 1 to 19.
    Zstd { level: i32 },
    /// The layer tar as it is.
    None,
}

/// The gzip level when none is given, chosen by measurement (bench/push.sh,
/// a 1.3 GB archive): ISA-L level 2 makes 1.037x the bytes of zlib level 6
/// for a fifth of its CPU; level 1 saves 3 % CPU for 1.048x, too close to
/// the 5 % size budget, and level 3 costs 50 % more CPU for 1 % in size.
pub const DEFAULT_GZIP_LEVEL: u32 = 2;
/// zstd's own default level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl Default for Codec {
    fn default() -> Self {
        Self::Gzip { level: DEFAULT_GZIP_LEVEL }
    }
}

/// A `--compression` value that could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("unknown compression {0:?}: use gzip[:1-9], zstd[:1-19] or none")]
pub struct ParseCodecError(String);

impl FromStr for Codec {
    type Err = ParseCodecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParseCodecError(text.to_owned());
        let (name, level) = match text.split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (text, None),
        };
        match (name.to_ascii_lowercase().as_str(), level) {
            ("gzip" | "gz", None) => Ok(Self::Gzip { level: DEFAULT_GZIP_LEVEL }),
            ("gzip" | "gz", Some(level)) => match level.parse() {
                Ok(level @ 1..=9) => Ok(Self::Gzip { level }),
                _ => Err(bad()),
            },
            ("zstd", None) => Ok(Self::Zstd { level: DEFAULT_ZSTD_LEVEL }),
            ("zstd", Some(level)) => match level.parse() {
                Ok(level @ 1..=19) => Ok(Self::Zstd { level }),
                _ => Err(bad()),
            },
            ("none" | "uncompressed", None) => Ok(Self::None),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gzip { level } => write!(f, "gzip:{level}"),
            Self::Zstd { level } => write!(f, "zstd:{level}"),
            Self::None => f.write_str("none"),
        }
    }
}

impl Codec {
    /// What the bytes are called in a media type: `gzip`, `zstd`, or `None`
    /// for a plain tar.
    pub fn media_type_suffix(self) -> Option<&'static str> {
        match self {
            Self::Gzip { .. } => Some("gzip"),
            Self::Zstd { .. } => Some("zstd"),
            Self::None => None,
        }
    }

    /// Everything that decides the output bytes, as a string: two encoders
    /// with the same key turn the same layer into the same blob. Caches key
    /// their entries by it.
    pub fn settings_key(self) -> String {
        match self {
            Self::Gzip { level } => format!("gzip:{level}:{}:{}k", gzip::backend(level), BLOCK_SIZE / 1024),
            Self::Zstd { level } => format!("zstd:{level}:mt{ZSTD_WORKERS}:{}k", ZSTD_JOB_SIZE / 1024),
            Self::None => "none".to_owned(),
        }
    }

    /// An encoder writing this codec's output to `out`.
    pub fn encoder<W: Write>(self, out: W) -> io::Result<LayerEncoder<W>> {
        let inner = match self {
            Self::Gzip { level } => Inner::Gzip(GzipEncoder::new(out, level)),
            Self::Zstd { level } => {
                let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
                encoder.multithread(ZSTD_WORKERS)?;
                encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                Inner::Zstd(encoder)
            }
            Self::None => Inner::None(out),
        };
        Ok(LayerEncoder { inner })
    }
}

/// libzstd's worker threads per layer. Fixed, not the machine's core count:
/// the bytes must not depend on where hoist runs.
const ZSTD_WORKERS: u32 = 2;

/// Input per zstd job. libzstd's default at level 3 is 8 MiB, and each
/// worker holds a job's input and output: a default `--jobs 2` push peaked
/// at 185 MiB. 1 MiB jobs peak at 47 MiB for 0.9 % more bytes (bench, the
/// 1.2 GB archive): each job starts from an overlap of the input before it
/// (libzstd's overlapLog; 1/8 of the window at level 3), not the whole window.
const ZSTD_JOB_SIZE: u32 = 1 << 20;

/// Compresses what is written to it into the wrapped writer; call
/// [`LayerEncoder::finish`] to end the stream.
#[derive(Debug)]
pub struct LayerEncoder<W: Write> {
    inner: Inner<W>,
}

enum Inner<W: Write> {
    Gzip(GzipEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    None(W),
}

impl<W: Write> fmt::Debug for Inner<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gzip(_) => "Gzip",
            Self::Zstd(_) => "Zstd",
            Self::None(_) => "None",
        })
    }
}

impl<W: Write> LayerEncoder<W> {
    /// Ends the compressed stream and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        match self.inner {
            Inner::Gzip(encoder) => encoder.finish(),
            Inner::Zstd(encoder) => encoder.finish(),
            Inner::None(mut out) => {
                out.flush()?;
                Ok(out)
            }
        }
    }
}

impl<W: Write> Write for LayerEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Gzip(encoder) => encoder.write(data),
            Inner::Zstd(encoder) => encoder.write(data),
            Inner::None(out) => out.write(data),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Inner::Gzip(encoder) => encoder.write_all(data),
            Inner::Zstd(encoder) => encoder.write_all(data),
            Inner::None(out) => out.write_all(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Gzip(_) => Ok(()),
            Inner::Zstd(encoder) => encoder.flush(),
            Inner::None(out) => out.flush(),
        }
    }
}

/// The compression threads every encoder shares: one per core, so several
/// layers at once never oversubscribe the machine.
pub(crate) fn pool() -> &'static rayon_core::ThreadPool {
    static POOL: OnceLock<rayon_core::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        rayon_core::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("hoist-compress-{i}"))
            .build()
            .expect("the compression pool starts")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_parse_and_print_round_trip() {
        for text in ["gzip:1", "gzip:9", "zstd:3", "zstd:19", "none"] {
            assert_eq!(text.parse::<Codec>().unwrap().to_string(), text);
        }
        assert_eq!("gzip".parse::<Codec>().unwrap(), Codec::Gzip { level: DEFAULT_GZIP_LEVEL });
        assert_eq!("zstd".parse::<Codec>().unwrap(), Codec::Zstd { level: DEFAULT_ZSTD_LEVEL });
        for bad in ["gzip:0", "gzip:10", "zstd:0", "zstd:x", "lz4", "none:1", ""] {
            assert!(bad.parse::<Codec>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn settings_keys_tell_codecs_apart() {
        let keys: Vec<_> =
            ["gzip:1", "gzip:6", "zstd:3", "none"].iter().map(|c| c.parse::<Codec>().unwrap().settings_key()).collect();
        let mut unique = keys.clone();
        unique.dedup();
        assert_eq!(keys, unique);
    }
}

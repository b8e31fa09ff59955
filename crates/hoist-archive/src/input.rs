//! Where an archive comes from, and so how it can be read.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::Wrapper;

/// An archive to read: a plain tar file, indexed by its headers and read by
/// position ([`crate::Archive::open`]); or bytes that can be read only once,
/// front to back ([`crate::read_stream`]): standard input, a gzip-, zstd- or
/// xz-wrapped file, an upload's body.
pub enum ArchiveInput {
    Seekable(PathBuf),
    Stream {
        reader: Box<dyn Read + Send>,
        /// The input's name in messages (`-` for standard input).
        label: PathBuf,
    },
}

impl std::fmt::Debug for ArchiveInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Seekable(path) => f.debug_tuple("Seekable").field(path).finish(),
            Self::Stream { label, .. } => f.debug_struct("Stream").field("label", label).finish_non_exhaustive(),
        }
    }
}

impl ArchiveInput {
    /// `-` is standard input; a pipe (`<(zcat app.tar.gz)`, a FIFO) and a
    /// file whose first bytes say gzip, zstd or xz are read as a stream;
    /// a regular file is a seekable tar (a file that cannot be opened gets
    /// its error from [`crate::Archive::open`]).
    pub fn open(path: &Path) -> Self {
        if path == Path::new("-") {
            return Self::Stream { reader: Box::new(std::io::stdin()), label: path.to_owned() };
        }
        let Ok(mut file) = File::open(path) else { return Self::Seekable(path.to_owned()) };
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        if !regular || Wrapper::sniff_file(&mut file).is_ok_and(|w| w != Wrapper::None) {
            return Self::Stream { reader: Box::new(file), label: path.to_owned() };
        }
        Self::Seekable(path.to_owned())
    }

    /// The input's name in messages.
    pub fn label(&self) -> &Path {
        match self {
            Self::Seekable(path) => path,
            Self::Stream { label, .. } => label,
        }
    }
}

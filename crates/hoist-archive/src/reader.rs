use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Reads `len` bytes of a shared file starting at `offset`, by position: no
/// shared cursor, so any number of readers run at once on one file handle.
#[derive(Debug, Clone)]
pub struct SliceReader {
    file: Arc<File>,
    position: u64,
    end: u64,
}

impl SliceReader {
    pub fn new(file: Arc<File>, offset: u64, len: u64) -> Self {
        Self { file, position: offset, end: offset.saturating_add(len) }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.end - self.position
    }
}

impl Read for SliceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.remaining()).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.position)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ended inside an entry"));
        }
        self.position += n as u64;
        Ok(n)
    }
}

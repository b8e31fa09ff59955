use std::io::{self, Read, Write};
use std::path::Path;

use hoist_oci::{Digest, Sha256};

use crate::{ArchiveError, Compression, Layer};

const BUFFER: usize = 256 * 1024;

/// The two digests of a layer's bytes, from one read: of the bytes as stored,
/// and of the uncompressed tar (its diff_id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerHashes {
    pub stored: Digest,
    pub stored_size: u64,
    pub diff_id: Digest,
}

impl LayerHashes {
    /// Reads `reader` to its end, decompressing as `compression` says.
    pub fn compute(mut reader: impl Read, compression: Compression) -> io::Result<Self> {
        let mut stored = Sha256::new();
        let mut buffer = vec![0u8; BUFFER];
        let diff_id = match compression {
            Compression::None => {
                pump(&mut reader, &mut buffer, |chunk| {
                    stored.update(chunk);
                    Ok(())
                })?;
                stored.clone().finish()
            }
            Compression::Gzip => {
                let mut decoder = flate2::write::MultiGzDecoder::new(Sha256::new());
                pump(&mut reader, &mut buffer, |chunk| {
                    stored.update(chunk);
                    decoder.write_all(chunk)
                })?;
                decoder.finish()?.finish()
            }
            Compression::Zstd => {
                let mut decoder = zstd::stream::write::Decoder::new(Sha256::new())?;
                pump(&mut reader, &mut buffer, |chunk| {
                    stored.update(chunk);
                    decoder.write_all(chunk)
                })?;
                decoder.flush()?;
                decoder.into_inner().finish()
            }
        };
        let stored_size = stored.len();
        Ok(Self { stored: stored.finish(), stored_size, diff_id })
    }

    /// Compares with what the archive claims for `layer`.
    pub fn check(&self, archive: &Path, layer: &Layer) -> Result<(), ArchiveError> {
        if self.diff_id != layer.diff_id {
            return Err(ArchiveError::Mismatch {
                path: archive.to_owned(),
                entry: layer.entry.clone(),
                what: "its uncompressed content",
                expected: layer.diff_id.clone(),
                actual: self.diff_id.clone(),
            });
        }
        if let Some(digest) = &layer.digest
            && *digest != self.stored
        {
            return Err(ArchiveError::Mismatch {
                path: archive.to_owned(),
                entry: layer.entry.clone(),
                what: "its stored bytes",
                expected: digest.clone(),
                actual: self.stored.clone(),
            });
        }
        Ok(())
    }
}

fn pump(reader: &mut impl Read, buffer: &mut [u8], mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    loop {
        match reader.read(buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => each(&buffer[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

//! The read-once layer pipeline, run on a blocking thread: read the stored
//! bytes by position, hash what the config's diff_id covers, compress if
//! needed, hash what is sent, and hand the bytes to the HTTP body as they are
//! made. Nothing is staged; memory is one read buffer plus one chunk in flight
//! per layer (and the channel's small queue).

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use hoist_archive::{Archive, Compression, Layer};
use hoist_codec::Codec;
use hoist_oci::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::PushError;

const READ_BUFFER: usize = 256 * 1024;
const CHUNK: usize = 1024 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

/// What a layer became on the wire.
#[derive(Clone, Debug)]
pub(crate) struct SentBlob {
    pub digest: Digest,
    pub size: u64,
    /// True if the bytes sent are gzip (compressed by us or stored so).
    pub gzip: bool,
    pub zstd: bool,
}

impl SentBlob {
    /// A blob known from the cache, by its media type.
    pub(crate) fn from_cached(digest: &Digest, size: u64, media_type: &str) -> Self {
        Self { digest: digest.clone(), size, gzip: media_type.ends_with("gzip"), zstd: media_type.ends_with("zstd") }
    }

    /// `gzip`, `zstd`, or `None` for a plain tar.
    pub(crate) fn suffix(&self) -> Option<&'static str> {
        if self.gzip {
            Some("gzip")
        } else if self.zstd {
            Some("zstd")
        } else {
            None
        }
    }
}

pub(crate) type Progress = Box<dyn Fn(u64) + Send>;

/// Starts the pipeline for `layer`: the stored bytes as they are if
/// `encode` is `None`, else decoded and re-encoded with that codec. Returns
/// the HTTP body to send and the task that yields the sent blob's digest once
/// the body has been drained.
pub(crate) fn stream_layer(
    archive: Arc<Archive>,
    layer: Layer,
    encode: Option<Codec>,
    progress: Progress,
) -> (reqwest::Body, tokio::task::JoinHandle<Result<SentBlob, PushError>>) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let error_tx = tx.clone();
    let task = tokio::task::spawn_blocking(move || {
        let result = run(&archive, &layer, encode, progress, tx);
        if let Err(error) = &result {
            // Fail the request body too, so the registry never sees a clean end.
            let _ = error_tx.blocking_send(Err(io::Error::other(error.to_string())));
        }
        result
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (reqwest::Body::wrap_stream(stream), task)
}

fn run(
    archive: &Archive,
    layer: &Layer,
    encode: Option<Codec>,
    progress: Progress,
    tx: mpsc::Sender<io::Result<Bytes>>,
) -> Result<SentBlob, PushError> {
    let read_error = |source: io::Error| PushError::LayerRead {
        archive: archive.path().display().to_string(),
        entry: layer.entry.clone(),
        source,
    };
    let reader = ProgressReader { inner: archive.layer_reader(layer), progress };
    let mut buffer = vec![0u8; READ_BUFFER];
    let sink = ChunkSink::new(tx);
    let (diff_id, sink, suffix) = match encode {
        Some(codec) => {
            // The uncompressed tar, whatever the archive stored, hashed for
            // the diff_id on its way into the encoder.
            let mut tar: Box<dyn Read> = match layer.compression {
                Compression::None => Box::new(reader),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
                Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader).map_err(read_error)?),
            };
            let mut diff = Sha256::new();
            let mut encoder = codec.encoder(sink).map_err(read_error)?;
            pump(&mut tar, &mut buffer, |chunk| {
                diff.update(chunk);
                encoder.write_all(chunk)
            })
            .map_err(read_error)?;
            (diff.finish(), encoder.finish().map_err(read_error)?, codec.media_type_suffix())
        }
        // Stored compressed and sent as stored: decompress only to check the
        // diff_id, beside the bytes going out.
        None => {
            let mut sink = sink;
            let mut reader = reader;
            let diff_id = match layer.compression {
                Compression::None => {
                    let mut diff = Sha256::new();
                    pump(&mut reader, &mut buffer, |chunk| {
                        sink.write_all(chunk)?;
                        diff.update(chunk);
                        Ok(())
                    })
                    .map_err(read_error)?;
                    diff.finish()
                }
                Compression::Gzip => {
                    let mut decoder = flate2::write::MultiGzDecoder::new(Sha256::new());
                    pump(&mut reader, &mut buffer, |chunk| {
                        sink.write_all(chunk)?;
                        decoder.write_all(chunk)
                    })
                    .map_err(read_error)?;
                    decoder.finish().map_err(read_error)?.finish()
                }
                Compression::Zstd => {
                    let mut decoder = zstd::stream::write::Decoder::new(Sha256::new()).map_err(read_error)?;
                    pump(&mut reader, &mut buffer, |chunk| {
                        sink.write_all(chunk)?;
                        decoder.write_all(chunk)
                    })
                    .map_err(read_error)?;
                    decoder.flush().map_err(read_error)?;
                    decoder.into_inner().finish()
                }
            };
            let suffix = match layer.compression {
                Compression::None => None,
                Compression::Gzip => Some("gzip"),
                Compression::Zstd => Some("zstd"),
            };
            (diff_id, sink, suffix)
        }
    };
    if diff_id != layer.diff_id {
        return Err(PushError::DiffIdMismatch {
            archive: archive.path().display().to_string(),
            entry: layer.entry.clone(),
            expected: layer.diff_id.clone(),
            actual: diff_id,
        });
    }
    let (digest, size) = sink.finish().map_err(read_error)?;
    Ok(SentBlob { digest, size, gzip: suffix == Some("gzip"), zstd: suffix == Some("zstd") })
}

fn pump(reader: &mut impl Read, buffer: &mut [u8], mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    loop {
        let n = match reader.read(buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        each(&buffer[..n])?;
    }
}

/// Reports the stored bytes read, so progress means the same thing whether
/// the layer is re-encoded or sent as it is.
struct ProgressReader<R> {
    inner: R,
    progress: Progress,
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// Collects the outgoing bytes into chunks for the HTTP body and hashes them.
struct ChunkSink {
    tx: mpsc::Sender<io::Result<Bytes>>,
    hasher: Sha256,
    buffer: Vec<u8>,
}

impl ChunkSink {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        Self { tx, hasher: Sha256::new(), buffer: Vec::with_capacity(CHUNK) }
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is left and returns the digest and size of everything sent.
    fn finish(mut self) -> io::Result<(Digest, u64)> {
        self.send_buffer()?;
        let size = self.hasher.len();
        Ok((self.hasher.finish(), size))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.hasher.update(data);
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

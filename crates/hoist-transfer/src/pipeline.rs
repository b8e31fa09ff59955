//! The read-once layer pipeline, run on a blocking thread: read the stored
//! bytes by position, hash what the config's diff_id covers, compress if
//! needed, hash what is sent, and hand the bytes to the HTTP body as they are
//! made. Nothing is staged; memory is one read buffer plus one chunk in flight
//! per layer (and the channel's small queue).

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use hoist_archive::{Archive, Compression, Layer};
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
}

pub(crate) type Progress = Box<dyn Fn(u64) + Send>;

/// Starts the pipeline for `layer`. Returns the HTTP body to send and the
/// task that yields the sent blob's digest once the body has been drained.
pub(crate) fn stream_layer(
    archive: Arc<Archive>,
    layer: Layer,
    gzip_level: u32,
    progress: Progress,
) -> (reqwest::Body, tokio::task::JoinHandle<Result<SentBlob, PushError>>) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let error_tx = tx.clone();
    let task = tokio::task::spawn_blocking(move || {
        let result = run(&archive, &layer, gzip_level, &progress, tx);
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
    gzip_level: u32,
    progress: &Progress,
    tx: mpsc::Sender<io::Result<Bytes>>,
) -> Result<SentBlob, PushError> {
    let read_error = |source: io::Error| PushError::LayerRead {
        archive: archive.path().display().to_string(),
        entry: layer.entry.clone(),
        source,
    };
    let mut reader = archive.layer_reader(layer);
    let mut buffer = vec![0u8; READ_BUFFER];
    let sink = ChunkSink::new(tx);
    let (diff_id, sink) = match layer.compression {
        Compression::None => {
            let mut diff = Sha256::new();
            let mut encoder = flate2::GzBuilder::new().mtime(0).write(sink, flate2::Compression::new(gzip_level));
            pump(&mut reader, &mut buffer, progress, |chunk| {
                diff.update(chunk);
                encoder.write_all(chunk)
            })
            .map_err(read_error)?;
            let sink = encoder.finish().map_err(read_error)?;
            (diff.finish(), sink)
        }
        Compression::Gzip => {
            let mut sink = sink;
            let mut decoder = flate2::write::MultiGzDecoder::new(Sha256::new());
            pump(&mut reader, &mut buffer, progress, |chunk| {
                sink.write_all(chunk)?;
                decoder.write_all(chunk)
            })
            .map_err(read_error)?;
            (decoder.finish().map_err(read_error)?.finish(), sink)
        }
        Compression::Zstd => {
            let mut sink = sink;
            let mut decoder = zstd::stream::write::Decoder::new(Sha256::new()).map_err(read_error)?;
            pump(&mut reader, &mut buffer, progress, |chunk| {
                sink.write_all(chunk)?;
                decoder.write_all(chunk)
            })
            .map_err(read_error)?;
            decoder.flush().map_err(read_error)?;
            (decoder.into_inner().finish(), sink)
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
    Ok(SentBlob {
        digest,
        size,
        gzip: layer.compression != Compression::Zstd,
        zstd: layer.compression == Compression::Zstd,
    })
}

fn pump(
    reader: &mut impl Read,
    buffer: &mut [u8],
    progress: &Progress,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    loop {
        let n = match reader.read(buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        each(&buffer[..n])?;
        progress(n as u64);
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

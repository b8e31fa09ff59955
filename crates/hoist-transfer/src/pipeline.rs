//! The read-once layer pipeline, run on a blocking thread: read the stored
//! bytes by position, hash what the config's diff_id covers, compress if
//! needed, hash what is sent, and hand the bytes to the HTTP body as they are
//! made. Nothing is staged; memory is one read buffer plus one chunk in flight
//! per layer (and the channel's small queue).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use hoist_archive::{Archive, Compression, Layer};
use hoist_codec::{BufferPool, Codec};
use hoist_oci::{Digest, Sha256};
use hoist_registry::{BlobSource, BlobStream};
use tokio::sync::mpsc;

use crate::PushError;

const READ_BUFFER: usize = 256 * 1024;
const CHUNK: usize = 1024 * 1024;
pub(crate) const CHUNKS_IN_FLIGHT: usize = 2;

/// What a layer became on the wire.
#[derive(Clone, Debug)]
pub(crate) struct SentBlob {
    pub digest: Digest,
    pub size: u64,
    /// True if the bytes sent are gzip (compressed by us or stored so).
    pub gzip: bool,
    pub zstd: bool,
    /// `registry/repository` this run put it in, a source for mounts.
    pub sent_to: Option<String>,
}

impl SentBlob {
    /// A blob just made, whose bytes the media type suffix `suffix` names
    /// (as [`transform`] returns it).
    pub(crate) fn made(digest: Digest, size: u64, suffix: Option<&str>) -> Self {
        Self { digest, size, gzip: suffix == Some("gzip"), zstd: suffix == Some("zstd"), sent_to: None }
    }

    /// A blob known from the cache, by its media type.
    pub(crate) fn from_cached(digest: &Digest, size: u64, media_type: &str) -> Self {
        Self {
            digest: digest.clone(),
            size,
            gzip: media_type.ends_with("gzip"),
            zstd: media_type.ends_with("zstd"),
            sent_to: None,
        }
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

pub(crate) type Progress = Box<dyn Fn(u64) + Send + Sync>;

/// A layer as the bytes it becomes on the wire, for `upload_blob`.
///
/// The first `open(0)` streams live from the compressor; compression is
/// deterministic, so a resume re-runs read + compress and skips `offset`
/// bytes instead of keeping anything. The digest and size are known once a
/// run has finished, or up front from an earlier push (`expected`), which
/// lets the registry client HEAD or mount before anything is compressed.
pub(crate) struct LayerSource {
    archive: Arc<Archive>,
    layer: Layer,
    /// The codec the layer is re-encoded with; `None` sends it as stored.
    encode: Option<Codec>,
    expected: Option<SentBlob>,
    progress: Arc<Progress>,
    /// Archive bytes already reported, so that re-runs do not count twice.
    reported: Arc<AtomicU64>,
    state: Arc<Mutex<RunState>>,
}

#[derive(Default)]
struct RunState {
    made: Option<SentBlob>,
    /// Why a run failed on its own (not because the upload stopped reading).
    failure: Option<PushError>,
}

impl LayerSource {
    pub(crate) fn new(
        archive: Arc<Archive>,
        layer: Layer,
        encode: Option<Codec>,
        expected: Option<SentBlob>,
        progress: Progress,
    ) -> Self {
        Self {
            archive,
            layer,
            encode,
            expected,
            progress: Arc::new(progress),
            reported: Arc::new(AtomicU64::new(0)),
            state: Arc::default(),
        }
    }

    /// What a finished run made.
    pub(crate) fn made(&self) -> Option<SentBlob> {
        self.state.lock().ok()?.made.clone()
    }

    /// The error that stopped a run, if the archive (not the network) was at fault.
    pub(crate) fn take_failure(&self) -> Option<PushError> {
        self.state.lock().ok()?.failure.take()
    }
}

impl BlobSource for LayerSource {
    fn open(&self, offset: u64) -> io::Result<BlobStream> {
        let (tx, stream) = body_channel();
        let (archive, layer, encode) = (Arc::clone(&self.archive), self.layer.clone(), self.encode);
        let (progress, reported, state) =
            (Arc::clone(&self.progress), Arc::clone(&self.reported), Arc::clone(&self.state));
        tokio::task::spawn_blocking(move || {
            let mut read = 0u64;
            let count = move |n: u64| {
                read += n;
                let before = reported.fetch_max(read, Ordering::Relaxed);
                if read > before {
                    progress(read - before);
                }
            };
            let error_tx = tx.clone();
            let result = run(&archive, &layer, encode, count, tx, offset);
            let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let result = result.and_then(|blob| match &state.made {
                Some(before) if before.digest != blob.digest => Err(PushError::Internal(format!(
                    "compressing layer `{}` again gave {} instead of {}",
                    layer.entry, blob.digest, before.digest
                ))),
                _ => Ok(blob),
            });
            match result {
                // Recorded before the stream ends, so the digest is known when it does.
                Ok(blob) => state.made = Some(blob),
                Err(PushError::LayerRead { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {}
                Err(error) => {
                    // Fail the request body too, so the registry never sees a clean end.
                    let _ = error_tx.blocking_send(Err(io::Error::other(error.to_string())));
                    state.failure.get_or_insert(error);
                }
            }
        });
        Ok(stream)
    }

    fn size(&self) -> Option<u64> {
        self.made().map(|blob| blob.size)
    }

    fn digest(&self) -> Option<Digest> {
        self.made().or_else(|| self.expected.clone()).map(|blob| blob.digest)
    }
}

/// Reads, checks and (if asked) re-encodes `layer`, sending the outgoing
/// bytes from `skip` on to `tx`.
fn run(
    archive: &Archive,
    layer: &Layer,
    encode: Option<Codec>,
    progress: impl FnMut(u64),
    tx: mpsc::Sender<io::Result<Bytes>>,
    skip: u64,
) -> Result<SentBlob, PushError> {
    let read_error = |source: io::Error| PushError::LayerRead {
        archive: archive.path().display().to_string(),
        entry: layer.entry.clone(),
        source,
    };
    let reader = ProgressReader { inner: archive.layer_reader(layer), progress };
    let (diff_id, sink, suffix) =
        transform(reader, layer.compression, encode, ChunkSink::new(tx, skip)).map_err(read_error)?;
    // The body stays open until this returns (the caller holds a sender), so
    // a mismatch found after the last chunk still fails the upload.
    let (digest, size) = sink.finish().map_err(read_error)?;
    let diff_id = diff_id.or_output(&digest);
    if diff_id != layer.diff_id {
        return Err(PushError::DiffIdMismatch {
            archive: archive.path().display().to_string(),
            entry: layer.entry.clone(),
            expected: layer.diff_id.clone(),
            actual: diff_id,
        });
    }
    Ok(SentBlob::made(digest, size, suffix))
}

/// The uncompressed tar's digest, as [`transform`] learned it.
#[derive(Debug)]
pub(crate) enum DiffId {
    Hashed(Digest),
    /// The outgoing bytes are the tar itself, so their digest is the diff_id.
    OfOutput,
}

impl DiffId {
    pub(crate) fn or_output(self, output: &Digest) -> Digest {
        match self {
            Self::Hashed(digest) => digest,
            Self::OfOutput => output.clone(),
        }
    }
}

/// Reads a layer's stored bytes (`compression` says how they are stored),
/// hashes the uncompressed tar for the diff_id, and writes what goes out to
/// `sink`: re-encoded with `encode`, or as stored. Returns the diff_id, the
/// sink, and the outgoing bytes' media-type suffix.
pub(crate) fn transform<W: Write>(
    mut reader: impl Read,
    compression: Compression,
    encode: Option<Codec>,
    sink: W,
) -> io::Result<(DiffId, W, Option<&'static str>)> {
    let mut buffer = vec![0u8; READ_BUFFER];
    match encode {
        // A plain tar sent plain: what goes out is the diff_id's bytes, so
        // the sink's hash is the diff_id and hashing twice would be waste.
        Some(Codec::None) if compression == Compression::None => {
            let mut sink = sink;
            pump(&mut reader, &mut buffer, |chunk| sink.write_all(chunk))?;
            Ok((DiffId::OfOutput, sink, None))
        }
        Some(codec) => {
            // The uncompressed tar, whatever the archive stored, hashed for
            // the diff_id on its way into the encoder.
            let mut tar: Box<dyn Read + '_> = match compression {
                Compression::None => Box::new(reader),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
                Compression::Zstd => Box::new(hoist_archive::zstd_reader(io::BufReader::new(reader))?),
            };
            let mut diff = Sha256::new();
            let mut encoder = codec.encoder(sink)?;
            pump(&mut tar, &mut buffer, |chunk| {
                diff.update(chunk);
                encoder.write_all(chunk)
            })?;
            Ok((DiffId::Hashed(diff.finish()), encoder.finish()?, codec.media_type_suffix()))
        }
        // Sent as stored: a compressed layer is decompressed only to check
        // the diff_id, beside the bytes going out.
        None => {
            let mut sink = sink;
            let diff_id = match compression {
                Compression::None => {
                    let mut diff = Sha256::new();
                    pump(&mut reader, &mut buffer, |chunk| {
                        sink.write_all(chunk)?;
                        diff.update(chunk);
                        Ok(())
                    })?;
                    diff.finish()
                }
                Compression::Gzip => {
                    let mut decoder = flate2::write::MultiGzDecoder::new(Sha256::new());
                    pump(&mut reader, &mut buffer, |chunk| {
                        sink.write_all(chunk)?;
                        decoder.write_all(chunk)
                    })?;
                    decoder.finish()?.finish()
                }
                Compression::Zstd => {
                    let mut decoder = hoist_archive::zstd_writer(Sha256::new())?;
                    pump(&mut reader, &mut buffer, |chunk| {
                        sink.write_all(chunk)?;
                        decoder.write_all(chunk)
                    })?;
                    decoder.flush()?;
                    decoder.into_inner().finish()
                }
            };
            Ok((DiffId::Hashed(diff_id), sink, stored_suffix(compression)))
        }
    }
}

/// The media-type suffix of a layer's stored bytes.
pub(crate) fn stored_suffix(compression: Compression) -> Option<&'static str> {
    match compression {
        Compression::None => None,
        Compression::Gzip => Some("gzip"),
        Compression::Zstd => Some("zstd"),
    }
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
struct ProgressReader<R, P> {
    inner: R,
    progress: P,
}

impl<R: Read, P: FnMut(u64)> Read for ProgressReader<R, P> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// Upload chunks, back from the HTTP client once it has written them: two in
/// flight and one filling per layer, for a few layers at once.
static CHUNK_BUFFERS: BufferPool = BufferPool::new(CHUNK, 4 * (CHUNKS_IN_FLIGHT + 1));

/// A request body fed chunk by chunk from a blocking thread, at most
/// [`CHUNKS_IN_FLIGHT`] ahead of the network.
pub(crate) fn body_channel() -> (mpsc::Sender<io::Result<Bytes>>, BlobStream) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (tx, stream.boxed())
}

/// The next chunk of `reader`, in a pooled buffer; `None` at its end.
pub(crate) fn read_chunk(reader: &mut impl Read) -> io::Result<Option<Bytes>> {
    let mut buffer = CHUNK_BUFFERS.take();
    reader.take(CHUNK as u64).read_to_end(&mut buffer)?;
    Ok((!buffer.is_empty()).then(|| Bytes::from_owner(PooledChunk(buffer))))
}

/// A chunk of the HTTP body that returns its buffer to [`CHUNK_BUFFERS`].
struct PooledChunk(Vec<u8>);

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        CHUNK_BUFFERS.give_back(std::mem::take(&mut self.0));
    }
}

/// Collects the outgoing bytes into chunks for the HTTP body and hashes
/// them all, sending only those from `skip` on (a resumed upload).
pub(crate) struct ChunkSink {
    tx: mpsc::Sender<io::Result<Bytes>>,
    hasher: Sha256,
    buffer: Vec<u8>,
    skip: u64,
}

impl ChunkSink {
    pub(crate) fn new(tx: mpsc::Sender<io::Result<Bytes>>, skip: u64) -> Self {
        Self { tx, hasher: Sha256::new(), buffer: CHUNK_BUFFERS.take(), skip }
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, CHUNK_BUFFERS.take());
        self.tx
            .blocking_send(Ok(Bytes::from_owner(PooledChunk(chunk))))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is left and returns the digest and size of everything sent.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        self.send_buffer()?;
        let size = self.hasher.len();
        let hasher = std::mem::replace(&mut self.hasher, Sha256::new());
        Ok((hasher.finish(), size))
    }
}

impl Drop for ChunkSink {
    fn drop(&mut self) {
        CHUNK_BUFFERS.give_back(std::mem::take(&mut self.buffer));
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let skipped = usize::try_from(self.skip).unwrap_or(usize::MAX).min(data.len());
        // Up to a full chunk, so that the buffer never grows past its pool's size.
        let taken = skipped + (data.len() - skipped).min(CHUNK - self.buffer.len());
        self.hasher.update(&data[..taken]);
        self.skip -= skipped as u64;
        self.buffer.extend_from_slice(&data[skipped..taken]);
        if self.buffer.len() == CHUNK {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use futures_util::StreamExt;
    use hoist_archive::Archive;
    use hoist_registry::BlobSource;
    use hoist_testkit::fixtures::{DockerSaveClassic, ImageFixture, incompressible_layer};

    use super::LayerSource;

    async fn collect(source: &LayerSource, offset: u64) -> Vec<u8> {
        let mut stream = source.open(offset).unwrap();
        let mut out = Vec::new();
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece.unwrap());
        }
        out
    }

    /// A resume re-runs read + compress and skips what the registry has: the
    /// tail must be exactly the first run's tail, and progress counts once.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_reopened_layer_is_the_same_bytes_from_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.tar");
        let fixture = ImageFixture::new().tag("app:1").layer(incompressible_layer(3, 1_500_000));
        DockerSaveClassic::new().image(fixture).write_to(&path);
        let archive = Arc::new(Archive::open(&path).unwrap());
        let layer = archive.images()[0].layers[0].clone();
        let counted = Arc::new(AtomicU64::new(0));
        let total = Arc::clone(&counted);
        let progress = Box::new(move |n| {
            total.fetch_add(n, Ordering::Relaxed);
        });
        let source =
            LayerSource::new(Arc::clone(&archive), layer.clone(), Some(hoist_codec::Codec::default()), None, progress);
        assert_eq!(source.digest(), None, "unknown until a run has finished");

        let whole = collect(&source, 0).await;
        let made = source.made().expect("the run finished");
        assert_eq!(made.size, whole.len() as u64);
        assert_eq!(source.digest(), Some(hoist_oci::Digest::of(&whole)));
        let offset = 654_321;
        let tail = collect(&source, offset).await;
        assert_eq!(tail, whole[offset as usize..], "the regenerated tail");
        assert_eq!(counted.load(Ordering::Relaxed), layer.size, "archive bytes are reported once");
        assert!(source.take_failure().is_none());
    }
}

//! Block-parallel, deterministic gzip.
//!
//! The input is cut into [`BLOCK_SIZE`] blocks by offset alone. Each block is
//! deflated on the shared pool as a raw deflate fragment primed with the
//! 32 KiB before it (so matches reach across the cut, as in one stream) and
//! ended with a sync flush, which leaves it byte-aligned and not final; the
//! last block is final. The fragments, concatenated in order between a gzip
//! header and trailer, are one valid gzip member. Every fragment depends only
//! on its block, its dictionary, the level and whether it is last: never on
//! timing or thread count.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Condvar, Mutex, mpsc};

use crate::BufferPool;

/// Input bytes per independently compressed block.
pub const BLOCK_SIZE: usize = 1024 * 1024;
/// deflate's window: the most a match can reach back.
const WINDOW: usize = 32 * 1024;
/// The most blocks in flight, whatever the core count.
const MAX_BLOCKS_IN_FLIGHT: usize = 16;
/// The gzip header: no name, no time (mtime 0 keeps output reproducible),
/// OS "unknown".
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Which deflate implementation a level uses.
pub(crate) fn backend(level: u32) -> &'static str {
    if uses_isal(level) { "isal" } else { "zlib-rs" }
}

fn uses_isal(level: u32) -> bool {
    cfg!(feature = "isal") && level <= 3
}

type Fragment = io::Result<Vec<u8>>;

/// Room for a block with its dictionary, or for its deflated form even when
/// incompressible, so one buffer serves as either.
const BUFFER_CAPACITY: usize = WINDOW + BLOCK_SIZE + BLOCK_SIZE / 8 + 1024;

/// Block and fragment buffers. Every block in flight holds two, and every
/// encoder one more.
static BUFFERS: BufferPool = BufferPool::new(BUFFER_CAPACITY, 2 * MAX_BLOCKS_IN_FLIGHT + 4);

/// A gzip stream written to `W`, compressed on the shared pool.
pub struct GzipEncoder<W: Write> {
    /// Taken by `finish`; always there before.
    out: Option<W>,
    level: u32,
    /// The block being filled, after `dict_len` bytes of dictionary.
    block: Vec<u8>,
    dict_len: usize,
    crc: crc32fast::Hasher,
    total: u64,
    /// Fragments on their way back from the pool, oldest first; each holds
    /// one permit of the shared block budget until it is written out.
    pending: VecDeque<mpsc::Receiver<Fragment>>,
    header_written: bool,
}

impl<W: Write> std::fmt::Debug for GzipEncoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipEncoder").field("level", &self.level).field("total", &self.total).finish_non_exhaustive()
    }
}

impl<W: Write> GzipEncoder<W> {
    pub fn new(out: W, level: u32) -> Self {
        Self {
            out: Some(out),
            level: level.clamp(1, 9),
            block: BUFFERS.take(),
            dict_len: 0,
            crc: crc32fast::Hasher::new(),
            total: 0,
            pending: VecDeque::new(),
            header_written: false,
        }
    }

    /// Ends the stream: the last block, then the CRC-32 and size trailer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        // ISIZE is the length modulo 2^32, by the format's definition.
        trailer[4..].copy_from_slice(&(self.total as u32).to_le_bytes());
        let mut out = self.out.take().expect("the writer is there until finish");
        out.write_all(&trailer)?;
        out.flush()?;
        Ok(out)
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        if !self.header_written {
            self.out_mut().write_all(&HEADER)?;
            self.header_written = true;
        }
        // The next block's dictionary: the last 32 KiB of input before it.
        let mut next = BUFFERS.take();
        next.extend_from_slice(&self.block[self.block.len().saturating_sub(WINDOW)..]);
        let next_dict_len = next.len();
        let input = std::mem::replace(&mut self.block, next);
        let dict_len = std::mem::replace(&mut self.dict_len, next_dict_len);
        // A block in flight holds ~2 MiB (input and output); the budget is
        // shared by every encoder, so memory is bounded whatever `--jobs`.
        while !BUDGET.try_take() {
            if self.pending.is_empty() {
                BUDGET.wait_and_take();
                break;
            }
            self.write_oldest()?;
        }
        let level = self.level;
        let (tx, rx) = mpsc::sync_channel(1);
        crate::pool().spawn_fifo(move || {
            let (dict, data) = input.split_at(dict_len);
            let fragment = deflate_fragment(level, dict, data, last);
            BUFFERS.give_back(input);
            let _ = tx.send(fragment);
        });
        self.pending.push_back(rx);
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else { return Ok(()) };
        let fragment = rx.recv();
        BUDGET.give_back();
        let fragment = fragment.map_err(|_| io::Error::other("a compression thread stopped"))??;
        self.out_mut().write_all(&fragment)?;
        BUFFERS.give_back(fragment);
        Ok(())
    }

    fn out_mut(&mut self) -> &mut W {
        self.out.as_mut().expect("the writer is there until finish")
    }
}

impl<W: Write> Drop for GzipEncoder<W> {
    /// Returns the block buffer, and the permits of an encoder dropped
    /// mid-stream (a failed upload).
    fn drop(&mut self) {
        for rx in self.pending.drain(..) {
            let _ = rx.recv();
            BUDGET.give_back();
        }
        BUFFERS.give_back(std::mem::take(&mut self.block));
    }
}

/// Blocks in flight across all encoders: one per pool thread plus one
/// queued keeps every core busy, and more would only hold memory. Capped so
/// a many-core machine stays within tens of MiB.
static BUDGET: Budget = Budget { used: Mutex::new(0), freed: Condvar::new() };

struct Budget {
    used: Mutex<usize>,
    freed: Condvar,
}

impl Budget {
    fn limit() -> usize {
        (crate::pool().current_num_threads() + 1).min(MAX_BLOCKS_IN_FLIGHT)
    }

    fn try_take(&self) -> bool {
        let mut used = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *used < Self::limit() {
            *used += 1;
            true
        } else {
            false
        }
    }

    fn wait_and_take(&self) {
        let limit = Self::limit();
        let mut used = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *used >= limit {
            used = self.freed.wait(used).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *used += 1;
    }

    fn give_back(&self) {
        let mut used = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *used = used.saturating_sub(1);
        self.freed.notify_one();
    }
}

impl<W: Write> Write for GzipEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.dict_len + BLOCK_SIZE - self.block.len();
        let taken = &data[..data.len().min(room)];
        self.block.extend_from_slice(taken);
        self.crc.update(taken);
        self.total += taken.len() as u64;
        if self.block.len() == self.dict_len + BLOCK_SIZE {
            self.submit(false)?;
        }
        Ok(taken.len())
    }

    /// Blocks are cut by offset only, so a flush cannot end one early; the
    /// stream is complete at [`GzipEncoder::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raw deflate of `data` primed with `dict`: sync-flushed, or final if `last`.
fn deflate_fragment(level: u32, dict: &[u8], data: &[u8], last: bool) -> Fragment {
    let mut out = BUFFERS.take();
    #[cfg(feature = "isal")]
    if uses_isal(level) {
        crate::isal::deflate(level, dict, data, last, &mut out)?;
        return Ok(out);
    }
    zlib_deflate(level, dict, data, last, &mut out)?;
    Ok(out)
}

fn zlib_deflate(level: u32, dict: &[u8], data: &[u8], last: bool, out: &mut Vec<u8>) -> io::Result<()> {
    use flate2::{Compress, FlushCompress, Status};
    let mut deflate = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        deflate.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    loop {
        let consumed = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX);
        let status = deflate.compress_vec(&data[consumed..], out, flush).map_err(io::Error::other)?;
        let all_in = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX) == data.len();
        // Done when zlib had room left over: it stopped for want of input,
        // not of output space.
        let done = match status {
            Status::StreamEnd => true,
            Status::Ok | Status::BufError => !last && all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(());
        }
        out.reserve(64 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use proptest::prelude::*;

    use super::*;

    fn compress(level: u32, data: &[u8], write_size: usize) -> Vec<u8> {
        let mut encoder = GzipEncoder::new(Vec::new(), level);
        for piece in data.chunks(write_size.max(1)) {
            encoder.write_all(piece).unwrap();
        }
        encoder.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    /// Compressible but not trivial: text-like runs with noise.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        let words: [&[u8]; 6] = [b"layer ", b"registry ", b"manifest ", b"\x00\x00\x00\x00", b"usr/lib/", b"\n"];
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state.is_multiple_of(5) {
                out.push((state >> 24) as u8);
            } else {
                out.extend_from_slice(words[(state % 6) as usize]);
            }
        }
        out.truncate(len);
        out
    }

    #[test]
    fn every_level_round_trips_across_block_boundaries() {
        let data = sample(3 * BLOCK_SIZE + 12345, 7);
        for level in [1, 2, 3, 6, 9] {
            let gz = compress(level, &data, 100_000);
            assert_eq!(gunzip(&gz), data, "level {level}");
            assert!(gz.len() < data.len() / 2, "level {level} compressed to {} of {}", gz.len(), data.len());
        }
    }

    #[test]
    fn output_depends_on_the_input_only_not_on_how_it_is_written() {
        let data = sample(2 * BLOCK_SIZE + 999, 3);
        for level in [1, 6] {
            let reference = compress(level, &data, data.len());
            for write_size in [1 << 10, 4096 + 7, BLOCK_SIZE, BLOCK_SIZE + 1] {
                assert_eq!(compress(level, &data, write_size), reference, "level {level}, writes of {write_size}");
            }
        }
    }

    #[test]
    fn output_does_not_depend_on_the_thread_count() {
        let data = sample(5 * BLOCK_SIZE / 2, 11);
        let on_the_shared_pool = compress(1, &data, 65536);
        // The same stream compressed with every fragment made in turn on
        // this thread: what a one-core machine would produce.
        let mut serial = HEADER.to_vec();
        let mut start = 0;
        while start < data.len() || start == 0 {
            let end = (start + BLOCK_SIZE).min(data.len());
            let dict = &data[start.saturating_sub(WINDOW)..start];
            serial.extend(deflate_fragment(1, dict, &data[start..end], end == data.len()).unwrap());
            start = end;
        }
        serial.extend_from_slice(&crc32fast::hash(&data).to_le_bytes());
        serial.extend_from_slice(&(data.len() as u32).to_le_bytes());
        assert_eq!(on_the_shared_pool, serial);
    }

    #[test]
    fn empty_and_exact_block_inputs_are_valid_gzip() {
        for len in [0, 1, BLOCK_SIZE, 2 * BLOCK_SIZE] {
            let data = sample(len, 5);
            assert_eq!(gunzip(&compress(1, &data, 8192)), data, "{len} bytes");
        }
    }

    #[test]
    fn incompressible_input_grows_by_a_bounded_overhead() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let data: Vec<u8> = (0..3 * BLOCK_SIZE)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (state >> 56) as u8
            })
            .collect();
        for level in [1, 6] {
            let gz = compress(level, &data, 65536);
            assert_eq!(gunzip(&gz), data);
            // Stored blocks cost 5 bytes per 64 KiB; allow well under 1 %.
            assert!(gz.len() < data.len() + data.len() / 200, "level {level}: {} for {}", gz.len(), data.len());
        }
    }

    /// More encoders than the shared block budget, one dropped half-way (its
    /// permits must come back, or the rest would stall): all the others
    /// finish, with the bytes one encoder alone would make.
    #[test]
    fn many_encoders_share_the_block_budget_without_stalling() {
        let data = sample(3 * BLOCK_SIZE + 5, 13);
        let reference = compress(1, &data, 1 << 16);
        std::thread::scope(|scope| {
            let abandoned = scope.spawn(|| {
                let mut encoder = GzipEncoder::new(Vec::new(), 1);
                encoder.write_all(&data[..2 * BLOCK_SIZE + 7]).unwrap();
            });
            let workers: Vec<_> = (0..6).map(|_| scope.spawn(|| compress(1, &data, 1 << 16))).collect();
            abandoned.join().unwrap();
            for worker in workers {
                assert_eq!(worker.join().unwrap(), reference);
            }
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_input_round_trips(data in proptest::collection::vec(any::<u8>(), 0..200_000), level in 1u32..=9) {
            prop_assert_eq!(gunzip(&compress(level, &data, 4096)), data);
        }
    }
}

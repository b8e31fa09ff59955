//! Reuse of the ~1 MiB buffers a push moves through.
//!
//! A block buffer is filled on one thread and freed on another (the reader's
//! and the compressor's; the compressor's and the HTTP client's), hundreds of
//! times a second. Freed that way, mimalloc held up to twice the live memory
//! in pages it had not yet purged: peak memory of a default push varied from
//! 36 to 69 MiB between runs (bench/README.md, "Memory"). Buffers handed back
//! to a [`BufferPool`] are taken again instead, so the number ever allocated
//! is the number in use at the busiest moment.

use std::sync::{Mutex, PoisonError};

/// Spare buffers of one capacity, kept up to a count.
#[derive(Debug)]
pub struct BufferPool {
    capacity: usize,
    keep: usize,
    spare: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A pool of empty buffers with room for `capacity` bytes, keeping at most
    /// `keep` spare ones (more are freed).
    #[must_use]
    pub const fn new(capacity: usize, keep: usize) -> Self {
        Self { capacity, keep, spare: Mutex::new(Vec::new()) }
    }

    /// An empty buffer with room for the pool's capacity.
    pub fn take(&self) -> Vec<u8> {
        let spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner).pop();
        spare.unwrap_or_else(|| Vec::with_capacity(self.capacity))
    }

    /// Keeps `buffer` for the next [`BufferPool::take`]; one that grew or
    /// shrank, or one over the count, is freed.
    pub fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() != self.capacity {
            return;
        }
        buffer.clear();
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < self.keep {
            spare.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty() {
        let pool = BufferPool::new(64, 1);
        let mut buffer = pool.take();
        buffer.extend_from_slice(b"layer bytes");
        let address = buffer.as_ptr();
        pool.give_back(buffer);
        let again = pool.take();
        assert_eq!(again.as_ptr(), address);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), 64);
    }

    #[test]
    fn grown_buffers_and_those_over_the_count_are_freed() {
        let pool = BufferPool::new(64, 1);
        let mut grown = pool.take();
        grown.reserve(1000);
        pool.give_back(grown);
        assert_eq!(pool.spare.lock().unwrap().len(), 0);
        pool.give_back(Vec::with_capacity(64));
        pool.give_back(Vec::with_capacity(64));
        assert_eq!(pool.spare.lock().unwrap().len(), 1);
    }
}

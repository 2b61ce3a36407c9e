//! The reading end of the BPF ring buffer, with its data mapped once.
//!
//! The kernel lets a consumer map the data pages twice in a row so that no record ever
//! wraps, and aya's `RingBuf` does so: every page is then counted twice in crashtrace's
//! RSS (16 MiB of ring showed as 32 MB). Here the data is mapped once, and the rare record
//! that runs past the end is copied out in its two pieces. The protocol is the kernel's
//! (kernel/bpf/ringbuf.c): a writable page holding the consumer position, then a read-only
//! page holding the producer position followed by the data; each record is an 8-byte
//! header (length with a busy and a discard bit, page offset) and its sample, the pair
//! padded to 8 bytes.
//!
//! The data is mapped only while there is something to read: on a healthy machine the ring
//! is empty nearly always (records come from crashes), and its pages, counted in RSS while
//! mapped, are nearly all of crashtrace's memory at rest. The kernel keeps them allocated
//! either way; the first record after a quiet while maps them again (about a millisecond
//! for 16 MiB).

use std::{
    os::fd::{AsFd as _, AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Map, MapData};

/// The producer has reserved the record and not yet committed it.
const BUSY: u32 = 1 << 31;
/// The producer committed the record as discarded: skip it.
const DISCARD: u32 = 1 << 30;
const HEADER: u64 = 8;

/// What the header at the consumer position says.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Not committed yet: stop here and come back later.
    Busy,
    /// Nothing to read; the next record starts at `next`.
    Skip { next: u64 },
    /// A sample of `len` bytes after the header; the next record starts at `next`.
    Sample { len: usize, next: u64 },
}

fn step(header: u32, at: u64) -> Step {
    if header & BUSY != 0 {
        return Step::Busy;
    }
    let len = header & !(BUSY | DISCARD);
    let next = at + (u64::from(len) + HEADER).next_multiple_of(8);
    if header & DISCARD != 0 {
        Step::Skip { next }
    } else {
        Step::Sample {
            len: len as usize,
            next,
        }
    }
}

/// The `len` bytes at ring position `pos` of `data` (a power of two long): borrowed where
/// they lie in one piece, copied into `scratch` where they run past the end.
fn sample<'a>(data: &'a [u8], pos: u64, len: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let start = (pos & (data.len() as u64 - 1)) as usize;
    // A sample is never longer than the ring (the kernel refuses such a reservation);
    // the bound keeps a corrupt header from reading past the mapping.
    let len = len.min(data.len());
    if start + len <= data.len() {
        return &data[start..start + len];
    }
    let first = data.len() - start;
    scratch.clear();
    scratch.extend_from_slice(&data[start..]);
    scratch.extend_from_slice(&data[..len - first]);
    scratch
}

/// A shared mapping, unmapped when dropped.
struct Mapped {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapped {
    fn new(fd: RawFd, len: usize, prot: i32, offset: usize) -> Result<Self> {
        // SAFETY: a fresh mapping of a descriptor we hold; the kernel checks the range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping the ring buffer");
        }
        Ok(Self {
            ptr: NonNull::new(p.cast()).context("mmap returned null")?,
            len,
        })
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

pub struct Ring {
    /// Owns the descriptor the mappings were made from.
    map: MapData,
    consumer: Mapped,
    /// The producer page alone.
    producer: Mapped,
    /// The data, while mapped (see the module's comment).
    data: Option<Mapped>,
    /// When the last record was read, or the ring was made.
    last_record: Instant,
    /// The last try to map the data failed (said once, not at every try).
    map_failed: bool,
    page: usize,
    size: usize,
    scratch: Vec<u8>,
}

// SAFETY: the mappings are plain shared memory, read and the consumer position written
// only through `&mut self`; `&self` gives no more than the descriptor.
unsafe impl Send for Ring {}
// SAFETY: as for Send.
unsafe impl Sync for Ring {}

impl Ring {
    pub fn new(map: Map) -> Result<Self> {
        let Map::RingBuf(map) = map else {
            bail!("the events map is not a ring buffer");
        };
        let size = map
            .info()
            .context("reading the ring buffer's size")?
            .max_entries() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        if !size.is_power_of_two() || size < page {
            bail!("ring buffer of {size} bytes: not a power-of-two number of pages");
        }
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapped::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapped::new(fd, page, libc::PROT_READ, page)?;
        let mut ring = Self {
            map,
            consumer,
            producer,
            data: None,
            last_record: Instant::now(),
            map_failed: false,
            page,
            size,
            scratch: Vec::new(),
        };
        // Mapped once here so that a ring that cannot be mapped fails at start.
        ring.map_data()?;
        Ok(ring)
    }

    fn map_data(&mut self) -> Result<&Mapped> {
        if self.data.is_none() {
            let fd = self.map.fd().as_fd().as_raw_fd();
            let data = Mapped::new(fd, self.size, libc::PROT_READ, 2 * self.page)
                .context("mapping the ring buffer's data")?;
            self.data = Some(data);
        }
        Ok(self.data.as_ref().expect("mapped just above"))
    }

    /// Unmaps the data when nothing has been read for `quiet` and nothing waits to be:
    /// the caller's tick decides when to ask. Returns whether it did.
    pub fn release_if_quiet(&mut self, now: Instant, quiet: Duration) -> bool {
        let pending = self.consumer_pos().load(Ordering::Relaxed)
            < self.producer_pos().load(Ordering::Acquire);
        if self.data.is_none() || pending || now.duration_since(self.last_record) < quiet {
            return false;
        }
        self.data = None;
        true
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the consumer page starts with the position, 8-aligned, and lives as
        // long as `self`.
        unsafe { AtomicU64::from_ptr(self.consumer.ptr.as_ptr().cast()) }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: as above, for the producer page.
        unsafe { AtomicU64::from_ptr(self.producer.ptr.as_ptr().cast()) }
    }

    /// The next committed record, if any. The space it holds is given back to the
    /// kernel when the record is dropped. A ring whose data cannot be mapped now (no
    /// memory) keeps its records for a later call; that is said.
    pub fn next_record(&mut self) -> Option<Record<'_>> {
        loop {
            let cons = self.consumer_pos().load(Ordering::Relaxed);
            let prod = self.producer_pos().load(Ordering::Acquire);
            if cons >= prod {
                return None;
            }
            let size = self.size;
            let base = match self.map_data() {
                Ok(data) => data.ptr,
                Err(e) => {
                    if !std::mem::replace(&mut self.map_failed, true) {
                        log::warn!("{e:#}; the records wait in the ring");
                    }
                    return None;
                }
            };
            self.map_failed = false;
            self.last_record = Instant::now();
            let at = (cons & (size as u64 - 1)) as usize;
            // SAFETY: headers are 8-aligned inside the data, never across its end.
            let header = unsafe { AtomicU32::from_ptr(base.as_ptr().add(at).cast()) }
                .load(Ordering::Acquire);
            match step(header, cons) {
                Step::Busy => return None,
                Step::Skip { next } => self.consumer_pos().store(next, Ordering::Release),
                Step::Sample { len, next } => {
                    // SAFETY: the data mapping is `size` bytes long and stays mapped
                    // while `self` is borrowed by the record.
                    let data = unsafe { std::slice::from_raw_parts(base.as_ptr(), size) };
                    let (ptr, len) = {
                        let mut scratch = std::mem::take(&mut self.scratch);
                        let s = sample(data, cons + HEADER, len, &mut scratch);
                        let out = (s.as_ptr(), s.len());
                        self.scratch = scratch;
                        out
                    };
                    return Some(Record {
                        ring: self,
                        ptr,
                        len,
                        next,
                    });
                }
            }
        }
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

/// One record's bytes, valid until it is dropped.
pub struct Record<'a> {
    ring: &'a mut Ring,
    ptr: *const u8,
    len: usize,
    next: u64,
}

impl std::ops::Deref for Record<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the bytes lie in the data mapping (not yet given back) or in the
        // scratch buffer (moved back unchanged, not touched while the record lives).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        self.ring.consumer_pos().store(self.next, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let cases = [
            (BUSY | 12, 0, Step::Busy),
            (BUSY | DISCARD | 12, 0, Step::Busy),
            (12, 0, Step::Sample { len: 12, next: 24 }),
            (16, 8, Step::Sample { len: 16, next: 32 }),
            (0, 40, Step::Sample { len: 0, next: 48 }),
            (DISCARD | 5, 64, Step::Skip { next: 80 }),
        ];
        for (header, at, want) in cases {
            assert_eq!(step(header, at), want, "header {header:#x} at {at}");
        }
    }

    #[test]
    fn samples_in_one_piece_or_two() {
        let data: Vec<u8> = (0..32).collect();
        let mut scratch = Vec::new();
        let cases: [(u64, usize, Vec<u8>); 5] = [
            (8, 4, vec![8, 9, 10, 11]),
            // Positions grow without bound; the ring's size masks them.
            (32 + 8, 4, vec![8, 9, 10, 11]),
            (28, 4, vec![28, 29, 30, 31]),
            (30, 5, vec![30, 31, 0, 1, 2]),
            (
                64 + 24,
                12,
                vec![24, 25, 26, 27, 28, 29, 30, 31, 0, 1, 2, 3],
            ),
        ];
        for (pos, len, want) in cases {
            assert_eq!(
                sample(&data, pos, len, &mut scratch),
                want,
                "{len} at {pos}"
            );
        }
        // A length past the ring's size (a corrupt header) reads the ring once at most.
        assert_eq!(sample(&data, 0, 1000, &mut scratch).len(), 32);
        assert_eq!(sample(&data, 5, 1000, &mut scratch).len(), 32);
    }
}

//! The kernel's own record of every executable mapping, process fork, exec and exit,
//! read from one dummy software perf event per CPU (what `perf record` uses for the
//! same purpose). This costs the traced processes nothing beyond what the kernel
//! already does at mmap time, and it is complete for processes that live only a few
//! milliseconds, which polling /proc can never be.

use anyhow::{Context as _, Result};
use perf_event::{Builder, Sampler, events::Software};
use std::{
    collections::HashMap,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
};

use super::{
    pins::FilePins,
    processes::ProcessTable,
    sideband::{Change, parse},
};
use crate::sys::{buildid::BuildId, procfs::Mapping};

pub struct MappingStream {
    samplers: Vec<Sampler>,
    /// The same mmap records with the mapped file's build ID in place of its device and
    /// inode (the kernel gives one or the other): it names a file that is gone.
    id_samplers: Vec<Sampler>,
    /// Readable when a process exec'd: the drain need not wait for a tick, so a new
    /// program's files are pinned within microseconds of being mapped.
    wakeup: Option<Wakeup>,
    /// Every kind of record again, each one waking the reader, enabled only while the
    /// machine is quiet (see `arm_waker`); what they carry is thrown away.
    wakers: Vec<Sampler>,
    /// Build IDs whose mapping record has not been applied yet, by (pid, start).
    early_ids: HashMap<(u32, u64), BuildId>,
    /// Records the kernel had to drop because a buffer was full.
    pub lost: u64,
    /// One drain's records, kept for the next drain's (no allocation per drain).
    batch: Vec<(u64, Change)>,
}

/// An epoll descriptor holding every mapping-record buffer, for the event loop to wait
/// on. The kernel's perf poll reports a buffer once per wakeup, so draining its own
/// ready list (`consume`) leaves it quiet until the next record.
pub struct Wakeup(OwnedFd);

impl AsRawFd for Wakeup {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Wakeup {
    pub fn consume(&self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: a valid epoll descriptor and buffer; timeout 0 never blocks.
            let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), 64, 0) };
            if n < 64 {
                break;
            }
        }
    }
}

/// Most build IDs held for mapping records still to come.
const MAX_EARLY_IDS: usize = 4096;

impl MappingStream {
    /// Opens four events per online CPU. `total_bytes`: the mapping records' buffers of
    /// all CPUs together (see `per_cpu_bytes`).
    /// With `wake_on_exec`, every exec wakes the reader (see `Wakeup`); otherwise the
    /// records wait for the caller's drain.
    pub fn open(total_bytes: usize, wake_on_exec: bool) -> Result<Self> {
        let cpus = online_cpus().context("reading the online CPUs")?;
        let ring_bytes = per_cpu_bytes(total_bytes, cpus.len());
        // SAFETY: plain syscall; the descriptor is owned right away.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: a fresh descriptor we own.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut samplers = Vec::with_capacity(cpus.len());
        let mut id_samplers = Vec::with_capacity(cpus.len());
        let mut wakers = Vec::with_capacity(cpus.len());
        let watch = |s: &Sampler| {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            // SAFETY: valid descriptors and event.
            if unsafe {
                libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev)
            } != 0
            {
                return Err(std::io::Error::last_os_error()).context("epoll_ctl");
            }
            Ok(())
        };
        for cpu in cpus {
            let execs = open_one(cpu, 64 << 10, Stream::Execs, wake_on_exec)?;
            watch(&execs)?;
            samplers.push(open_one(cpu, ring_bytes, Stream::Mappings, false)?);
            samplers.push(execs);
            id_samplers.push(open_one(cpu, ring_bytes / 2, Stream::BuildIds, false)?);
            let waker = open_one(cpu, 8 << 10, Stream::Waker, true)?;
            watch(&waker)?;
            wakers.push(waker);
        }
        Ok(Self {
            samplers,
            id_samplers,
            wakers,
            wakeup: Some(Wakeup(ep)),
            early_ids: HashMap::new(),
            lost: 0,
            batch: Vec::new(),
        })
    }

    /// The descriptor to wait on for new records (once).
    pub fn take_wakeup(&mut self) -> Option<Wakeup> {
        self.wakeup.take()
    }

    /// With `on`, the next record of any kind makes the wakeup descriptor readable: the
    /// reader may then sleep without a tick while nothing happens. Off again, what the
    /// wakers wrote is discarded (the records themselves come through the other streams).
    pub fn arm_waker(&mut self, on: bool) {
        for w in &mut self.wakers {
            let done = if on { w.enable() } else { w.disable() };
            if let Err(e) = done {
                log::debug!("perf waker: {e}");
            }
            if !on {
                while w.next_record().is_some() {}
            }
        }
    }

    /// Applies every pending record to `table`, in time order across CPUs.
    /// New file mappings are pinned (see `FilePins`) while their process still exists.
    /// Returns what changed, for those who keep per-process state of their own.
    pub fn drain_into(&mut self, table: &mut ProcessTable, pins: &mut FilePins) -> Drained {
        let mut batch = std::mem::take(&mut self.batch);
        for s in &mut self.samplers {
            read_records(s, &mut batch, false);
        }
        // Build-ID records after the plain ones: for the same mmap both have the same
        // time, and a stable sort keeps this order.
        for s in &mut self.id_samplers {
            read_records(s, &mut batch, true);
        }
        batch.sort_by_key(|(t, _)| *t);
        let mut d = Drained {
            records: batch.len(),
            ..Default::default()
        };
        for (time, change) in batch.drain(..) {
            match change {
                Change::Mmap(pid, mut m) => {
                    pins.pin(pid, &m);
                    if let Some(id) = self.early_ids.remove(&(pid, m.start)) {
                        m.build_id = Some(id);
                        pins.index(&m, id);
                    }
                    if m.is_file() {
                        d.mmaps.push((pid, m.clone()));
                    }
                    table.on_mmap(pid, m)
                }
                Change::BuildId(pid, start, id) => match table.set_build_id(pid, start, id) {
                    Some(m) => pins.index(&m, id),
                    None => {
                        if self.early_ids.len() >= MAX_EARLY_IDS {
                            self.early_ids.clear();
                        }
                        self.early_ids.insert((pid, start), id);
                    }
                },
                Change::Exec(pid) => {
                    d.events.push(Lifecycle::Exec(pid));
                    table.on_exec(pid, time)
                }
                Change::Fork(pid, parent) => {
                    d.events.push(Lifecycle::Fork(pid, parent));
                    table.on_fork(pid, parent, time)
                }
                Change::Exit(pid) => {
                    d.events.push(Lifecycle::Exit(pid));
                    table.on_exit(pid, time)
                }
                Change::Lost(n) => self.lost += n,
            }
        }
        self.batch = batch;
        d
    }
}

/// Which of the kernel's side-band records a dummy event carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// Every executable mmap (device and inode), fork and exit.
    Mappings,
    /// Exec (comm) records only, each one waking the reader when asked for: one wakeup
    /// per exec, just ahead of the new image's mappings, instead of one per record.
    Execs,
    /// Executable mmaps again, with the file's build ID in place of device and inode.
    BuildIds,
    /// Mmaps, forks, exits and execs, created disabled: only to wake the reader.
    Waker,
}

/// One dummy software event on `cpu` for one kind of side-band record.
fn open_one(cpu: usize, ring_bytes: usize, stream: Stream, wake: bool) -> Result<Sampler> {
    let mut b = Builder::new(Software::DUMMY);
    let maps = stream != Stream::Execs;
    let execs = matches!(stream, Stream::Execs | Stream::Waker);
    b.any_pid()
        .one_cpu(cpu)
        .exclude_kernel(false)
        .mmap(maps)
        .mmap2(maps)
        .build_id(stream == Stream::BuildIds)
        .comm(execs)
        .comm_exec(execs)
        .task(matches!(stream, Stream::Mappings | Stream::Waker))
        .sample_id_all(true)
        .sample(perf_event::SampleFlag::TID | perf_event::SampleFlag::TIME)
        .clockid(perf_event::Clock::MONOTONIC)
        .enabled(stream != Stream::Waker);
    if wake {
        b.wakeup_watermark(1);
    }
    let counter = b
        .build()
        .with_context(|| format!("perf_event_open (mapping records) on CPU {cpu}"))?;
    counter.sampled(ring_bytes).context("mapping the perf ring")
}

fn read_records(s: &mut Sampler, batch: &mut Vec<(u64, Change)>, ids: bool) {
    while let Some(rec) = s.next_record() {
        let raw = rec.to_contiguous();
        // sample_id (pid, tid, time) trails every record: time is the last u64.
        let time = raw
            .len()
            .checked_sub(8)
            .map(|o| u64::from_ne_bytes(raw[o..].try_into().unwrap()))
            .unwrap_or(0);
        if let Some(change) = parse(rec.ty(), rec.misc(), &raw, ids) {
            batch.push((time, change));
        }
    }
}

/// What one drain changed, in time order within each list.
#[derive(Default)]
pub struct Drained {
    /// Records applied.
    pub records: usize,
    /// New file mappings, by process.
    pub mmaps: Vec<(u32, Mapping)>,
    pub events: Vec<Lifecycle>,
}

pub enum Lifecycle {
    Exec(u32),
    /// (child, parent)
    Fork(u32, u32),
    Exit(u32),
}

/// Each CPU's share of `total` bytes of mapping-record buffers, a power of two from
/// `MIN_PER_CPU` to `MAX_PER_CPU`. The kernel allocates every buffer whole, whether or not
/// it fills, so a fixed size per CPU costs a 128-CPU host 32 times what it costs a
/// 4-CPU one; one CPU's records between two drains (5 ms) take a few KiB.
fn per_cpu_bytes(total: usize, cpus: usize) -> usize {
    const MIN_PER_CPU: usize = 256 << 10;
    const MAX_PER_CPU: usize = 4 << 20;
    let share = total / cpus.max(1);
    // The largest power of two not above the share.
    let pow2 = if share == 0 { 0 } else { 1 << share.ilog2() };
    pow2.clamp(MIN_PER_CPU, MAX_PER_CPU)
}

fn online_cpus() -> Result<Vec<usize>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    parse_cpu_list(text.trim())
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>()?..=b.parse::<usize>()?),
            None => cpus.push(part.parse()?),
        }
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists() {
        assert_eq!(
            super::parse_cpu_list("0-3,8,10-11").unwrap(),
            [0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(super::parse_cpu_list("0").unwrap(), [0]);
        assert!(super::parse_cpu_list("x").is_err());
    }

    #[test]
    fn buffers_per_cpu() {
        const MIB: usize = 1 << 20;
        for (total, cpus, each) in [
            (8 * MIB, 1, 4 * MIB),
            (8 * MIB, 2, 4 * MIB),
            (8 * MIB, 4, 2 * MIB),
            (8 * MIB, 6, MIB),
            (8 * MIB, 32, 256 << 10),
            (8 * MIB, 128, 256 << 10),
            (8 * MIB, 0, 4 * MIB),
            (0, 4, 256 << 10),
        ] {
            assert_eq!(
                super::per_cpu_bytes(total, cpus),
                each,
                "{total} over {cpus}"
            );
        }
    }
}

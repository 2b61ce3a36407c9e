//! The kernel's own record of every executable mapping, process fork, exec and exit,
//! read from one dummy software perf event per CPU (what `perf record` uses for the
//! same purpose). This costs the traced processes nothing beyond what the kernel
//! already does at mmap time, and it is complete for processes that live only a few
//! milliseconds, which polling /proc can never be.

use anyhow::{Context as _, Result};
use perf_event::data::Record;
use perf_event::{Builder, Sampler, events::Software};
use std::{
    collections::HashMap,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    sync::Arc,
};

use super::{pins::FilePins, processes::ProcessTable};
use crate::sys::{buildid::BuildId, procfs::Mapping};

/// PERF_RECORD_MMAP2's type.
const PERF_RECORD_MMAP2: u32 = 10;

/// PERF_RECORD_MISC_COMM_EXEC: the comm change comes from execve.
const MISC_COMM_EXEC: u16 = 1 << 13;

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
    /// Opens three events per online CPU. `ring_bytes` is the per-CPU buffer size of the
    /// mapping records.
    /// With `wake_on_exec`, every exec wakes the reader (see `Wakeup`); otherwise the
    /// records wait for the caller's drain.
    pub fn open(ring_bytes: usize, wake_on_exec: bool) -> Result<Self> {
        let cpus = online_cpus().context("reading the online CPUs")?;
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
        let mut batch: Vec<(u64, Change)> = Vec::new();
        for s in &mut self.samplers {
            read_records(s, &mut batch, &mut self.lost, false);
        }
        // Build-ID records after the plain ones: for the same mmap both have the same
        // time, and a stable sort keeps this order.
        for s in &mut self.id_samplers {
            read_records(s, &mut batch, &mut self.lost, true);
        }
        batch.sort_by_key(|(t, _)| *t);
        let mut d = Drained {
            records: batch.len(),
            ..Default::default()
        };
        for (time, change) in batch {
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
            }
        }
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

/// The body (after the header) of a PERF_RECORD_MMAP2 in its device-and-inode form: pid,
/// tid (u32), addr, len, pgoff (u64), maj, min (u32), ino, ino_generation (u64), prot,
/// flags (u32), then the NUL-padded file name and the sample_id fields.
fn mmap2_with_inode(raw: &[u8]) -> Option<(u32, Mapping)> {
    let u32_at = |o: usize| Some(u32::from_ne_bytes(raw.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_ne_bytes(raw.get(o..o + 8)?.try_into().ok()?));
    let name = raw.get(64..)?;
    let name = &name[..name.iter().position(|&b| b == 0)?];
    let (addr, len) = (u64_at(8)?, u64_at(16)?);
    Some((
        u32_at(0)?,
        Mapping {
            start: addr,
            end: addr.checked_add(len)?,
            offset: u64_at(24)?,
            dev_major: u32_at(32)?,
            dev_minor: u32_at(36)?,
            inode: u64_at(40)?,
            path: Arc::from(String::from_utf8_lossy(name).as_ref()),
            build_id: None,
        },
    ))
}

fn read_records(s: &mut Sampler, batch: &mut Vec<(u64, Change)>, lost: &mut u64, ids: bool) {
    while let Some(rec) = s.next_record() {
        let raw = rec.to_contiguous();
        // sample_id (pid, tid, time) trails every record: time is the last u64.
        let time = raw
            .len()
            .checked_sub(8)
            .map(|o| u64::from_ne_bytes(raw[o..].try_into().unwrap()))
            .unwrap_or(0);
        let misc = rec.misc();
        // The kernel leaves the build-ID flag set in the header of the records it writes
        // for the other events after a build-ID event: the plain stream's mmap records
        // are read by hand, by their layout (perf_event_open(2), PERF_RECORD_MMAP2).
        if !ids && rec.ty() == PERF_RECORD_MMAP2 {
            if let Some((pid, m)) = mmap2_with_inode(&raw) {
                batch.push((time, Change::Mmap(pid, m)));
            }
            continue;
        }
        let Ok(parsed) = rec.parse_record() else {
            continue;
        };
        match parsed {
            Record::Mmap2(m) if ids => {
                if let Some(id) = m.build_id().and_then(BuildId::new) {
                    batch.push((time, Change::BuildId(m.pid, m.addr, id)));
                }
            }
            Record::Comm(c) if misc & MISC_COMM_EXEC != 0 => {
                batch.push((time, Change::Exec(c.pid)))
            }
            Record::Fork(f) if f.pid != f.ppid => batch.push((time, Change::Fork(f.pid, f.ppid))),
            Record::Exit(e) if e.pid == e.tid => batch.push((time, Change::Exit(e.pid))),
            Record::Lost(l) => *lost += l.lost,
            _ => {}
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

enum Change {
    Mmap(u32, Mapping),
    /// (pid, start of the mapping, the mapped file's build ID)
    BuildId(u32, u64, BuildId),
    Exec(u32),
    Fork(u32, u32),
    Exit(u32),
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
    fn mmap2_records_by_their_layout() {
        let mut raw = vec![0u8; 64];
        raw[0..4].copy_from_slice(&42u32.to_ne_bytes());
        raw[8..16].copy_from_slice(&0x5000u64.to_ne_bytes());
        raw[16..24].copy_from_slice(&0x2000u64.to_ne_bytes());
        raw[24..32].copy_from_slice(&0x1000u64.to_ne_bytes());
        raw[32..36].copy_from_slice(&0xfdu32.to_ne_bytes());
        raw[36..40].copy_from_slice(&1u32.to_ne_bytes());
        raw[40..48].copy_from_slice(&131u64.to_ne_bytes());
        raw.extend_from_slice(b"/usr/bin/victim\0\0");
        let (pid, m) = super::mmap2_with_inode(&raw).unwrap();
        assert_eq!(
            (pid, m.start, m.end, m.offset),
            (42, 0x5000, 0x7000, 0x1000)
        );
        assert_eq!((m.dev_major, m.dev_minor, m.inode), (0xfd, 1, 131));
        assert_eq!(&*m.path, "/usr/bin/victim");
        // Cut short, or a name without its NUL: nothing.
        assert!(super::mmap2_with_inode(&raw[..52]).is_none());
        assert!(super::mmap2_with_inode(&raw[..72]).is_none());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(
            super::parse_cpu_list("0-3,8,10-11").unwrap(),
            [0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(super::parse_cpu_list("0").unwrap(), [0]);
        assert!(super::parse_cpu_list("x").is_err());
    }
}

//! The kernel's own record of every executable mapping, process fork, exec and exit,
//! read from one dummy software perf event per CPU (what `perf record` uses for the
//! same purpose). This costs the traced processes nothing beyond what the kernel
//! already does at mmap time, and it is complete for processes that live only a few
//! milliseconds, which polling /proc can never be.

use anyhow::{Context as _, Result};
use perf_event::data::Record;
use perf_event::{Builder, Sampler, events::Software};
use std::sync::Arc;

use super::{pins::FilePins, processes::ProcessTable};
use crate::sys::procfs::Mapping;

/// PERF_RECORD_MISC_COMM_EXEC: the comm change comes from execve.
const MISC_COMM_EXEC: u16 = 1 << 13;

pub struct MappingStream {
    samplers: Vec<Sampler>,
    /// Records the kernel had to drop because a buffer was full.
    pub lost: u64,
}

impl MappingStream {
    /// Opens one event per online CPU. `ring_bytes` is the per-CPU buffer size.
    pub fn open(ring_bytes: usize) -> Result<Self> {
        let cpus = online_cpus().context("reading the online CPUs")?;
        let mut samplers = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let mut b = Builder::new(Software::DUMMY);
            b.any_pid()
                .one_cpu(cpu)
                .exclude_kernel(false)
                .mmap(true)
                .mmap2(true)
                .comm(true)
                .comm_exec(true)
                .task(true)
                .sample_id_all(true)
                .sample(perf_event::SampleFlag::TID | perf_event::SampleFlag::TIME)
                .clockid(perf_event::Clock::MONOTONIC)
                .enabled(true);
            let counter = b
                .build()
                .with_context(|| format!("perf_event_open (mapping records) on CPU {cpu}"))?;
            samplers.push(
                counter
                    .sampled(ring_bytes)
                    .context("mapping the perf ring")?,
            );
        }
        Ok(Self { samplers, lost: 0 })
    }

    /// Applies every pending record to `table`, in time order across CPUs.
    /// New file mappings are pinned (see `FilePins`) while their process still exists.
    /// Returns what changed, for those who keep per-process state of their own.
    pub fn drain_into(&mut self, table: &mut ProcessTable, pins: &mut FilePins) -> Drained {
        let mut batch: Vec<(u64, Change)> = Vec::new();
        for s in &mut self.samplers {
            while let Some(rec) = s.next_record() {
                let raw = rec.to_contiguous();
                // sample_id (pid, tid, time) trails every record: time is the last u64.
                let time = raw
                    .len()
                    .checked_sub(8)
                    .map(|o| u64::from_ne_bytes(raw[o..].try_into().unwrap()))
                    .unwrap_or(0);
                let misc = rec.misc();
                let Ok(parsed) = rec.parse_record() else {
                    continue;
                };
                match parsed {
                    Record::Mmap2(m) => {
                        let (dev_major, dev_minor, inode) = (
                            m.maj().unwrap_or(0),
                            m.min().unwrap_or(0),
                            m.ino().unwrap_or(0),
                        );
                        batch.push((
                            time,
                            Change::Mmap(
                                m.pid,
                                Mapping {
                                    start: m.addr,
                                    end: m.addr + m.len,
                                    offset: m.pgoff,
                                    dev_major,
                                    dev_minor,
                                    inode,
                                    path: Arc::from(String::from_utf8_lossy(&m.filename).as_ref()),
                                },
                            ),
                        ))
                    }
                    Record::Comm(c) if misc & MISC_COMM_EXEC != 0 => {
                        batch.push((time, Change::Exec(c.pid)))
                    }
                    Record::Fork(f) if f.pid != f.ppid => {
                        batch.push((time, Change::Fork(f.pid, f.ppid)))
                    }
                    Record::Exit(e) if e.pid == e.tid => batch.push((time, Change::Exit(e.pid))),
                    Record::Lost(l) => self.lost += l.lost,
                    _ => {}
                }
            }
        }
        batch.sort_by_key(|(t, _)| *t);
        let mut d = Drained::default();
        for (time, change) in batch {
            match change {
                Change::Mmap(pid, m) => {
                    pins.pin(pid, &m);
                    if m.is_file() {
                        d.mmaps.push((pid, m.clone()));
                    }
                    table.on_mmap(pid, m)
                }
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

/// What one drain changed, in time order within each list.
#[derive(Default)]
pub struct Drained {
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
    fn cpu_lists() {
        assert_eq!(
            super::parse_cpu_list("0-3,8,10-11").unwrap(),
            [0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(super::parse_cpu_list("0").unwrap(), [0]);
        assert!(super::parse_cpu_list("x").is_err());
    }
}

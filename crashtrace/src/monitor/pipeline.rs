//! The state the event loop keeps between events, and what it does with each: records
//! from the ring buffer, mapping records, ticks.

use std::time::Duration;

use super::{
    HOUSEKEEPING_NS, monotonic_ns,
    pace::{self, Pace},
    workers::{Analysis, Job, Registrar, Registration},
};
use crate::{
    assemble::{Assembled, Assembler},
    capture::{
        perf::MappingStream,
        pins::FilePins,
        processes::ProcessTable,
        records::{Event, decode},
    },
    python::runtime::version_from_name,
    report::{attribution::FailureLedger, gpu::xids_for},
    symbolize::libc::is_glibc,
    sys::{cgroups::CgroupNames, kmsg::Kmsg, wait},
};

/// glibc files registered at most (the kernel map's size).
const MAX_LIBC_FILES: usize = 256;

/// The state the loop keeps between events.
pub(super) struct Pipeline {
    pub(super) table: ProcessTable,
    pub(super) pins: FilePins,
    pub(super) cgroups: CgroupNames,
    pub(super) stream: MappingStream,
    pub(super) assembler: Assembler,
    pub(super) analysis: Analysis,
    pub(super) registrar: Registrar,
    /// Run mode: only this process and its descendants are reported.
    pub(super) scope: Option<u32>,
    /// When the process table was last pruned.
    pub(super) housekept_ns: u64,
    /// Recent failures by job: a rank killed after another's fault names it.
    pub(super) failures: FailureLedger,
    /// The kernel log, for the GPU driver's Xid lines.
    pub(super) kmsg: Kmsg,
    /// glibc files already handed to the registration thread.
    pub(super) libc_inodes: std::collections::HashSet<crate::capture::pins::FileKey>,
    /// The processes whose lifecycles the Python registry hears about.
    pub(super) python: crate::python::interest::Interest,
}

impl Pipeline {
    /// Crashes still waiting for their process's exit within the run-mode scope.
    pub(super) fn pending_in_scope(&self) -> bool {
        let mut pids = self.assembler.pending_pids();
        match self.scope {
            Some(root) => pids.any(|pid| self.table.is_descendant(pid, root)),
            None => pids.next().is_some(),
        }
    }

    pub(super) fn on_record(&mut self, buf: &[u8]) {
        match decode(buf) {
            Ok(event) => {
                if let Event::Signal(c) = &event {
                    // The process may be gone within microseconds: take what is still
                    // to be had of its files now, before anything else.
                    self.drain();
                    self.pin_process(c.pid, c.ktime_ns);
                    self.python.note(c.pid);
                    self.registrar.send(Registration::Captured(c.pid));
                }
                if let Some(a) = self.assembler.push(event, monotonic_ns()) {
                    self.on_assembled(a);
                }
            }
            Err(e) => say!("crashtrace: dropped an undecodable record: {e:#}"),
        }
    }

    pub(super) fn on_assembled(&mut self, a: Assembled) {
        match a {
            Assembled::Crash(crash) => self.report(*crash),
            Assembled::CaptureLost(e) => say!(
                "crashtrace: process {} {} but its capture was lost (ring buffer full; \
                 raise --ring-buffer-size)",
                e.header.pid,
                wait::decode(e.exit_code as i32).words
            ),
            Assembled::OrphanThread { pid, tid } => {
                say!("crashtrace: thread {tid} of process {pid} captured without its crash record")
            }
            Assembled::Recovered { pid, tid, signo } => {
                log::debug!("{pid}/{tid}: the handler of signal {signo} recovered")
            }
        }
    }

    /// Applies pending mapping records; keeps the Python registry current. Returns how
    /// many there were.
    pub(super) fn drain(&mut self) -> usize {
        let d = self.stream.drain_into(&mut self.table, &mut self.pins);
        let records = d.records;
        // Lifecycle first: within one drain an exec precedes the new image's mappings.
        let events = self.python.filter(d.events);
        if !events.is_empty() {
            self.registrar.send(Registration::Lifecycles(events));
        }
        for (pid, m) in d.mmaps {
            self.register_mapping(pid, m);
        }
        records
    }

    /// Sets the loop's own tick to `period` (see `pace`): while slow, the kernel's next
    /// record wakes the loop instead.
    pub(super) fn repace(
        &mut self,
        pace: &mut Pace,
        mut period: Duration,
    ) -> tokio::time::Interval {
        let slow = period == pace::SLOW;
        self.stream.arm_waker(slow);
        // A record written just before the waker was armed woke nobody.
        if slow && self.drain() > 0 {
            self.stream.arm_waker(false);
            period = pace.woke().unwrap_or(pace::FAST);
        }
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    }

    /// Hands a mapping of a file named like an interpreter or glibc to the registration
    /// thread.
    pub(super) fn register_mapping(&mut self, pid: u32, m: crate::sys::procfs::Mapping) {
        // Each glibc file once: every process maps one.
        let new_libc = is_glibc(&m.path)
            && self.libc_inodes.len() < MAX_LIBC_FILES
            && self.libc_inodes.insert((m.dev_major, m.dev_minor, m.inode));
        let python = version_from_name(&m.path).is_some();
        if python {
            self.python.note(pid);
        }
        if python || new_libc {
            let pinned = self.pins.get(&m);
            self.registrar.send(Registration::Mapping(pid, m, pinned));
        }
    }

    /// Pins every file process `pid` maps at `time_ns` that is not pinned yet (its
    /// mapping record may have come after the process had already run to its crash).
    pub(super) fn pin_process(&mut self, pid: u32, time_ns: u64) {
        for m in self.table.mappings_at(pid, time_ns) {
            if m.is_file() && !self.pins.has(&m) {
                self.pins.pin(pid, &m);
            }
        }
    }

    /// For each file of the crashed process that is neither pinned nor at its path any
    /// more, a live process that maps a file with the same build ID: pinned through it.
    pub(super) fn pin_through_others(&mut self, pid: u32, maps: &[crate::sys::procfs::Mapping]) {
        for m in maps {
            let Some(id) = m.build_id else { continue };
            if !m.is_file() || self.pins.has(m) {
                continue;
            }
            if self.pins.by_build_id(&id).is_some() {
                continue;
            }
            if let Some((other, om)) = self.table.live_with_build_id(&id, pid) {
                self.pins.pin(other, &om);
                self.pins.index(&om, id);
            }
        }
    }

    pub(super) fn report(&mut self, crash: crate::assemble::Crash) {
        // Mapping records written before the crash may still sit in the perf buffers.
        self.drain();
        let s = &crash.subject;
        if let Some(root) = self.scope
            && !self.table.is_descendant(s.pid, root)
        {
            // Run mode: another process on the machine; not what was asked about.
            return;
        }
        let maps = self.table.mappings_at(s.pid, s.ktime_ns);
        self.pin_through_others(s.pid, &maps);
        let earlier_failure = self.failures.take(&crash);
        self.kmsg.drain();
        let has_gpu = crash
            .memory
            .as_ref()
            .is_some_and(|m| m.gpu_minors != 0 || m.gpu_flags != 0);
        let xid = xids_for(self.kmsg.recent(), s.pid, crash.fatal().ktime_ns, has_gpu);
        self.analysis.send(Job {
            earlier_failure,
            xid,
            pins: self.pins.subset(&maps),
            executable: self.table.exe_at(s.pid, s.ktime_ns),
            cgroup: self.cgroups.path(s.cgroup_id),
            mappings: maps,
            crash: Box::new(crash),
        });
    }

    /// Whether there was anything to do: records, or crashes waiting for their exit.
    pub(super) fn tick(&mut self) -> bool {
        let active = self.drain() > 0 || self.assembler.has_pending();
        let now = monotonic_ns();
        for a in self.assembler.expire(now) {
            self.on_assembled(a);
        }
        // Expiry walks every known process: far less often than the drains, which must
        // keep up with short-lived processes.
        if now.saturating_sub(self.housekept_ns) >= HOUSEKEEPING_NS {
            self.housekept_ns = now;
            let awaited = self.assembler.awaited_pids();
            self.table.expire(now, |pid| awaited.contains(&pid));
        }
        active
    }
}

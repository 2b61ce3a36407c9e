//! Record assembly: decoded ring-buffer records in, complete crashes out.
//!
//! One crash arrives as several records: the fatal signal's capture (after a handler's
//! capture and its re-raise, when the program had one), the other threads' captures at
//! the group exit, the mapping at the fault, an OOM victim record, Python threads and
//! code objects, and last the process's exit. This stage pairs them by process and
//! thread id and time, and hands on a [`Crash`] once the exit is in (or at a deadline
//! without it). It does no I/O and reads no clock: the time comes with each call.

mod memory;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use crashtrace_common::{
    EXIT_AFTER_HANDLER, FaultMaps, HANDLED_END_NS, OomVictim, ProcessExit, PyCode, PyThread,
};

use crate::capture::records::{Capture, Event};
pub use memory::{DEFAULT_ENV_ALLOW, EnvAllow, ProcessMemory};

/// Captures taken while a handler was installed wait this long for the process to die
/// of the same signal; if it does not, the handler recovered and nothing is reported.
pub const HANDLED_WAIT_NS: u64 = 10_000_000_000;
/// How long a crash waits for its process's exit (a core dump delays it) before it is
/// reported without the outcome.
pub const EXIT_WAIT_NS: u64 = 10_000_000_000;
/// Captures under a handler held at most (each is a whole stack copy).
const MAX_HANDLED: usize = 1024;
/// How often the side tables (fault maps, OOM, Python, handled captures) are pruned.
const HOUSEKEEPING_NS: u64 = 200_000_000;
/// Side records older than this belong to no crash that can still come.
const SIDE_RECORD_NS: u64 = HANDLED_WAIT_NS + EXIT_WAIT_NS;

/// Everything the kernel sent about one crash.
#[derive(Clone, Debug)]
pub struct Crash {
    /// The capture whose stack leads the report (the original fault if a handler ran).
    pub subject: Capture,
    /// The fatal re-raise, when `subject` went through a handler (or another fatal signal
    /// the handler raised soon after, such as `abort()`'s SIGABRT).
    pub reraise: Option<Capture>,
    /// The other threads, at the group exit (and any second thread that died of a fatal
    /// signal before it).
    pub threads: Vec<Capture>,
    /// None when the exit was not seen by the deadline.
    pub exit: Option<ProcessExit>,
    /// The kernel's mapping at the subject's fault address.
    pub fault_maps: Option<FaultMaps>,
    /// Set when the OOM killer chose the process before this SIGKILL.
    pub oom: Option<OomVictim>,
    pub python: Option<PyRecords>,
    /// The allowlisted environment and the abort message, from the subject's capture.
    pub memory: Option<ProcessMemory>,
}

impl Crash {
    /// The capture of the signal that killed the process.
    pub fn fatal(&self) -> &Capture {
        self.reraise.as_ref().unwrap_or(&self.subject)
    }

    /// Whether a handler ran and the process then exited without a fatal signal.
    pub fn exited_after_handler(&self) -> bool {
        !self.subject.default_action && self.reraise.is_none()
    }
}

/// What the eBPF program sent about one process's Python threads at its crash.
#[derive(Clone, Debug, Default)]
pub struct PyRecords {
    /// When the first record came.
    pub ktime_ns: u64,
    pub threads: Vec<PyThread>,
    pub codes: HashMap<u64, PyCode>,
    /// A second batch (a handler's re-raise) repeats the threads: the first one is kept,
    /// as it shows the original fault.
    complete: bool,
}

impl PyRecords {
    pub fn add_thread(&mut self, t: PyThread) {
        if self.ktime_ns == 0 {
            self.ktime_ns = t.header.ktime_ns;
        }
        if self.complete || self.threads.iter().any(|x| x.thread_id == t.thread_id) {
            self.complete = true;
            return;
        }
        self.threads.push(t);
    }

    pub fn add_code(&mut self, c: PyCode) {
        if self.ktime_ns == 0 {
            self.ktime_ns = c.header.ktime_ns;
        }
        self.codes.insert(c.code, c);
    }
}

/// What assembly hands on.
#[derive(Debug)]
pub enum Assembled {
    /// A crash, complete with its exit or overdue without it.
    Crash(Box<Crash>),
    /// A process followed to its exit whose fatal capture never came: it was lost on the
    /// way (ring buffer full).
    CaptureLost(ProcessExit),
    /// A thread captured at a group exit with no crash of its process known.
    OrphanThread { pid: u32, tid: u32 },
    /// A handler ran and the process did not die of the signal in time: it recovered.
    Recovered { pid: u32, tid: u32, signo: i32 },
}

/// A crash waiting for its process's exit, collecting the other threads meanwhile.
#[derive(Debug)]
struct Pending {
    subject: Capture,
    reraise: Option<Capture>,
    threads: Vec<Capture>,
    /// Reported anyway at this time if the exit never shows up.
    deadline_ns: u64,
}

#[derive(Default)]
pub struct Assembler {
    /// Captures taken under a handler, by thread id, waiting for a fatal re-raise.
    handled: HashMap<u32, Capture>,
    /// Crashes by process id, until the process has exited.
    pending: HashMap<u32, Pending>,
    /// The kernel's mappings around each captured fault, by thread id.
    fault_maps: HashMap<u32, FaultMaps>,
    /// OOM killer victims, by process id.
    oom: HashMap<u32, OomVictim>,
    python: HashMap<u32, PyRecords>,
    /// What each capture's process memory said, by thread id (reduced on arrival).
    memory: HashMap<u32, ProcessMemory>,
    env_allow: EnvAllow,
    housekept_ns: u64,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// An assembler that keeps the variables `allow` names of a crashing process's
    /// environment.
    pub fn with_env_allow(allow: EnvAllow) -> Self {
        Self {
            env_allow: allow,
            ..Self::default()
        }
    }

    /// Process ids of the crashes still waiting for their exit.
    pub fn pending_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.pending.keys().copied()
    }

    /// Takes one record, received at `now_ns` (CLOCK_MONOTONIC, the kernel's clock).
    pub fn push(&mut self, event: Event, now_ns: u64) -> Option<Assembled> {
        match event {
            Event::Signal(c) => {
                self.on_signal(*c, now_ns);
                None
            }
            Event::Thread(c) => match self.pending.get_mut(&c.pid) {
                Some(p) => {
                    p.threads.push(*c);
                    None
                }
                None => Some(Assembled::OrphanThread {
                    pid: c.pid,
                    tid: c.tid,
                }),
            },
            // Only the dump iterator sends these, into a ring buffer of its own.
            Event::Dump(_) => None,
            Event::Exit(e) => match self.pending.remove(&e.header.pid) {
                Some(p) => Some(Assembled::Crash(Box::new(self.complete(p, Some(e))))),
                None if e.flags & EXIT_AFTER_HANDLER != 0 => self.exit_after_handler(e),
                None => Some(Assembled::CaptureLost(e)),
            },
            Event::Oom(o) => {
                self.oom.insert(o.header.pid, o);
                None
            }
            Event::FaultMaps(m) => {
                self.fault_maps.insert(m.header.tid, m);
                None
            }
            Event::PyThread(t) => {
                self.python.entry(t.header.pid).or_default().add_thread(*t);
                None
            }
            Event::PyCode(c) => {
                self.python.entry(c.header.pid).or_default().add_code(*c);
                None
            }
            Event::Memory(head, env) => {
                let m = memory::reduce(&head, &env, &self.env_allow);
                self.memory.insert(m.tid, m);
                None
            }
        }
    }

    fn on_signal(&mut self, c: Capture, now_ns: u64) {
        if !c.default_action {
            // A handler will run: maybe it recovers, maybe it re-raises. Keep the
            // original fault's context until we know. Bounded: the kernel side lets few
            // through per process, but many processes may handle faults at once.
            if self.handled.len() >= MAX_HANDLED && !self.handled.contains_key(&c.tid) {
                return;
            }
            self.handled.insert(c.tid, c);
            return;
        }
        if let Some(p) = self.pending.get_mut(&c.pid) {
            // A second thread died of a fatal signal before the exit: keep it as a thread.
            p.threads.push(c);
            return;
        }
        // The default action kills the process. Was this a handler's re-raise?
        let (subject, reraise) = match self.take_original(&c) {
            Some(original) => (original, Some(c)),
            None => (c, None),
        };
        self.pending.insert(
            subject.pid,
            Pending {
                subject,
                reraise,
                threads: Vec::new(),
                deadline_ns: now_ns + EXIT_WAIT_NS,
            },
        );
    }

    /// The handled capture a fatal re-raise belongs to: handlers re-raise from the
    /// faulting thread (raise, tgkill) or to the process, with a user si_code, soon.
    fn take_original(&mut self, fatal: &Capture) -> Option<Capture> {
        let same_thread = self
            .handled
            .get(&fatal.tid)
            .is_some_and(|o| o.signo == fatal.signo && o.pid == fatal.pid);
        let key = if same_thread {
            Some(fatal.tid)
        } else {
            self.handled
                .iter()
                .filter(|(_, o)| o.pid == fatal.pid && o.signo == fatal.signo)
                .min_by_key(|(_, o)| o.ktime_ns)
                .map(|(k, _)| *k)
        };
        // Another signal from the same thread soon after: a handler that calls abort().
        let key = key.or_else(|| {
            self.handled
                .get(&fatal.tid)
                .is_some_and(|o| {
                    o.pid == fatal.pid && fatal.ktime_ns.saturating_sub(o.ktime_ns) < HANDLED_END_NS
                })
                .then_some(fatal.tid)
        })?;
        let o = self.handled.remove(&key)?;
        (fatal.si_code <= 0 && fatal.ktime_ns.saturating_sub(o.ktime_ns) < HANDLED_WAIT_NS)
            .then_some(o)
    }

    /// A process that handled a crash signal exited badly soon after, with no fatal
    /// signal: its latest handled capture is the crash, the exit its outcome.
    fn exit_after_handler(&mut self, e: ProcessExit) -> Option<Assembled> {
        let pid = e.header.pid;
        let latest = self
            .handled
            .iter()
            .filter(|(_, c)| c.pid == pid && c.ktime_ns <= e.header.ktime_ns)
            .max_by_key(|(_, c)| c.ktime_ns)
            .map(|(tid, _)| *tid);
        let subject = self.handled.remove(&latest?)?;
        self.handled.retain(|_, c| c.pid != pid);
        if e.header.ktime_ns - subject.ktime_ns >= HANDLED_END_NS {
            return None;
        }
        let p = Pending {
            subject,
            reraise: None,
            threads: Vec::new(),
            deadline_ns: 0,
        };
        Some(Assembled::Crash(Box::new(self.complete(p, Some(e)))))
    }

    fn complete(&mut self, p: Pending, exit: Option<ProcessExit>) -> Crash {
        let s = &p.subject;
        // The fault maps follow their capture; a newer capture of the thread replaces them.
        let fault_maps = self
            .fault_maps
            .remove(&s.tid)
            .filter(|m| m.header.pid == s.pid && m.header.ktime_ns >= s.ktime_ns);
        let oom = self
            .oom
            .remove(&s.pid)
            .filter(|o| s.signo == libc::SIGKILL && o.header.ktime_ns <= s.ktime_ns);
        let memory = self
            .memory
            .remove(&s.tid)
            .filter(|m| m.pid == s.pid && m.ktime_ns >= s.ktime_ns);
        Crash {
            memory,
            python: self.python.remove(&s.pid),
            subject: p.subject,
            reraise: p.reraise,
            threads: p.threads,
            exit,
            fault_maps,
            oom,
        }
    }

    /// Processes with a crash pending or a capture waiting under a handler.
    pub fn awaited_pids(&self) -> HashSet<u32> {
        let handled = self.handled.values().map(|c| c.pid);
        self.pending.keys().copied().chain(handled).collect()
    }

    /// Whether a crash is waiting for its process's exit.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Every crash still waiting for its exit, reported without it (at a stop).
    pub fn flush(&mut self) -> Vec<Assembled> {
        let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        pending
            .into_iter()
            .map(|p| Assembled::Crash(Box::new(self.complete(p, None))))
            .collect()
    }

    /// Crashes whose exit is overdue at `now_ns`, reported without it; handlers that
    /// recovered; and, now and then, side records too old to belong to any crash.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Assembled> {
        let overdue: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ns <= now_ns)
            .map(|(pid, _)| *pid)
            .collect();
        let mut out = Vec::new();
        for pid in overdue {
            if let Some(p) = self.pending.remove(&pid) {
                out.push(Assembled::Crash(Box::new(self.complete(p, None))));
            }
        }
        if now_ns.saturating_sub(self.housekept_ns) < HOUSEKEEPING_NS {
            return out;
        }
        self.housekept_ns = now_ns;
        self.handled.retain(|_, c| {
            let keep = now_ns.saturating_sub(c.ktime_ns) < HANDLED_WAIT_NS;
            if !keep {
                out.push(Assembled::Recovered {
                    pid: c.pid,
                    tid: c.tid,
                    signo: c.signo,
                });
            }
            keep
        });
        self.python
            .retain(|_, c| now_ns.saturating_sub(c.ktime_ns) < SIDE_RECORD_NS);
        self.oom
            .retain(|_, o| now_ns.saturating_sub(o.header.ktime_ns) < SIDE_RECORD_NS);
        self.fault_maps
            .retain(|_, m| now_ns.saturating_sub(m.header.ktime_ns) < SIDE_RECORD_NS);
        self.memory
            .retain(|_, m| now_ns.saturating_sub(m.ktime_ns) < SIDE_RECORD_NS);
        out
    }
}

//! The two threads beside the drain loop, each behind a bounded queue, so that draining
//! the ring buffer and the perf buffers never waits for them:
//! - analysis: one crash at a time through symbolize → python → report → sinks (ELF
//!   parsing, copies of users' files, debuginfod downloads);
//! - Python registration: the symbol-table scan of each interpreter file mapped, and
//!   the eBPF map of Python processes.
//!
//! A full queue is counted and said, never waited on.

use std::{
    fs::File,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    analyze::{ProcessView, analyze},
    assemble::Crash,
    capture::{perf::Lifecycle, pins::FilePins},
    metrics::Metrics,
    model::{EarlierFailure, XidEvent},
    python::registry::PythonRegistry,
    report::signature::{Rules, signature},
    sinks::{
        Losses, Sinks,
        loops::{LoopGuard, Suppressed},
    },
    symbolize::{Symbolizer, elf::ModuleCache, libc::AbortMessages},
    sys::procfs::Mapping,
};

use super::{
    budget::{Shed, pause_for, thread_cpu},
    monotonic_ns,
};

/// Crashes waiting for analysis at most (more than the ring buffer holds at the default
/// stack size, so a storm the ring took is analysed whole); beyond it, counted.
pub const QUEUE_CRASHES: usize = 512;
/// Registration messages waiting at most (every fork, exec and exit on the machine).
pub const QUEUE_REGISTRATIONS: usize = 1 << 16;

/// One crash and what the tables knew of its process.
pub struct Job {
    pub crash: Box<Crash>,
    pub mappings: Vec<Mapping>,
    pub executable: Option<std::sync::Arc<str>>,
    pub cgroup: Option<String>,
    /// The pins of its files (and of files with the same build IDs).
    pub pins: FilePins,
    pub earlier_failure: Option<EarlierFailure>,
    pub xid: Vec<XidEvent>,
}

/// A thread fed by a bounded queue.
struct Worker<T> {
    tx: Option<SyncSender<T>>,
    lost: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    fn start(name: &str, capacity: usize, body: impl FnOnce(Receiver<T>) + Send + 'static) -> Self {
        let (tx, rx) = sync_channel(capacity);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(rx))
            .expect("spawning a worker thread");
        Self {
            tx: Some(tx),
            lost: Arc::new(AtomicU64::new(0)),
            thread: Some(thread),
        }
    }

    /// Queues `item`; false (and counted) when the queue is full.
    fn send(&self, item: T) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Closes the queue and waits, until `deadline`, for the thread to finish what is
    /// queued. False if it did not finish in time (it is then left to the exit).
    fn finish(&mut self, deadline: Instant) -> bool {
        self.tx.take();
        let Some(t) = self.thread.take() else {
            return true;
        };
        while !t.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = t.join();
        true
    }
}

/// How long the start waits for the analysis thread to have read glibc's debug file.
const WARM_WAIT: Duration = Duration::from_secs(5);

/// The analysis thread: owns the symbolizer and the sinks.
pub struct Analysis {
    worker: Worker<Job>,
    losses: Losses,
    /// Set at the stop: the CPU budget no longer delays what is left.
    stopping: Arc<AtomicBool>,
}

impl Analysis {
    /// `make_symbolizer` makes the symbolizer on the thread (blazesym's is not Send), again
    /// when `shed` asks for its caches to go; `cpu_share` holds the thread to that share
    /// of one CPU. `kernel_note`, what this kernel keeps out of reports, goes into each.
    pub fn start(
        make_symbolizer: impl Fn() -> Symbolizer + Send + 'static,
        sinks: Sinks,
        metrics: Option<Arc<Metrics>>,
        shed: Arc<Shed>,
        cpu_share: Option<f64>,
        grouping: Grouping,
        kernel_note: Option<String>,
    ) -> Self {
        let losses = sinks.losses();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let (warm_tx, warm) = std::sync::mpsc::channel();
        let worker = Worker::start(
            "crashtrace-analysis",
            QUEUE_CRASHES,
            move |rx: Receiver<Job>| {
                let mut sinks = sinks;
                let mut symbolizer = make_symbolizer();
                symbolizer.warm_libc();
                super::budget::release_freed();
                let _ = warm_tx.send(());
                let mut said_throttled = false;
                let Grouping { rules, mut loops } = grouping;
                let host = crate::sys::procfs::hostname();
                loop {
                    let job = match rx.recv_timeout(Duration::from_millis(500)) {
                        Ok(job) => Some(job),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    say_held(loops.close_due(Instant::now()));
                    if shed.take_analysis() {
                        symbolizer = make_symbolizer();
                    }
                    let Some(job) = job else { continue };
                    let cpu = thread_cpu();
                    let view = ProcessView {
                        mappings: &job.mappings,
                        executable: job.executable.as_deref(),
                        cgroup: job.cgroup,
                        pins: &job.pins,
                        earlier_failure: job.earlier_failure,
                        xid: job.xid,
                        host: host.clone(),
                        kernel_note: kernel_note.as_deref(),
                    };
                    // From the fatal signal reaching the thread to the report leaving the stages.
                    let started = job.crash.fatal().ktime_ns;
                    let t = Instant::now();
                    let mut report =
                        analyze(&mut symbolizer, &job.crash, view, SystemTime::now(), 0.0);
                    if let Some(m) = &metrics {
                        m.observe_symbolization(t.elapsed().as_secs_f64());
                    }
                    report.latency_ms = monotonic_ns().saturating_sub(started) as f64 / 1e6;
                    let sig = signature(&report, &rules);
                    let what = format!("{} in {}", sig.cause, sig.frames.join(" < "));
                    let full = loops.admit(&sig.id, &what, Instant::now());
                    report.signature = Some(sig);
                    if !full && let Some(m) = &metrics {
                        m.observe_held();
                    }
                    sinks.send(report, full);
                    let pause = cpu_share
                        .filter(|_| !stop.load(Ordering::Relaxed))
                        .map_or(Duration::ZERO, |s| pause_for(thread_cpu() - cpu, s));
                    if !pause.is_zero() {
                        if !std::mem::replace(&mut said_throttled, true) {
                            say!(
                                "crashtrace: analysis held to its CPU budget ({:.0}% of a CPU): \
                                 reports may come later, none is dropped",
                                cpu_share.unwrap_or(1.0) * 100.0
                            );
                        }
                        std::thread::sleep(pause);
                    }
                }
                say_held(loops.close_all());
                // Every report made is written before the thread ends.
                sinks.close();
            },
        );
        // Started means ready: the first report does not wait for glibc's debug file.
        let _ = warm.recv_timeout(WARM_WAIT);
        Self {
            worker,
            losses,
            stopping,
        }
    }

    pub fn send(&self, job: Job) {
        let pid = job.crash.subject.pid;
        // Said at the 1st, 2nd, 4th, ... loss: a storm must not flood stderr.
        if !self.worker.send(job) && self.lost().is_power_of_two() {
            say!(
                "crashtrace: crash of process {pid} not analysed: {QUEUE_CRASHES} crashes are \
                 waiting for analysis ({} not analysed in all)",
                self.lost()
            );
        }
    }

    /// Crashes not analysed because the queue was full.
    pub fn lost(&self) -> u64 {
        self.worker.lost.load(Ordering::Relaxed)
    }

    /// What the outputs lost (queues full, writes failed).
    pub fn losses(&self) -> &Losses {
        &self.losses
    }

    /// Finishes every queued crash and writes its report, until `deadline`.
    pub fn finish(&mut self, deadline: Instant) -> bool {
        self.stopping.store(true, Ordering::Relaxed);
        self.worker.finish(deadline)
    }
}

/// How reports are grouped (signatures) and how many of a crash loop go out in full.
pub struct Grouping {
    pub rules: Rules,
    pub loops: LoopGuard,
}

/// One line per crash loop whose window held reports back.
fn say_held(held: Vec<Suppressed>) {
    for h in held {
        say!(
            "crashtrace: crash loop: signature {} ({}) crashed {} times in {}: {} reported in \
             full, {} held back (--loop-reports)",
            h.signature,
            h.what,
            h.reported + h.suppressed,
            humantime::format_duration(h.window),
            h.reported,
            h.suppressed
        );
    }
}

pub enum Registration {
    /// One drain's forks, execs and exits: one message, so a fork+exec storm does not
    /// wake this thread three times per process.
    Lifecycles(Vec<Lifecycle>),
    /// A mapping of a file named like an interpreter or glibc, with its pin.
    Mapping(u32, Mapping, Option<Arc<File>>),
    /// A signal of this process was captured.
    Captured(u32),
}

/// The Python registration thread: owns the registry and its own parsed files.
pub struct Registrar {
    worker: Worker<Registration>,
}

impl Registrar {
    /// `registry` has registered the installed interpreters already (before attaching).
    pub fn start(
        mut registry: PythonRegistry,
        mut abort_msgs: AbortMessages,
        shed: Arc<Shed>,
    ) -> Self {
        let worker = Worker::start(
            "crashtrace-python",
            QUEUE_REGISTRATIONS,
            move |rx: Receiver<Registration>| {
                let mut modules = ModuleCache::new();
                for msg in rx {
                    if shed.take_registration() {
                        modules = ModuleCache::new();
                    }
                    match msg {
                        Registration::Lifecycles(events) => {
                            events.iter().for_each(|e| registry.on_lifecycle(e))
                        }
                        Registration::Mapping(pid, m, pinned) => {
                            registry.on_mapping(pid, &m, &mut modules, pinned.clone());
                            abort_msgs.on_mapping(&m, &mut modules, pinned);
                        }
                        Registration::Captured(pid) => registry.on_capture(pid),
                    }
                }
            },
        );
        Self { worker }
    }

    pub fn send(&self, r: Registration) {
        if !self.worker.send(r) && self.lost().is_power_of_two() {
            say!(
                "crashtrace: {} Python registrations lost (the registration queue was full): \
                 Python frames of processes started then may be missing",
                self.lost()
            );
        }
    }

    pub fn lost(&self) -> u64 {
        self.worker.lost.load(Ordering::Relaxed)
    }

    pub fn finish(&mut self, deadline: Instant) -> bool {
        self.worker.finish(deadline)
    }
}

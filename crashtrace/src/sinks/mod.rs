//! Sinks: where finished reports go, at the end of the data path.
//!
//! Each output has a writer thread of its own behind a bounded queue, so a slow output
//! (a terminal scrolled back, a full pipe, a remote collector) stops neither the
//! draining of the ring and perf buffers nor the other outputs. When an output's queue
//! is full the report is dropped for that output, counted and said, rather than waited
//! for.

pub mod file;
pub mod journal;
pub mod loops;
pub mod metrics;
pub mod otlp;
pub mod pprof;
pub mod stdout;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{metrics::OutputLosses, model::CrashReport};

/// Reports waiting for one output at most; a burst beyond this is dropped and counted.
pub const QUEUE_REPORTS: usize = 256;

/// How often an idle writer gives its output a turn (a retry, a rotated file).
const IDLE_TICK: Duration = Duration::from_millis(250);

/// One output.
pub trait Sink: Send {
    /// A short name for messages (`stdout`, the file's path).
    fn name(&self) -> &str;
    /// The kind of output, a metric label: `stdout`, `file`, `metrics`.
    fn kind(&self) -> &'static str;
    fn write(&mut self, report: &CrashReport) -> std::io::Result<()>;
    /// Called whenever the queue is empty: after a burst of reports, and every
    /// `IDLE_TICK` without any (to send a batch, to reopen a rotated file).
    fn idle(&mut self) {}
    /// Reports the output accepted and lost later (a buffer that overflowed).
    fn lost(&self) -> u64 {
        0
    }
    /// At the stop, after the last report: a bounded last chance for what is held.
    fn finish(&mut self) {}
    /// Whether it takes every crash, even those a crash loop holds back from the others
    /// (counts and aggregates do).
    fn every_crash(&self) -> bool {
        false
    }
}

/// One output's queue and writer thread.
struct Writer {
    name: String,
    tx: SyncSender<Arc<CrashReport>>,
    worker: JoinHandle<()>,
    counts: Arc<OutputCounts>,
    every_crash: bool,
}

/// What one output lost.
#[derive(Default)]
struct OutputCounts {
    kind: &'static str,
    queue_full: AtomicU64,
    /// Reports it failed to write (or dropped as they could not be written whole).
    write_failed: AtomicU64,
}

/// Every output's losses, readable from any thread.
#[derive(Clone, Default)]
pub struct Losses(Arc<Vec<Arc<OutputCounts>>>);

impl Losses {
    pub fn get(&self) -> Vec<OutputLosses> {
        self.0
            .iter()
            .map(|c| OutputLosses {
                output: c.kind,
                queue_full: c.queue_full.load(Ordering::Relaxed),
                write_failed: c.write_failed.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Reports dropped because an output's queue was full (one per output and report).
    pub fn queue_full(&self) -> u64 {
        self.get().iter().map(|l| l.queue_full).sum()
    }

    /// Reports an output failed to write.
    pub fn write_failed(&self) -> u64 {
        self.get().iter().map(|l| l.write_failed).sum()
    }
}

/// The outputs, each behind its queue and writer thread.
pub struct Sinks {
    writers: Vec<Writer>,
    losses: Losses,
}

impl Sinks {
    pub fn start(sinks: Vec<Box<dyn Sink>>, capacity: usize) -> Self {
        let writers: Vec<Writer> = sinks
            .into_iter()
            .map(|sink| {
                let (tx, rx) = sync_channel(capacity);
                let name = sink.name().to_string();
                let every_crash = sink.every_crash();
                let counts = Arc::new(OutputCounts {
                    kind: sink.kind(),
                    ..Default::default()
                });
                let c = counts.clone();
                let worker = std::thread::Builder::new()
                    .name("crashtrace-sink".into())
                    .spawn(move || write_all(sink, rx, &c))
                    .expect("spawning a report writer");
                Writer {
                    name,
                    tx,
                    worker,
                    counts,
                    every_crash,
                }
            })
            .collect();
        let losses = Losses(Arc::new(writers.iter().map(|w| w.counts.clone()).collect()));
        Self { writers, losses }
    }

    /// Queues a report for every output; never blocks.
    /// Hands `report` to every output; with `full` false (a crash loop's report held
    /// back) only to those that take every crash.
    pub fn send(&self, report: CrashReport, full: bool) {
        let report = Arc::new(report);
        for w in self.writers.iter().filter(|w| full || w.every_crash) {
            match w.tx.try_send(report.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(r)) => {
                    let n = w.counts.queue_full.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        say!(
                            "crashtrace: report for process {} dropped for {}: it is {} \
                             reports behind ({n} dropped there in all)",
                            r.pid,
                            w.name,
                            QUEUE_REPORTS
                        );
                    }
                }
                Err(TrySendError::Disconnected(_)) => {
                    w.counts.write_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The outputs' losses, for a thread that does not own the sinks.
    pub fn losses(&self) -> Losses {
        self.losses.clone()
    }

    /// Reports dropped because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.losses.queue_full()
    }

    /// Waits until every queued report is written.
    pub fn close(&mut self) {
        for w in self.writers.drain(..) {
            drop(w.tx);
            let _ = w.worker.join();
        }
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        self.close();
    }
}

/// One writer thread: every report to its output, in order.
fn write_all(mut sink: Box<dyn Sink>, rx: Receiver<Arc<CrashReport>>, counts: &OutputCounts) {
    let mut errors = 0u64;
    let mut write = |sink: &mut Box<dyn Sink>, report: &CrashReport| {
        if let Err(e) = sink.write(report) {
            errors += 1;
            if errors.is_power_of_two() {
                say!(
                    "crashtrace: cannot write the report for process {} to {}: {e} ({errors} \
                     not written there in all)",
                    report.pid,
                    sink.name()
                );
            }
        }
        errors
    };
    let mut errors_now = 0;
    loop {
        match rx.recv_timeout(IDLE_TICK) {
            Ok(report) => {
                errors_now = write(&mut sink, &report);
                // The rest of a burst first, then one turn for the output (one batch).
                while let Ok(r) = rx.try_recv() {
                    errors_now = write(&mut sink, &r);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        sink.idle();
        counts
            .write_failed
            .store(errors_now + sink.lost(), Ordering::Relaxed);
    }
    sink.finish();
    counts
        .write_failed
        .store(errors_now + sink.lost(), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Mutex, mpsc};

    /// A sink that says when it got a report and then waits to be let go.
    struct Gate {
        started: mpsc::Sender<u32>,
        release: Arc<Mutex<mpsc::Receiver<()>>>,
        seen: Arc<Mutex<Vec<u32>>>,
    }

    impl Sink for Gate {
        fn name(&self) -> &str {
            "gate"
        }
        fn kind(&self) -> &'static str {
            "stdout"
        }
        fn write(&mut self, r: &CrashReport) -> std::io::Result<()> {
            let _ = self.started.send(r.pid);
            let _ = self.release.lock().unwrap().recv();
            self.seen.lock().unwrap().push(r.pid);
            Ok(())
        }
    }

    fn report(pid: u32) -> CrashReport {
        let mut r: CrashReport = serde_json::from_str(crate::report::text::tests::MINIMAL).unwrap();
        r.pid = pid;
        r
    }

    #[test]
    fn a_stuck_sink_never_blocks_the_sender_and_drops_are_counted() {
        let (started_tx, started) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut sinks = Sinks::start(
            vec![Box::new(Gate {
                started: started_tx,
                release: Arc::new(Mutex::new(release_rx)),
                seen: seen.clone(),
            })],
            4,
        );
        sinks.send(report(1), true);
        // The writer holds report 1 inside the sink: the queue is empty again.
        assert_eq!(started.recv().unwrap(), 1);
        for pid in 2..=5 {
            sinks.send(report(pid), true);
        }
        assert_eq!(sinks.dropped(), 0);
        for pid in 6..=8 {
            sinks.send(report(pid), true);
        }
        assert_eq!(sinks.dropped(), 3);
        for _ in 0..5 {
            release_tx.send(()).unwrap();
        }
        sinks.close();
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4, 5]);
    }

    /// Records the pids it is given; `every` as `Sink::every_crash`.
    struct Collect {
        every: bool,
        seen: Arc<Mutex<Vec<u32>>>,
    }

    impl Sink for Collect {
        fn name(&self) -> &str {
            "collect"
        }
        fn kind(&self) -> &'static str {
            "file"
        }
        fn write(&mut self, r: &CrashReport) -> std::io::Result<()> {
            self.seen.lock().unwrap().push(r.pid);
            Ok(())
        }
        fn every_crash(&self) -> bool {
            self.every
        }
    }

    #[test]
    fn a_crash_loops_held_reports_reach_only_the_outputs_that_count() {
        let all: Arc<Mutex<Vec<u32>>> = Arc::default();
        let full: Arc<Mutex<Vec<u32>>> = Arc::default();
        let mut sinks = Sinks::start(
            vec![
                Box::new(Collect {
                    every: true,
                    seen: all.clone(),
                }),
                Box::new(Collect {
                    every: false,
                    seen: full.clone(),
                }),
            ],
            8,
        );
        sinks.send(report(1), true);
        sinks.send(report(2), false);
        sinks.close();
        assert_eq!(*all.lock().unwrap(), [1, 2]);
        assert_eq!(*full.lock().unwrap(), [1]);
    }
}

//! Sinks: where finished reports go, at the end of the data path.
//!
//! Reports are handed to a writer thread through a bounded queue, so a slow output (a
//! terminal scrolled back, a full pipe, a remote collector) never stops the draining of
//! the ring and perf buffers. When the queue is full the report is dropped, counted and
//! said, rather than waited for.

pub mod stdout;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
};

use crate::model::CrashReport;

/// Reports waiting for the writer at most; a burst beyond this is dropped and counted.
pub const QUEUE_REPORTS: usize = 256;

/// One output.
pub trait Sink: Send {
    /// A short name for messages (`stdout`, `json`).
    fn name(&self) -> &str;
    fn write(&mut self, report: &CrashReport) -> std::io::Result<()>;
}

/// The outputs, behind their queue and writer thread.
pub struct Sinks {
    tx: Option<SyncSender<Arc<CrashReport>>>,
    dropped: Arc<AtomicU64>,
    worker: Option<JoinHandle<()>>,
}

impl Sinks {
    pub fn start(sinks: Vec<Box<dyn Sink>>, capacity: usize) -> Self {
        let (tx, rx) = sync_channel(capacity);
        let worker = std::thread::Builder::new()
            .name("crashtrace-sinks".into())
            .spawn(move || write_all(sinks, rx))
            .expect("spawning the report writer");
        Self {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
            worker: Some(worker),
        }
    }

    /// Queues a report for every sink; never blocks.
    pub fn send(&self, report: CrashReport) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Arc::new(report)) {
            Ok(()) => {}
            Err(TrySendError::Full(r)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                say!(
                    "crashtrace: report for process {} dropped: the outputs are {} reports \
                     behind ({n} dropped in all)",
                    r.pid,
                    QUEUE_REPORTS
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The count behind `dropped`, for a thread that does not own the sinks.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Reports dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every queued report is written.
    pub fn close(&mut self) {
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_all(mut sinks: Vec<Box<dyn Sink>>, rx: Receiver<Arc<CrashReport>>) {
    for report in rx {
        for s in &mut sinks {
            if let Err(e) = s.write(&report) {
                say!(
                    "crashtrace: cannot write the report for process {} to {}: {e}",
                    report.pid,
                    s.name()
                );
            }
        }
    }
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
        sinks.send(report(1));
        // The writer holds report 1 inside the sink: the queue is empty again.
        assert_eq!(started.recv().unwrap(), 1);
        for pid in 2..=5 {
            sinks.send(report(pid));
        }
        assert_eq!(sinks.dropped(), 0);
        for pid in 6..=8 {
            sinks.send(report(pid));
        }
        assert_eq!(sinks.dropped(), 3);
        for _ in 0..5 {
            release_tx.send(()).unwrap();
        }
        sinks.close();
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4, 5]);
    }
}

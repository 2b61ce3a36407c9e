//! `--metrics-address`: Prometheus/OpenMetrics counters of what crashtrace saw and
//! lost, and of its own cost. Label values come from fixed sets (signal names, kinds,
//! reasons, output kinds): no pid, path or other free text, so the series stay few.

pub mod server;

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::model::CrashReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CrashLabels {
    signal: String,
    /// `fault` (a crash signal), `kill` (sent by another process) or `oom`.
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    output: &'static str,
    reason: &'static str,
}

/// What the event loop knows, read into the gauges and counters now and then.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopState {
    pub captures_ring_full: u64,
    pub exits_lost: u64,
    pub analysis_queue_full: u64,
    pub handled_limited: u64,
    pub pinned_files: u64,
    pub tracked_processes: u64,
}

/// An output's losses, as the sinks count them.
#[derive(Clone, Copy, Debug)]
pub struct OutputLosses {
    pub output: &'static str,
    pub queue_full: u64,
    pub write_failed: u64,
}

pub struct Metrics {
    registry: Registry,
    crashes: Family<CrashLabels, Counter>,
    latency: Histogram,
    symbolization: Histogram,
    captures_lost: Family<ReasonLabels, Counter<u64, AtomicU64>>,
    reports_dropped: Family<DropLabels, Counter<u64, AtomicU64>>,
    handled_limited: Counter<u64, AtomicU64>,
    loop_suppressed: Counter<u64, AtomicU64>,
    pinned_files: Gauge,
    tracked_processes: Gauge,
    cpu_seconds: Gauge<f64, AtomicU64>,
    rss_bytes: Gauge,
    /// Encoding goes one scrape at a time.
    encoding: Mutex<()>,
}

/// Seconds, from 1 ms to about 16 s.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("crashtrace");
        let m = Self {
            crashes: Family::default(),
            latency: Histogram::new(seconds_buckets()),
            symbolization: Histogram::new(seconds_buckets()),
            captures_lost: Family::default(),
            reports_dropped: Family::default(),
            handled_limited: Counter::default(),
            loop_suppressed: Counter::default(),
            pinned_files: Gauge::default(),
            tracked_processes: Gauge::default(),
            cpu_seconds: Gauge::default(),
            rss_bytes: Gauge::default(),
            registry: Registry::default(),
            encoding: Mutex::new(()),
        };
        registry.register(
            "crashes",
            "Crashes reported, by signal and kind (fault, kill, oom)",
            m.crashes.clone(),
        );
        registry.register_with_unit(
            "report_latency",
            "From the fatal signal to the finished report",
            Unit::Seconds,
            m.latency.clone(),
        );
        registry.register_with_unit(
            "symbolization",
            "Time spent unwinding and naming one crash's stacks",
            Unit::Seconds,
            m.symbolization.clone(),
        );
        registry.register(
            "captures_lost",
            "Captures lost before analysis, by reason",
            m.captures_lost.clone(),
        );
        registry.register(
            "reports_dropped",
            "Reports an output did not get, by output and reason",
            m.reports_dropped.clone(),
        );
        registry.register(
            "handled_signals_not_captured",
            "Signals a process handled, over the per-process capture rate",
            m.handled_limited.clone(),
        );
        registry.register(
            "crash_loop_reports_held",
            "Reports held back from the outputs as a crash loop's (--loop-reports); still \
             counted in crashes",
            m.loop_suppressed.clone(),
        );
        registry.register(
            "pinned_files",
            "Mapped files held open for later symbolization",
            m.pinned_files.clone(),
        );
        registry.register(
            "tracked_processes",
            "Processes whose mappings are tracked",
            m.tracked_processes.clone(),
        );
        registry.register_with_unit(
            "cpu",
            "crashtrace's own CPU time (user and system)",
            Unit::Seconds,
            m.cpu_seconds.clone(),
        );
        registry.register_with_unit(
            "resident_memory",
            "crashtrace's own resident set size",
            Unit::Bytes,
            m.rss_bytes.clone(),
        );
        Self { registry, ..m }
    }

    /// A report a crash loop held back from the outputs.
    pub fn observe_held(&self) {
        self.loop_suppressed.inc();
    }

    /// One finished report.
    pub fn observe_report(&self, r: &CrashReport) {
        let kind = r.kind();
        // The kernel's name for a signal number: a fixed set of about 64 values.
        let labels = CrashLabels {
            signal: crate::sys::signals::signal_name(r.signal.number),
            kind,
        };
        self.crashes.get_or_create(&labels).inc();
        self.latency.observe(r.latency_ms / 1e3);
    }

    pub fn observe_symbolization(&self, seconds: f64) {
        self.symbolization.observe(seconds);
    }

    pub fn set_loop_state(&self, s: &LoopState) {
        let lost = |reason, v: u64| {
            self.captures_lost
                .get_or_create(&ReasonLabels { reason })
                .inner()
                .store(v, Ordering::Relaxed)
        };
        lost("ring_full", s.captures_ring_full);
        lost("exits_lost", s.exits_lost);
        lost("analysis_queue_full", s.analysis_queue_full);
        self.handled_limited
            .inner()
            .store(s.handled_limited, Ordering::Relaxed);
        self.pinned_files.set(s.pinned_files as i64);
        self.tracked_processes.set(s.tracked_processes as i64);
    }

    pub fn set_output_losses(&self, losses: &[OutputLosses]) {
        for l in losses {
            for (reason, v) in [
                ("queue_full", l.queue_full),
                ("write_failed", l.write_failed),
            ] {
                self.reports_dropped
                    .get_or_create(&DropLabels {
                        output: l.output,
                        reason,
                    })
                    .inner()
                    .store(v, Ordering::Relaxed);
            }
        }
    }

    /// The OpenMetrics text of every metric, crashtrace's own CPU and RSS read now.
    pub fn encode(&self) -> String {
        let _one = self.encoding.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cpu, rss)) = own_usage() {
            self.cpu_seconds.set(cpu);
            self.rss_bytes.set(rss as i64);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// crashtrace's CPU seconds and resident bytes, from /proc/self/stat and statm.
fn own_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Some((ticks as f64 / hz, pages * page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_crashes_by_signal_and_kind_without_free_text_labels() {
        let m = Metrics::new();
        let mut r: CrashReport = serde_json::from_str(crate::report::text::tests::MINIMAL).unwrap();
        r.process_name = "attacker\"} 1\nforged".into();
        m.observe_report(&r);
        m.observe_report(&r);
        r.signal.external = true;
        r.signal.number = libc::SIGTERM;
        m.observe_report(&r);
        m.set_loop_state(&LoopState {
            captures_ring_full: 3,
            pinned_files: 7,
            ..Default::default()
        });
        m.set_output_losses(&[OutputLosses {
            output: "file",
            queue_full: 0,
            write_failed: 2,
        }]);
        let text = m.encode();
        assert!(
            text.contains("crashtrace_crashes_total{signal=\"SIGSEGV\",kind=\"fault\"} 2"),
            "{text}"
        );
        assert!(text.contains("crashtrace_crashes_total{signal=\"SIGTERM\",kind=\"kill\"} 1"));
        assert!(text.contains("crashtrace_captures_lost_total{reason=\"ring_full\"} 3"));
        assert!(text.contains(
            "crashtrace_reports_dropped_total{output=\"file\",reason=\"write_failed\"} 2"
        ));
        assert!(text.contains("crashtrace_pinned_files 7"));
        assert!(text.contains("crashtrace_report_latency_seconds_count 3"));
        assert!(text.contains("crashtrace_resident_memory_bytes "));
        assert!(!text.contains("attacker"), "no free text reaches a label");
        assert!(text.ends_with("# EOF\n"));
    }
}

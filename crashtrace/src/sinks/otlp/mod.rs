//! `--otlp-endpoint`: reports as OTLP/HTTP (protobuf) logs to an OpenTelemetry
//! Collector. The messages are the `opentelemetry-proto` crate's, generated from the
//! official .proto files. Records wait in a bounded buffer and go in batches; a
//! collector that is down, slow or says "retry" gets them later with backoff, so an
//! outage loses nothing up to the buffer's size. Beyond it, and what the collector
//! rejects, is counted and said.

pub mod config;
pub mod record;

use std::{
    collections::VecDeque,
    time::{Duration, Instant, SystemTime},
};

use opentelemetry_proto::tonic::{
    collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    logs::v1::LogRecord,
};
use prost::Message as _;

use super::Sink;
use crate::model::CrashReport;
use config::OtlpConfig;
use record::Host;

/// Records per request at most.
const BATCH: usize = 64;
/// Backoff after a failed send: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// At the stop, the buffer gets this long to reach the collector.
const STOP_FLUSH: Duration = Duration::from_secs(5);
/// A response body read at most (an ExportLogsServiceResponse is a few bytes).
const MAX_RESPONSE: u64 = 1 << 20;

/// The buffer's bounds: records, and their encoded bytes.
#[derive(Clone, Copy, Debug)]
pub struct BufferLimits {
    pub records: usize,
    pub bytes: usize,
}

pub struct Otlp {
    config: OtlpConfig,
    host: Host,
    agent: ureq::Agent,
    buffer: VecDeque<(LogRecord, usize)>,
    buffered_bytes: usize,
    limits: BufferLimits,
    /// No send before this (backoff after a failure).
    next_attempt: Instant,
    backoff: Duration,
    /// Records lost: the buffer was full, or the collector rejected them.
    dropped: u64,
    name: String,
    /// The last failure said, so an outage is said once, not per attempt.
    said_failing: bool,
}

enum Sent {
    Done,
    /// Try again later: the collector is unreachable, overloaded or asked for it.
    Retry(String, Option<Duration>),
    /// Not to be sent again (a 400, a body the collector cannot take).
    Rejected(String),
}

impl Otlp {
    pub fn new(config: OtlpConfig, limits: BufferLimits) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            name: format!("OTLP ({})", config.url),
            host: host_facts(),
            agent,
            config,
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            limits,
            next_attempt: Instant::now(),
            backoff: BACKOFF_FIRST,
            dropped: 0,
            said_failing: false,
        }
    }

    fn drop_records(&mut self, n: u64, why: &str) {
        let before = self.dropped;
        self.dropped += n;
        // Said at the 1st, 2nd, 4th, 8th, ... record lost: an outage must not flood stderr.
        if before != 0 && self.dropped.ilog2() == before.ilog2() {
            return;
        }
        say!(
            "crashtrace: {n} crash records not delivered to {}: {why} ({} in all)",
            self.name,
            self.dropped
        );
    }

    fn push(&mut self, r: LogRecord) {
        let size = r.encoded_len();
        if self.buffer.len() >= self.limits.records
            || self.buffered_bytes + size > self.limits.bytes
        {
            // The newest waits on the oldest: keep what came first, as a log would.
            self.drop_records(
                1,
                &format!(
                    "the buffer is full ({} records, {} bytes) while the collector is \
                     unreachable",
                    self.buffer.len(),
                    self.buffered_bytes
                ),
            );
            return;
        }
        self.buffered_bytes += size;
        self.buffer.push_back((r, size));
    }

    fn send(&self, records: Vec<LogRecord>) -> Sent {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![record::resource_logs(
                records,
                &self.config.resource,
                &self.host,
            )],
        };
        let mut post = self
            .agent
            .post(&self.config.url)
            .header("Content-Type", "application/x-protobuf");
        for (k, v) in &self.config.headers {
            post = post.header(k, v);
        }
        let mut resp = match post.send(&req.encode_to_vec()[..]) {
            Ok(r) => r,
            Err(e) => return Sent::Retry(e.to_string(), None),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .unwrap_or_default();
        match status {
            200..=299 => {
                let rejected = ExportLogsServiceResponse::decode(&body[..])
                    .ok()
                    .and_then(|r| r.partial_success)
                    .filter(|p| p.rejected_log_records > 0);
                match rejected {
                    Some(p) => Sent::Rejected(format!(
                        "the collector rejected {} of them: {}",
                        p.rejected_log_records,
                        crate::sys::escape::text(
                            &p.error_message.chars().take(200).collect::<String>()
                        )
                    )),
                    None => Sent::Done,
                }
            }
            // The statuses the specification says to retry.
            429 | 502 | 503 | 504 => Sent::Retry(format!("HTTP {status}"), retry_after),
            _ => Sent::Rejected(format!("the collector answered HTTP {status}")),
        }
    }

    /// Sends what is buffered, batch by batch, unless backing off.
    fn flush(&mut self) {
        while !self.buffer.is_empty() && Instant::now() >= self.next_attempt {
            let n = self.buffer.len().min(BATCH);
            let batch: Vec<LogRecord> =
                self.buffer.iter().take(n).map(|(r, _)| r.clone()).collect();
            match self.send(batch) {
                Sent::Done => {
                    self.take(n);
                    if std::mem::take(&mut self.said_failing) {
                        say!("crashtrace: {} reachable again", self.name);
                    }
                    self.backoff = BACKOFF_FIRST;
                }
                Sent::Rejected(why) => {
                    self.take(n);
                    self.drop_records(n as u64, &why);
                }
                Sent::Retry(why, after) => {
                    if !std::mem::replace(&mut self.said_failing, true) {
                        say!(
                            "crashtrace: {} failing ({why}): {} records held, retried with \
                             backoff",
                            self.name,
                            self.buffer.len()
                        );
                    }
                    let wait = after.unwrap_or(self.backoff).min(BACKOFF_MAX);
                    self.next_attempt = Instant::now() + wait;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    return;
                }
            }
        }
    }

    fn take(&mut self, n: usize) {
        for (_, size) in self.buffer.drain(..n) {
            self.buffered_bytes -= size;
        }
    }
}

/// This host's name and boot id, for the resource and the crash ids.
fn host_facts() -> Host {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    Host {
        name: crate::sys::procfs::hostname().unwrap_or_default(),
        boot_id: read("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Sink for Otlp {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "otlp"
    }

    /// Buffers the record; the batch goes at `idle`, once the queue is drained.
    fn write(&mut self, report: &CrashReport) -> std::io::Result<()> {
        let r = record::log_record(report, &self.host, unix_ns());
        self.push(r);
        Ok(())
    }

    fn idle(&mut self) {
        self.flush();
    }

    fn lost(&self) -> u64 {
        self.dropped
    }

    fn finish(&mut self) {
        let until = Instant::now() + STOP_FLUSH;
        while !self.buffer.is_empty() && Instant::now() < until {
            self.next_attempt = self.next_attempt.min(until);
            self.flush();
            if !self.buffer.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if !self.buffer.is_empty() {
            let n = self.buffer.len() as u64;
            self.buffer.clear();
            self.drop_records(n, "crashtrace stopped before the collector took them");
        }
    }
}

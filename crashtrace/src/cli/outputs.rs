//! Where reports go: the options for the outputs (sinks).

use std::path::PathBuf;

use clap::Args as ClapArgs;

#[derive(ClapArgs, Debug, Clone)]
pub struct Outputs {
    /// Print each report as one JSON object per line.
    #[arg(short = 'j', long)]
    pub json: bool,

    /// Append each report to FILE as one JSON object per line (created mode 0600);
    /// reopened on SIGHUP, for logrotate. A record that cannot be written whole (a full
    /// disk) is dropped, counted and said. Reports then go to stdout only with --stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Send each report to the journal (journald's native protocol): MESSAGE_ID
    /// c4e113546e8c4e9380917d2dedf3ba26, priority crit, CRASHTRACE_* fields (pid,
    /// signal, executable, cgroup, function, ...), the text and JSON report in
    /// CRASHTRACE_REPORT and CRASHTRACE_JSON.
    #[arg(long)]
    pub journal: bool,

    /// journald's socket, for a journal namespace
    /// (/run/systemd/journal.NAMESPACE/socket).
    #[arg(long, value_name = "PATH", default_value = crate::sinks::journal::DEFAULT_SOCKET)]
    pub journal_socket: PathBuf,

    /// Send each report to an OpenTelemetry Collector as an OTLP/HTTP (protobuf) log
    /// record (the `app.crash` event; the report as its body). A URL without a path
    /// gets /v1/logs. Honours OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES,
    /// OTEL_SERVICE_NAME and OTEL_EXPORTER_OTLP_TIMEOUT (and their LOGS_ forms).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Send OTLP to the endpoint the environment names (OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
    /// OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318).
    #[arg(long)]
    pub otlp: bool,

    /// Records held for the collector while it is unreachable or slow (at most 64 MiB
    /// in all); beyond it they are dropped, counted and said.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub otlp_buffer: usize,

    /// Serve Prometheus/OpenMetrics metrics at http://ADDR:PORT/metrics (crashes by
    /// signal and kind, losses, latency, crashtrace's own CPU and memory). Port 0 picks
    /// a free port, said at start.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_address: Option<std::net::SocketAddr>,

    /// Also print reports on stdout (text, or JSON with --json) when another output is
    /// given.
    #[arg(long)]
    pub stdout: bool,

    /// Write the crashes seen as a pprof profile (gzipped profile.proto: one sample per
    /// distinct stack, counted; labels signal, signature, process, container, rank), at
    /// the stop and on SIGHUP. For `pprof -http`, Parca, Pyroscope.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,

    /// Crash loops: at most N full reports per crash signature and --loop-window; the
    /// rest are counted (in the metrics too) and said in one line when the window ends.
    /// 0 (the default) reports every crash.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub loop_reports: u32,

    /// The window of --loop-reports.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub loop_window: std::time::Duration,

    /// Signature rules (TOML; see docs/signature-rules.toml for the defaults and their
    /// keys): how crashes are grouped.
    #[arg(long, value_name = "FILE")]
    pub signature_rules: Option<PathBuf>,
}

impl Outputs {
    /// Whether reports go to stdout: by default, and with --stdout beside other outputs.
    pub fn to_stdout(&self) -> bool {
        self.stdout || (self.output.is_none() && !self.journal && !self.otlp_enabled())
    }

    pub fn otlp_enabled(&self) -> bool {
        self.otlp || self.otlp_endpoint.is_some()
    }
}

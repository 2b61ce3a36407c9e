//! `--metrics-address`, scraped by a real Prometheus server (Debian's, installed by
//! `cargo xtask setup`); the counters are read back through Prometheus's query API.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
};

use crashtrace_tests::{
    CrashReport, Crashtrace, Shared, Victim, crash_and_report, victim, wait_until,
};

/// A Prometheus server scraping `target` every second; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Self {
        assert!(
            Path::new("/usr/bin/prometheus").exists(),
            "Debian's prometheus is missing: run `cargo xtask setup`"
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: crashtrace\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // A free port for its own HTTP API.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        Self { child, port }
    }

    /// The instant vector of `query`, as (labels, value) pairs; None until Prometheus
    /// answers.
    fn query(&self, query: &str) -> Option<Vec<(serde_json::Value, f64)>> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={encoded}",
            self.port
        );
        let mut resp = ureq::get(&url).call().ok()?;
        let body: serde_json::Value =
            serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()?;
        let result = body["data"]["result"].as_array()?;
        Some(
            result
                .iter()
                .map(|r| {
                    let v = r["value"][1]
                        .as_str()
                        .unwrap_or("nan")
                        .parse()
                        .unwrap_or(f64::NAN);
                    (r["metric"].clone(), v)
                })
                .collect(),
        )
    }

    /// The value of the series of `metric` whose labels include `labels`.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.query(metric)?
            .into_iter()
            .find(|(m, _)| labels.iter().all(|(k, v)| m[k] == *v))
            .map(|(_, v)| v)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count(reports: &[CrashReport], signal: &str, external: bool) -> f64 {
    reports
        .iter()
        .filter(|r| r.signal.name == signal && r.signal.external == external)
        .count() as f64
}

#[test]
fn prometheus_scrapes_the_crash_counters() {
    let dir = Shared::new("prometheus");
    let ct = Crashtrace::start(&["--metrics-address", "127.0.0.1:0"]);
    let line = ct.stderr_line("the metrics address", |l| l.contains("metrics at http://"));
    let target = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.strip_suffix("/metrics"))
        .expect("the address")
        .to_string();
    let prom = Prometheus::start(&dir.0, &target);

    let mut reports = Vec::new();
    for _ in 0..2 {
        reports.push(crash_and_report(
            &ct,
            &mut Command::new(victim("crash_nofp")),
            libc::SIGSEGV,
        ));
    }
    // A kill by another process (this test), reported with its sender.
    let mut sleeper = Victim::spawn(Command::new("sleep").arg("30"));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sleeper.pid() as i32, libc::SIGKILL) };
    sleeper.wait_exit();
    reports.push(ct.report_for(sleeper.pid()));
    // The counters must say what crashtrace reported while it ran (everything: other
    // processes on the machine may crash too).
    wait_until("Prometheus to scrape the crash counts", || {
        let seen = ct.reports();
        prom.value(
            "crashtrace_crashes_total",
            &[("signal", "SIGSEGV"), ("kind", "fault")],
        ) == Some(count(&seen, "SIGSEGV", false))
            && prom.value(
                "crashtrace_crashes_total",
                &[("signal", "SIGKILL"), ("kind", "kill")],
            ) == Some(count(&seen, "SIGKILL", true))
    });
    let up = prom.value("up", &[("job", "crashtrace")]);
    assert_eq!(up, Some(1.0));
    let n = prom.value("crashtrace_report_latency_seconds_count", &[]);
    assert!(n.is_some_and(|n| n >= 3.0), "{n:?}");
    let rss = prom.value("crashtrace_resident_memory_bytes", &[]);
    assert!(rss.is_some_and(|b| b > 1e6), "{rss:?}");
    let lost = prom.value("crashtrace_captures_lost_total", &[("reason", "ring_full")]);
    assert_eq!(lost, Some(0.0));
    // No series is labelled with a pid, a path or a name.
    let series = prom.query("{job=\"crashtrace\"}").unwrap_or_default();
    for (labels, _) in &series {
        let keys: Vec<&String> = labels.as_object().unwrap().keys().collect();
        for k in keys {
            assert!(
                [
                    "__name__", "job", "instance", "signal", "kind", "reason", "output", "le"
                ]
                .contains(&k.as_str()),
                "unexpected label {k} in {labels}"
            );
        }
    }
    drop(reports);
}

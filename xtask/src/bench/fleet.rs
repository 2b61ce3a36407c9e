//! `cargo xtask bench --fleet`: a crash storm delivered to every output at once (the
//! JSON-lines file, a real journald of its own namespace, an OTLP receiver that answers
//! in 200 ms, the metrics endpoint), then what each output got or counted, and what
//! crashtrace spent. Sampled every 10 s, so a long run (`--fleet-seconds 3600` with a
//! slower pace) shows RSS and descriptors over time too.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::measure::{Tracer, proc_usage, stop_child};

/// A child process killed when dropped, with what to remove after it.
struct Helper(Child, Vec<PathBuf>);

impl Drop for Helper {
    fn drop(&mut self) {
        stop_child(&mut self.0);
        for p in &self.1 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

unsafe extern "C" {
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
}

/// `cmd`, to be killed (SIGTERM) if the bench itself dies first.
fn with_parent(mut cmd: Command) -> Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            prctl(1, 15, 0, 0, 0);
            Ok(())
        });
    }
    cmd
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let until = Instant::now() + limit;
    while !done() {
        if Instant::now() > until {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |s| s.lines().count())
}

fn scrape(port: u16) -> String {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    s
}

/// The value of the metric line that starts with `series`, summed over its matches.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn fleet(root: &Path, out_dir: &Path, crashes: usize, seconds: u64) -> Result<()> {
    let crasher = out_dir.join("crasher");
    let st = Command::new("gcc")
        .args(["-O2", "-pthread", "-g"])
        .arg(root.join("bench/crasher.c"))
        .arg("-o")
        .arg(&crasher)
        .status()?;
    if !st.success() {
        bail!("building bench/crasher.c failed");
    }
    let dir = out_dir.join("fleet");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    // journald, in a namespace of its own.
    let ns = format!("crashtrace-bench-{}", std::process::id());
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let machine = machine.trim();
    let _journald = Helper(
        with_parent(Command::new("/lib/systemd/systemd-journald"))
            .arg(&ns)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting systemd-journald")?,
        vec![
            format!("/run/systemd/journal.{ns}").into(),
            format!("/var/log/journal/{machine}.{ns}").into(),
            format!("/run/log/journal/{machine}.{ns}").into(),
        ],
    );
    let socket = PathBuf::from(format!("/run/systemd/journal.{ns}/socket"));
    wait_for("journald's socket", Duration::from_secs(10), || {
        socket.exists()
    })?;

    // The OTLP receiver, 200 ms a request.
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let py = PathBuf::from(home).join(".cache/crashtrace/otel-venv/bin/python");
    let port_file = dir.join("otlp-port");
    let received = dir.join("otlp.jsonl");
    let _receiver = Helper(
        with_parent(Command::new(&py))
            .arg(root.join("tests/victims/otlp_receiver.py"))
            .arg(&port_file)
            .arg(&received)
            .args(["--delay-ms", "200"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting the OTLP receiver (cargo xtask setup makes its venv)")?,
        vec![],
    );
    wait_for("the OTLP receiver", Duration::from_secs(20), || {
        port_file.exists()
    })?;
    let otlp_port = std::fs::read_to_string(&port_file)?.trim().to_string();

    let file = dir.join("crashes.jsonl");
    let metrics_port = free_port()?;
    let ct = Tracer::crashtrace(
        &root.join("target/release/crashtrace"),
        &[
            "--comm",
            "=crasher",
            "--output",
            file.to_str().unwrap(),
            "--journal",
            "--journal-socket",
            socket.to_str().unwrap(),
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{otlp_port}"),
            "--otlp-buffer",
            &(crashes + 100).to_string(),
            "--metrics-address",
            &format!("127.0.0.1:{metrics_port}"),
        ],
        Stdio::null(),
    )?;
    let pid = ct.pid();
    let (cpu0, _, _) = proc_usage(pid);
    println!(
        "fleet: {crashes} crashes over {seconds} s to file, journal, OTLP (200 ms a request) \
         and metrics; crashtrace pid {pid}"
    );
    println!(
        "{:>6} {:>9} {:>5} {:>5} {:>7} {:>6} {:>6}",
        "t (s)", "RSS (MiB)", "fds", "pins", "tracked", "file", "otlp"
    );
    let start = Instant::now();
    let pace = Duration::from_secs_f64(seconds as f64 / crashes.max(1) as f64);
    let mut kids = Vec::new();
    let mut next_sample = start + Duration::from_secs(10);
    for i in 0..crashes {
        let due = start + pace * i as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        kids.push(
            Command::new(&crasher)
                .arg("small")
                .stderr(Stdio::null())
                .spawn()?,
        );
        if kids.len() >= 50 {
            kids.drain(..).for_each(|mut k| {
                let _ = k.wait();
            });
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(10);
            sample(start, pid, metrics_port, &file, &received);
        }
    }
    kids.into_iter().for_each(|mut k| {
        let _ = k.wait();
    });
    let burst = start.elapsed().as_secs_f64();
    // Every output has all of them, or the metrics count the rest.
    let settled = || {
        let m = scrape(metrics_port);
        let dropped = metric(&m, "crashtrace_reports_dropped_total");
        let delivered = lines(&file).min(lines(&received)) as f64;
        delivered + dropped >= crashes as f64
    };
    let _ = wait_for("every output", Duration::from_secs(180), settled);
    sample(start, pid, metrics_port, &file, &received);
    let (cpu1, hwm, _) = proc_usage(pid);
    let m = scrape(metrics_port);
    let journal = Command::new("journalctl")
        .arg(format!("--namespace={ns}"))
        .args([
            "-o",
            "cat",
            "--no-pager",
            "MESSAGE_ID=c4e113546e8c4e9380917d2dedf3ba26",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    let said = ct.stop();
    println!("\nFLEET OUTPUTS ({crashes} crashes sent in {burst:.1} s)");
    println!("  file:    {} records", lines(&file));
    println!("  journal: {journal} entries");
    println!("  OTLP:    {} records at the receiver", lines(&received));
    println!(
        "  metrics: crashes_total {}, reports_dropped_total {}",
        metric(&m, "crashtrace_crashes_total{"),
        metric(&m, "crashtrace_reports_dropped_total")
    );
    println!(
        "  crashtrace: CPU {:.2} s over the run, peak RSS {} kB",
        cpu1 - cpu0,
        hwm
    );
    for l in said
        .iter()
        .filter(|l| l.contains("detached") || l.contains("not delivered"))
    {
        println!("  {l}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One line of the run's table; pinned files and tracked processes come from the metrics,
/// so descriptors held for other processes on the machine can be told from a leak.
fn sample(start: Instant, pid: u32, metrics_port: u16, file: &Path, received: &Path) {
    let (_, _, rss) = proc_usage(pid);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let m = scrape(metrics_port);
    println!(
        "{:>6} {:>9.1} {:>5} {:>5} {:>7} {:>6} {:>6}",
        start.elapsed().as_secs(),
        rss as f64 / 1024.0,
        fds,
        metric(&m, "crashtrace_pinned_files "),
        metric(&m, "crashtrace_tracked_processes "),
        lines(file),
        lines(received)
    );
}

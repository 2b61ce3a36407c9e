//! The measuring tools of the benchmark: tracers, timed runs, statistics, /proc usage.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::Sizes;

/// A tracer attached for a block of runs; stopped (SIGINT, then SIGKILL) on drop.
pub struct Tracer {
    child: Child,
    stderr: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Tracer {
    pub fn crashtrace(bin: &Path, args: &[&str], stdout: Stdio) -> Result<Self> {
        let child = Command::new(bin)
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting crashtrace")?;
        Self::wait_for(child, "attached", true)
    }

    pub fn bpftrace() -> Result<Self> {
        // The peer: user stacks on signal_generate, what a bpftrace user would run.
        let child = Command::new("bpftrace")
            .args([
                "-e",
                "tracepoint:signal:signal_generate { @[ustack] = count(); }",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace")?;
        Self::wait_for(child, "Attaching", false)
    }

    fn wait_for(mut child: Child, word: &str, from_stderr: bool) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let pipe: Box<dyn std::io::Read + Send> = if from_stderr {
            Box::new(child.stderr.take().unwrap())
        } else {
            Box::new(child.stdout.take().unwrap())
        };
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut t = Self {
            child,
            stderr: rx,
            lines: vec![],
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !t.lines.iter().any(|l| l.contains(word)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match t.stderr.recv_timeout(left) {
                Ok(l) => t.lines.push(l),
                Err(_) => bail!("tracer did not say {word:?}: {:?}", t.lines),
            }
        }
        // bpftrace says Attaching before its probes are live: give it its moment.
        if !from_stderr {
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(t)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the tracer and returns everything it said.
    pub fn stop(mut self) -> Vec<String> {
        stop_child(&mut self.child);
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            self.lines.push(l);
        }
        std::mem::take(&mut self.lines)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

pub fn stop_child(c: &mut Child) {
    if let Ok(Some(_)) = c.try_wait() {
        return;
    }
    // SAFETY: signalling our own child.
    unsafe { libc_kill(c.id() as i32, 2) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn run_timed(cmd: &[String]) -> Result<f64> {
    let t = Instant::now();
    let st = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(t.elapsed().as_secs_f64())
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

/// CPU seconds (user + system) and peak and current RSS (kB) of a process.
pub fn proc_usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15, counted from 1 with pid and comm first.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (cpu, kb("VmHWM:"), kb("VmRSS:"))
}

/// `crashtrace: program NAME: N runs, T ns in all, M ns per run` lines.
pub fn prog_stats(lines: &[String]) -> Vec<(String, u64, f64)> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("crashtrace: program ")?;
            let (name, rest) = rest.split_once(": ")?;
            let runs = rest.split_whitespace().next()?.parse().ok()?;
            let mean = rest
                .rsplit(", ")
                .next()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), runs, mean))
        })
        .collect()
}

/// Runs the large victim to its crash; returns its pid and the time from the fault to
/// its exit as this process saw it (ms). With `core`, RLIMIT_CORE is lifted and the core
/// file (core_pattern as the machine has it) is removed afterwards.
pub fn run_large(crasher: &str, sz: &Sizes, core: bool, dir: &Path) -> Result<(u32, f64)> {
    let cwd: PathBuf = dir.join(if core { "core-run" } else { "run" });
    std::fs::create_dir_all(&cwd)?;
    let limit = if core { "unlimited" } else { "0" };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -c {limit}; exec {crasher} large {} {}",
            sz.large_mib, sz.large_threads
        ))
        .current_dir(&cwd)
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let fault_ns: u64 = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|v| v.parse().ok())
        .context("the large victim did not say ready")?;
    let _ = child.wait();
    let mut ts = [0i64; 2];
    // SAFETY: CLOCK_MONOTONIC (1) into a timespec-shaped array.
    unsafe { clock_gettime(1, ts.as_mut_ptr()) };
    let now_ns = ts[0] as u64 * 1_000_000_000 + ts[1] as u64;
    let _ = std::fs::remove_dir_all(&cwd);
    Ok((pid, now_ns.saturating_sub(fault_ns) as f64 / 1e6))
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut i64) -> i32;
}

pub fn machine() -> Value {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({ "cpus": cpus, "kernel": kernel.trim() })
}

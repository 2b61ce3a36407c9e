//! A crowded host: crashtrace's start-up time and memory with P processes of T threads
//! running (made here, `bench/population.c`), against the same on the machine as it is.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::measure::{Tracer, proc_usage, stop_child};

const PID_MAX: &str = "/proc/sys/kernel/pid_max";

struct Start {
    ms: f64,
    rss_kb: u64,
    known: u64,
    threads: u64,
}

pub fn scale(bin: &Path, population: &str, procs: u64, threads: u64) -> Result<Value> {
    let quiet = measure(bin)?;
    // The default pid_max (32768 on a small machine) is below the threads asked for.
    let pid_max = std::fs::read_to_string(PID_MAX).context("reading pid_max")?;
    let need = procs * threads + 32768;
    let raised = pid_max.trim().parse::<u64>().unwrap_or(0) < need;
    if raised {
        std::fs::write(PID_MAX, need.to_string()).context("raising pid_max")?;
    }
    let crowded = crowd(population, procs, threads, || measure(bin));
    if raised {
        std::fs::write(PID_MAX, pid_max.trim()).context("restoring pid_max")?;
    }
    let crowded = crowded?;
    let per_process =
        (crowded.rss_kb as f64 - quiet.rss_kb as f64) / (crowded.known as f64 - quiet.known as f64);
    println!(
        "\nSCALE: start-up and memory on a crowded host ({procs} processes of {threads} threads made)"
    );
    println!(
        "{:<22} {:>12} {:>12} {:>16} {:>14}",
        "host", "start-up", "RSS", "processes known", "threads"
    );
    for (name, s) in [("as it is", &quiet), ("crowded", &crowded)] {
        println!(
            "{:<22} {:>9.0} ms {:>9} kB {:>16} {:>14}",
            name, s.ms, s.rss_kb, s.known, s.threads
        );
    }
    println!("memory per tracked process: {per_process:.2} kB");
    let row = |s: &Start| json!({"startup_ms": s.ms, "rss_kb": s.rss_kb, "known": s.known, "threads": s.threads});
    Ok(json!({
        "procs": procs, "threads_each": threads, "quiet": row(&quiet), "crowded": row(&crowded),
        "kb_per_process": per_process,
    }))
}

/// Runs `f` while the population lives; it ends when its stdin closes.
fn crowd<T>(
    population: &str,
    procs: u64,
    threads: u64,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let mut child = Command::new(population)
        .args([procs.to_string(), threads.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the population")?;
    let stdout = child.stdout.take().context("population stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let ready = rx.recv_timeout(Duration::from_secs(600));
    let out = match ready {
        Ok(l) if l.trim() == "ready" => f(),
        Ok(l) => Err(anyhow::anyhow!("the population said {l:?}")),
        Err(_) => Err(anyhow::anyhow!("the population was not ready in 600 s")),
    };
    drop(child.stdin.take());
    stop_child(&mut child);
    // Its processes die with it (PR_SET_PDEATHSIG); let the kernel reap them.
    let deadline = Instant::now() + Duration::from_secs(120);
    while threads_on_host() > 20_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    out
}

/// Start-up (spawn to "attached"), RSS 3 s later, and the processes it says it knows.
fn measure(bin: &Path) -> Result<Start> {
    let t = Instant::now();
    let tracer = Tracer::crashtrace(bin, &[], Stdio::null())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    std::thread::sleep(Duration::from_secs(3));
    let (_, _, rss_kb) = proc_usage(tracer.pid());
    let said = tracer.stop();
    let known = said
        .iter()
        .find_map(|l| {
            l.split_once(" processes known")?
                .0
                .rsplit('(')
                .next()?
                .parse()
                .ok()
        })
        .context("crashtrace did not say how many processes it knows")?;
    if rss_kb == 0 {
        bail!("no RSS read for crashtrace");
    }
    Ok(Start {
        ms,
        rss_kb,
        known,
        threads: threads_on_host(),
    })
}

/// Threads on the machine, from /proc/loadavg's "running/total".
fn threads_on_host() -> u64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
        .unwrap_or(0)
}

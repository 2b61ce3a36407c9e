//! `cargo xtask bench`: what crashtrace costs, measured side by side with the untraced run
//! and with the equivalent bpftrace one-liner, and what it delivers under load.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

pub mod args;
mod dump;
mod events;
mod fleet;
mod floor;
mod forkexec;
mod measure;
mod rest;
mod scale;
mod soak;

use measure::{Tracer, machine, median, percentile, proc_usage, prog_stats, run_large, run_timed};

struct Sizes {
    rounds: usize,
    forkexec: u64,
    signals: u64,
    threads: u64,
    python: u64,
    crashes: usize,
    large_mib: u64,
    large_threads: u64,
    storm: usize,
    idle: Duration,
    /// Processes and threads each of the crowded host.
    population: (u64, u64),
}

const QUICK: Sizes = Sizes {
    rounds: 3,
    forkexec: 2_000,
    signals: 200_000,
    threads: 5_000,
    python: 3_000_000,
    crashes: 50,
    large_mib: 1024,
    large_threads: 16,
    storm: 1000,
    idle: Duration::from_secs(15),
    population: (2_000, 10),
};

const FULL: Sizes = Sizes {
    rounds: 7,
    forkexec: 20_000,
    signals: 1_000_000,
    threads: 20_000,
    python: 10_000_000,
    crashes: 200,
    large_mib: 3072,
    large_threads: 48,
    storm: 2000,
    idle: Duration::from_secs(60),
    population: (10_000, 10),
};

/// Which part of the bench to run.
#[derive(PartialEq, Eq)]
enum Only {
    All,
    /// The per-event cost of rejected events.
    Events,
    /// The crowded host.
    Scale,
    /// Fork+exec with and without crashtrace.
    Forkexec,
}

/// `bin`: the crashtrace to measure (another build's, to compare two).
fn bench(root: &Path, bin: &Path, quick: bool, only: Only) -> Result<()> {
    let sz = if quick { &QUICK } else { &FULL };
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    for (src, extra) in [
        ("forkexec", &[][..]),
        ("signals", &[][..]),
        ("threads", &["-pthread"][..]),
        ("crasher", &["-pthread", "-g"][..]),
        ("population", &["-pthread"][..]),
    ] {
        let st = Command::new("gcc")
            .args(["-O2"])
            .args(extra)
            .arg(root.join(format!("bench/{src}.c")))
            .arg("-o")
            .arg(out_dir.join(src))
            .status()?;
        if !st.success() {
            bail!("building bench/{src}.c failed");
        }
    }
    let bin = bin.to_path_buf();
    let w = |name: &str| out_dir.join(name).to_string_lossy().into_owned();
    let workloads: Vec<(&str, Vec<String>)> = vec![
        (
            "fork+exec storm",
            vec![w("forkexec"), sz.forkexec.to_string()],
        ),
        (
            "handled signals",
            vec![w("signals"), sz.signals.to_string()],
        ),
        ("thread churn", vec![w("threads"), sz.threads.to_string()]),
        (
            "python loop",
            vec![
                "python3".into(),
                "-c".into(),
                format!("s = 0\nfor i in range({}): s += i * i", sz.python),
            ],
        ),
    ];
    let mut results = json!({ "quick": quick, "machine": machine() });
    let rejected = [&workloads[1], &workloads[2], &workloads[0]].map(|w| (w.0, w.1.clone()));
    match only {
        Only::Events => {
            results["per_event"] = events::per_event(&bin, &rejected, sz.rounds)?;
            return write_results(&out_dir.join("events.json"), &results);
        }
        Only::Scale => {
            let (procs, threads) = sz.population;
            results["scale"] = scale::scale(&bin, &w("population"), procs, threads)?;
            return write_results(&out_dir.join("scale.json"), &results);
        }
        Only::Forkexec => {
            results["forkexec"] =
                forkexec::forkexec(&bin, &workloads[0].1, sz.forkexec, sz.rounds.max(5))?;
            return write_results(&out_dir.join("forkexec.json"), &results);
        }
        Only::All => {}
    }

    // 1. Overhead on healthy processes, modes alternating round by round.
    eprintln!("bench: overhead, {} rounds", sz.rounds);
    let modes = ["untraced", "crashtrace", "bpftrace"];
    let mut times = vec![vec![Vec::<f64>::new(); modes.len()]; workloads.len()];
    let mut bpftrace_error = None;
    for round in 0..sz.rounds {
        for k in 0..modes.len() {
            let m = (round + k) % modes.len();
            let tracer = match m {
                0 => None,
                1 => Some(Tracer::crashtrace(&bin, &[], Stdio::null())?),
                _ => match Tracer::bpftrace() {
                    Ok(t) => Some(t),
                    Err(e) => {
                        bpftrace_error = Some(format!("{e:#}"));
                        continue;
                    }
                },
            };
            for (i, (_, cmd)) in workloads.iter().enumerate() {
                times[i][m].push(run_timed(cmd)?);
            }
            drop(tracer);
        }
    }
    let mut overhead = vec![];
    println!(
        "\nOVERHEAD on healthy processes (median wall time; ratio to untraced, min..max over rounds)"
    );
    println!(
        "{:<18} {:>10} {:>26} {:>26}",
        "workload", "untraced", "crashtrace", "bpftrace ustack"
    );
    for (i, (name, _)) in workloads.iter().enumerate() {
        let base = median(&mut times[i][0].clone());
        let ratio = |m: usize| -> Option<(f64, f64, f64)> {
            let n = times[i][m].len().min(times[i][0].len());
            if n == 0 {
                return None;
            }
            let mut r: Vec<f64> = (0..n).map(|k| times[i][m][k] / times[i][0][k]).collect();
            let med = median(&mut r);
            Some((med, r[0], r[n - 1]))
        };
        let fmt = |r: Option<(f64, f64, f64)>| match r {
            Some((m, lo, hi)) => format!("{m:.3} ({lo:.3}..{hi:.3})"),
            None => "n/a".into(),
        };
        println!(
            "{:<18} {:>9.3}s {:>26} {:>26}",
            name,
            base,
            fmt(ratio(1)),
            fmt(ratio(2))
        );
        overhead.push(json!({
            "workload": name, "untraced_s": base, "runs": times[i],
            "crashtrace_ratio": ratio(1).map(|r| r.0), "crashtrace_ratio_range": ratio(1).map(|r| [r.1, r.2]),
            "bpftrace_ratio": ratio(2).map(|r| r.0), "bpftrace_ratio_range": ratio(2).map(|r| [r.1, r.2]),
        }));
    }
    if let Some(e) = &bpftrace_error {
        println!("bpftrace unavailable: {e}");
    }
    results["overhead"] = json!(overhead);
    results["bpftrace_error"] = json!(bpftrace_error);

    // 2. Per-event cost in the kernel, from BPF run-time statistics: rejected events
    //    side by side with bpftrace, then captures.
    eprintln!("bench: per-event cost");
    results["per_event"] = events::per_event(&bin, &rejected, sz.rounds)?;
    results["forkexec"] = forkexec::forkexec(&bin, &workloads[0].1, sz.forkexec, sz.rounds.max(5))?;
    let t = Tracer::crashtrace(&bin, &["--bpf-stats", "--comm", "=crasher"], Stdio::null())?;
    for _ in 0..sz.crashes {
        let _ = Command::new(w("crasher")).arg("small").status();
    }
    let captures = prog_stats(&t.stop());
    println!(
        "\nCAPTURE COST in the kernel ({} crashes, mean ns per program run)",
        sz.crashes
    );
    for (name, runs, ns) in &captures {
        println!("{name:<20} {:>28}", format!("{ns:.0} ns x {runs}"));
    }
    results["captures"] = json!(
        captures
            .iter()
            .map(|(n, r, t)| json!({"program": n, "runs": r, "mean_ns": t}))
            .collect::<Vec<_>>()
    );

    // 3. Crash-to-report latency: small victims, then a large one; core dump for reference.
    eprintln!("bench: latency");
    let report_file = out_dir.join("latency.jsonl");
    let t = Tracer::crashtrace(
        &bin,
        &["--json", "--comm", "=crasher"],
        Stdio::from(std::fs::File::create(&report_file)?),
    )?;
    for _ in 0..sz.crashes {
        let _ = Command::new(w("crasher")).arg("small").status();
    }
    let large = run_large(&w("crasher"), sz, false, &out_dir)?;
    std::thread::sleep(Duration::from_secs(2));
    drop(t);
    let reports: Vec<Value> = std::fs::read_to_string(&report_file)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut small: Vec<f64> = reports
        .iter()
        .filter(|r| r["threads"].as_array().is_some_and(|t| t.is_empty()))
        .filter_map(|r| r["latency_ms"].as_f64())
        .collect();
    let large_report = reports.iter().find(|r| r["pid"] == large.0);
    let large_ms = large_report.and_then(|r| r["latency_ms"].as_f64());
    let core = run_large(&w("crasher"), sz, true, &out_dir)?;
    println!("\nCRASH-TO-REPORT LATENCY (signal in the kernel to report written)");
    if !small.is_empty() {
        println!(
            "small victim x{}: p50 {:.2} ms, p99 {:.2} ms",
            small.len(),
            percentile(&mut small, 0.5),
            percentile(&mut small, 0.99)
        );
    }
    println!(
        "large victim ({} MiB RSS, {} threads): {} (its exit took {:.0} ms after the fault)",
        sz.large_mib,
        sz.large_threads,
        large_ms
            .map(|m| format!("{m:.1} ms"))
            .unwrap_or("no report".into()),
        large.1
    );
    println!(
        "reference: the kernel writing that victim's core file: {:.0} ms from the fault to its exit",
        core.1
    );
    results["latency"] = json!({
        "small_count": small.len(),
        "small_p50_ms": if small.is_empty() { None } else { Some(percentile(&mut small, 0.5)) },
        "small_p99_ms": if small.is_empty() { None } else { Some(percentile(&mut small, 0.99)) },
        "large_mib": sz.large_mib, "large_threads": sz.large_threads,
        "large_ms": large_ms, "large_exit_ms": large.1, "core_dump_exit_ms": core.1,
    });

    // 4. Crash storm.
    eprintln!("bench: storm of {}", sz.storm);
    let storm_file = out_dir.join("storm.jsonl");
    let t = Tracer::crashtrace(
        &bin,
        &["--json", "--comm", "=crasher"],
        Stdio::from(std::fs::File::create(&storm_file)?),
    )?;
    let (cpu0, _, _) = proc_usage(t.pid());
    let start = Instant::now();
    let mut kids = vec![];
    for _ in 0..sz.storm {
        kids.push(
            Command::new(w("crasher"))
                .arg("small")
                .stderr(Stdio::null())
                .spawn()?,
        );
        if kids.len() >= 50 {
            for mut k in kids.drain(..) {
                let _ = k.wait();
            }
        }
    }
    for mut k in kids {
        let _ = k.wait();
    }
    let burst = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = || {
        std::fs::read_to_string(&storm_file)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    while count() < sz.storm && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (cpu1, hwm, _) = proc_usage(t.pid());
    let said = t.stop();
    let lost: Vec<&String> = said.iter().filter(|l| l.contains("lost")).collect();
    let mut storm_ms: Vec<f64> = std::fs::read_to_string(&storm_file)?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["latency_ms"].as_f64())
        .collect();
    let (p50, p99) = if storm_ms.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (
            percentile(&mut storm_ms, 0.5),
            percentile(&mut storm_ms, 0.99),
        )
    };
    println!("\nCRASH STORM");
    println!(
        "{} crashes in {:.1} s: {} reports (crash to report p50 {p50:.2} ms, p99 {p99:.2} ms), \
         crashtrace CPU {:.2} s, peak RSS {} kB",
        sz.storm,
        burst,
        count(),
        cpu1 - cpu0,
        hwm
    );
    for l in &lost {
        println!("  {l}");
    }
    results["storm"] = json!({
        "crashes": sz.storm, "seconds": burst, "reports": count(),
        "latency_p50_ms": p50, "latency_p99_ms": p99,
        "crashtrace_cpu_s": cpu1 - cpu0, "crashtrace_peak_rss_kb": hwm,
        "loss_lines": lost,
    });

    // 4b. How many crashes the default ring holds at once: crashtrace is stopped (SIGSTOP)
    //     while a burst of crashes fills its ring, then let go; what was captured and what
    //     was counted lost is read from its closing line.
    let burst_n = 600;
    println!("\nRING CAPACITY: {burst_n} crashes while crashtrace drains nothing (16 MiB ring)");
    let mut capacity = vec![];
    for stack in ["64K", "16K"] {
        let t = Tracer::crashtrace(
            &bin,
            &["--json", "--comm", "=crasher", "--stack-size", stack],
            Stdio::null(),
        )?;
        let pid = t.pid().to_string();
        status_quiet(Command::new("kill").args(["-STOP", &pid]))?;
        for _ in 0..burst_n {
            let _ = Command::new(w("crasher"))
                .arg("small")
                .stderr(Stdio::null())
                .status();
        }
        status_quiet(Command::new("kill").args(["-CONT", &pid]))?;
        std::thread::sleep(Duration::from_secs(2));
        let said = t.stop();
        let summary = said
            .iter()
            .find(|l| l.contains("detached"))
            .cloned()
            .unwrap_or_default();
        let num = |word: &str| -> u64 {
            summary
                .split(word)
                .next()
                .and_then(|h| h.rsplit(' ').find(|t| !t.is_empty()))
                .and_then(|t| t.trim_end_matches(',').parse().ok())
                .unwrap_or(0)
        };
        let (captured, lost) = (num(" captured,"), num(" lost (ring"));
        println!("  --stack-size {stack:>4}: {captured} captured at once, {lost} counted lost");
        capacity.push(json!({ "stack_size": stack, "captured": captured, "lost": lost }));
    }
    results["ring_capacity"] = json!({ "crashes": burst_n, "runs": capacity });

    // 5. Footprint while idle on a busy machine.
    eprintln!("bench: footprint, {:?}", sz.idle);
    let t = Tracer::crashtrace(&bin, &[], Stdio::null())?;
    let mut busy = Command::new("sh")
        .arg("-c")
        .arg(format!("while :; do {} 200; done", w("forkexec")))
        .spawn()?;
    let (c0, _, _) = proc_usage(t.pid());
    std::thread::sleep(sz.idle);
    let (c1, hwm, rss) = proc_usage(t.pid());
    let _ = busy.kill();
    let _ = busy.wait();
    drop(t);
    let pct = (c1 - c0) / sz.idle.as_secs_f64() * 100.0;
    println!("\nFOOTPRINT while the machine runs a fork+exec loop");
    println!(
        "crashtrace over {:?}: {:.2} % of one CPU, RSS {} kB (peak {} kB)",
        sz.idle, pct, rss, hwm
    );
    results["footprint"] = json!({ "seconds": sz.idle.as_secs(), "cpu_percent": pct, "rss_kb": rss, "peak_rss_kb": hwm });

    // 5b. At rest on the quiet machine, beside bpftrace.
    eprintln!("bench: at rest");
    results["at_rest"] = rest::at_rest(&bin, sz.idle.as_secs().min(30))?;

    // 6. A crowded host.
    eprintln!("bench: crowded host, {:?}", sz.population);
    let (procs, threads) = sz.population;
    results["scale"] = scale::scale(&bin, &w("population"), procs, threads)?;

    write_results(&out_dir.join("results.json"), &results)
}

fn write_results(path: &Path, results: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(results)?)?;
    println!("\nresults: {}", path.display());
    Ok(())
}

fn status_quiet(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

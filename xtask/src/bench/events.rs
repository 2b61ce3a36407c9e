//! Per-event cost in the kernel, side by side: crashtrace's programs, the bpftrace
//! probes a user would write for the same events (filtered on the process name, as
//! `--comm` filters), empty bpftrace probes, and empty BTF tracepoint programs of the
//! kind crashtrace's are (`floor.rs`): what any program on that event costs on this
//! machine before it does anything. Means from the kernel's BPF run-time statistics,
//! each tracer alone on the same workload; then crashtrace and the empty programs
//! together, in both orders, for the difference on the same events (`paired`).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::measure::{Tracer, median, prog_stats, run_timed, stop_child};

/// The events crashtrace attaches to, as (crashtrace program prefix, bpftrace tracepoint).
const EVENTS: [(&str, &str); 3] = [
    ("signal_generate", "signal:signal_generate"),
    ("signal_deliver", "signal:signal_deliver"),
    ("sched_process_exit", "sched:sched_process_exit"),
];

/// Runs and mean ns per run of each event, for one tracer over one workload.
type Costs = Vec<(String, u64, f64)>;

pub fn per_event(bin: &Path, workloads: &[(&str, Vec<String>)], rounds: usize) -> Result<Value> {
    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .context("reading kernel.bpf_stats_enabled")?;
    let mut rows = vec![];
    println!(
        "\nPER-EVENT COST in the kernel (mean ns per program run, median of {rounds} rounds; each \
         tracer alone; empty probes of both kinds; `above floor`: crashtrace minus the empty \
         tp_btf, median and range over the rounds; `same events`: both attached together, \
         crashtrace's mean minus the empty program's, median over the rounds where the empty \
         one ran first / where it ran second, and their mean)"
    );
    println!(
        "{:<18} {:<20} {:>9} {:>12} {:>16} {:>12} {:>12} {:>22} {:>24}",
        "workload",
        "event",
        "runs",
        "crashtrace",
        "bpftrace filter",
        "empty probe",
        "empty tp_btf",
        "above floor",
        "same events"
    );
    for (name, cmd) in workloads {
        // Each tracer's costs, round by round; the order turns each round, so that a
        // drift of the machine within the run does not fall on one tracer.
        let mut got: [Vec<Costs>; 4] = Default::default();
        // Per round, both orders of the paired run: (floor first, crashtrace first).
        let mut pairs = vec![];
        for round in 0..rounds {
            for k in 0..4 {
                let which = (round + k) % 4;
                let costs = match which {
                    0 => crashtrace(bin, cmd)?,
                    _ => {
                        set_stats("1")?;
                        let c = match which {
                            1 => bpftrace(cmd, |tp| {
                                format!(
                                    "tracepoint:{tp} /comm == \"crasher\"/ {{ @[ustack] = count(); }}"
                                )
                            }),
                            2 => bpftrace(cmd, |tp| format!("tracepoint:{tp} {{ }}")),
                            _ => empty_tp_btf(cmd),
                        };
                        set_stats(stats_before.trim())?;
                        c?
                    }
                };
                got[which].push(costs);
            }
            set_stats("1")?;
            let both = (paired(bin, cmd, true), paired(bin, cmd, false));
            set_stats(stats_before.trim())?;
            pairs.push((both.0?, both.1?));
        }
        let [ours, filtered, empty, floor] = &got;
        for (prog, tp) in EVENTS {
            let find = |c: &Costs, key: &str| c.iter().find(|e| e.0.starts_with(key)).cloned();
            let mine: Vec<_> = ours.iter().filter_map(|c| find(c, prog)).collect();
            let runs = mine.iter().map(|e| e.1).min().unwrap_or(0);
            if mine.len() < rounds || runs < 1000 {
                // A few stray events of the machine's own: no mean worth printing.
                continue;
            }
            let med = |c: &[Costs], key: &str| -> Option<f64> {
                let mut v: Vec<f64> = c.iter().filter_map(|c| find(c, key)).map(|e| e.2).collect();
                (!v.is_empty()).then(|| median(&mut v))
            };
            let ns = med(ours, prog).unwrap_or(f64::NAN);
            let (f, e, fl) = (med(filtered, tp), med(empty, tp), med(floor, prog));
            // Paired by round: each round's crashtrace minus that round's floor.
            let mut above: Vec<f64> = ours
                .iter()
                .zip(floor)
                .filter_map(|(o, f)| Some(find(o, prog)?.2 - find(f, prog)?.2))
                .collect();
            let above_cell = if above.is_empty() {
                "-".to_string()
            } else {
                let m = median(&mut above);
                format!(
                    "{m:+.0} ({:+.0}..{:+.0}) ns",
                    above[0],
                    above[above.len() - 1]
                )
            };
            let diffs = |second: bool| -> Vec<f64> {
                pairs
                    .iter()
                    .map(|p| if second { &p.1 } else { &p.0 })
                    .filter_map(|r| r.iter().find(|e| e.0 == prog))
                    .map(|e| e.1 - e.2)
                    .collect()
            };
            let (mut first, mut second) = (diffs(false), diffs(true));
            let same_cell = if first.is_empty() || second.is_empty() {
                "-".to_string()
            } else {
                let (a, b) = (median(&mut first), median(&mut second));
                format!("{a:+.0} / {b:+.0}: {:+.0} ns", (a + b) / 2.0)
            };
            let cell = |v: Option<f64>| v.map(|v| format!("{v:.0} ns")).unwrap_or("-".into());
            println!(
                "{:<18} {:<20} {:>9} {:>12} {:>16} {:>12} {:>12} {:>22} {:>24}",
                name,
                prog,
                runs,
                format!("{ns:.0} ns"),
                cell(f),
                cell(e),
                cell(fl),
                above_cell,
                same_cell,
            );
            rows.push(json!({
                "workload": name, "event": prog, "runs": runs, "rounds": rounds,
                "crashtrace_ns": ns, "bpftrace_filtered_ns": f, "empty_probe_ns": e,
                "empty_tp_btf_ns": fl, "above_floor_ns": above,
                "same_events_floor_first_ns": first, "same_events_floor_second_ns": second,
            }));
        }
    }
    Ok(json!(rows))
}

fn crashtrace(bin: &Path, cmd: &[String]) -> Result<Costs> {
    let t = Tracer::crashtrace(bin, &["--bpf-stats", "--comm", "=crasher"], Stdio::null())?;
    run_timed(cmd)?;
    Ok(prog_stats(&t.stop()))
}

/// crashtrace and the empty `tp_btf` programs attached together, so both run on the very
/// same events: the difference of their means is what crashtrace's tests add, free of
/// the run-to-run spread that separate runs carry (about 25 ns a round on a fork+exec
/// storm here). The program attached first runs first on each event; `floor_first`
/// turns that order round by round. Returns (event, crashtrace ns, floor ns).
fn paired(bin: &Path, cmd: &[String], floor_first: bool) -> Result<Vec<(String, f64, f64)>> {
    let names = EVENTS.map(|(prog, _)| prog);
    let mut floor = None;
    if floor_first {
        floor = Some(super::floor::Floor::attach(&names)?);
    }
    let t = Tracer::crashtrace(bin, &["--bpf-stats", "--comm", "=crasher"], Stdio::null())?;
    let floor = match floor {
        Some(f) => f,
        None => super::floor::Floor::attach(&names)?,
    };
    let ids: Vec<u32> = fdinfos(t.pid())
        .iter()
        .filter_map(|s| s.lines().find_map(|l| l.strip_prefix("prog_id:")))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let ours = || -> Vec<(String, u64, u64)> {
        aya::programs::loaded_programs()
            .flatten()
            .filter(|p| ids.contains(&p.id()))
            .map(|p| {
                let name = p.name_as_str().unwrap_or("").to_string();
                (name, p.run_count(), p.run_time().as_nanos() as u64)
            })
            .collect()
    };
    let (o0, f0) = (ours(), floor.counters()?);
    let ran = run_timed(cmd);
    let (o1, f1) = (ours(), floor.counters()?);
    drop(floor);
    t.stop();
    ran?;
    let mut out = vec![];
    for (i, event) in names.iter().enumerate() {
        let (fruns, fns) = (f1[i].0 - f0[i].0, f1[i].1 - f0[i].1);
        // The kernel keeps 15 bytes of a name (`signal_deliver_`, `sched_process_e`); of
        // the programs so named, the one attached ran.
        let Some((_, oruns, ons)) = o1
            .iter()
            .filter(|(n, ..)| event.starts_with(n.as_str()) || n.starts_with(*event))
            .filter_map(|(n, r, ns)| {
                let (r0, ns0) = o0
                    .iter()
                    .find(|(m, ..)| m == n)
                    .map(|(_, r, ns)| (*r, *ns))?;
                Some((n, r - r0, ns - ns0))
            })
            .max_by_key(|(_, r, _)| *r)
        else {
            continue;
        };
        if oruns == 0 || fruns == 0 {
            continue;
        }
        out.push((
            event.to_string(),
            ons as f64 / oruns as f64,
            fns as f64 / fruns as f64,
        ));
    }
    Ok(out)
}

/// Empty `tp_btf` programs on the same events, alone.
fn empty_tp_btf(cmd: &[String]) -> Result<Costs> {
    let names = EVENTS.map(|(prog, _)| prog);
    let floor = super::floor::Floor::attach(&names)?;
    let before = floor.counters()?;
    run_timed(cmd)?;
    let after = floor.counters()?;
    Ok(names
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a.0 > b.0)
        .map(|(name, (b, a))| {
            let runs = a.0 - b.0;
            (name.to_string(), runs, (a.1 - b.1) as f64 / runs as f64)
        })
        .collect())
}

/// One bpftrace process per tracepoint, so each one's single program is its own.
fn bpftrace(cmd: &[String], script: impl Fn(&str) -> String) -> Result<Costs> {
    let mut kids = vec![];
    for (_, tp) in EVENTS {
        let child = Command::new("bpftrace")
            .args(["-e", &script(tp)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace")?;
        kids.push((tp, child));
    }
    let mut before = vec![];
    for (tp, child) in &mut kids {
        before.push(wait_attached(child).with_context(|| format!("bpftrace on {tp}"))?);
    }
    let ran = run_timed(cmd);
    let mut out = vec![];
    for ((tp, child), b) in kids.iter_mut().zip(before) {
        let (runs, ns) = prog_counters(child.id());
        stop_child(child);
        let runs = runs.saturating_sub(b.0);
        if runs > 0 {
            out.push((
                tp.to_string(),
                runs,
                (ns.saturating_sub(b.1)) as f64 / runs as f64,
            ));
        }
    }
    ran?;
    Ok(out)
}

/// Waits until bpftrace's program is loaded and attached (it says so on stdout), and
/// returns its counters then: what ran while the others were starting is not counted.
fn wait_attached(child: &mut std::process::Child) -> Result<(u64, u64)> {
    use std::io::Read as _;
    let mut out = child.stdout.take().context("bpftrace stdout")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("Attaching") {
        if Instant::now() > deadline {
            bail!("bpftrace did not attach in 60 s");
        }
        let n = out.read(&mut buf)?;
        if n == 0 {
            bail!("bpftrace exited: {}", String::from_utf8_lossy(&seen));
        }
        seen.extend_from_slice(&buf[..n]);
    }
    // Attaching is said just before the attach itself: wait for the program to exist.
    let deadline = Instant::now() + Duration::from_secs(10);
    while prog_ids(child.id()) == 0 {
        if Instant::now() > deadline {
            bail!("bpftrace loaded no program");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Ok(prog_counters(child.id()))
}

fn prog_ids(pid: u32) -> usize {
    fdinfos(pid)
        .iter()
        .filter(|s| s.contains("prog_id:"))
        .count()
}

/// Runs and run time summed over the BPF programs a process holds, from fdinfo.
fn prog_counters(pid: u32) -> (u64, u64) {
    let mut runs = 0;
    let mut ns = 0;
    for s in fdinfos(pid) {
        let field = |k: &str| -> u64 {
            s.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        if s.contains("prog_id:") {
            runs += field("run_cnt:");
            ns += field("run_time_ns:");
        }
    }
    (runs, ns)
}

fn fdinfos(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect()
}

fn set_stats(v: &str) -> Result<()> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", v)
        .context("setting kernel.bpf_stats_enabled")
}

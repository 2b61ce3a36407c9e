//! crashtrace at rest on a quiet machine, beside the bpftrace peer: CPU and wakeups over
//! a while, RSS and where it lies (from /proc/PID/smaps), and the kernel memory the
//! tracer holds outside its RSS: BPF maps and programs, perf buffers.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::{Value, json};

use super::measure::{Tracer, proc_usage};

/// Context switches of every thread of `pid`: how often it woke.
fn wakeups(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("voluntary_ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// (mapping name, field, kB) for every kB field of /proc/PID/smaps.
fn smaps_fields(pid: u32) -> Vec<(String, String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out = vec![];
    let mut name = String::new();
    for l in smaps.lines() {
        let mut f = l.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            name = f.nth(4).unwrap_or("[anon]").to_string();
        } else if let Some(kb) = f.next().and_then(|v| v.parse().ok()) {
            out.push((name.clone(), first.trim_end_matches(':').to_string(), kb));
        }
    }
    out
}

/// Resident kB by what is mapped (file name, `[heap]`, `[anon]`, the BPF maps), largest
/// first.
fn rss_parts(pid: u32) -> Vec<(String, u64)> {
    let mut parts: BTreeMap<String, u64> = BTreeMap::new();
    for (name, field, kb) in smaps_fields(pid) {
        if field == "Rss" {
            *parts.entry(name).or_default() += kb;
        }
    }
    let mut v: Vec<(String, u64)> = parts.into_iter().filter(|(_, kb)| *kb > 0).collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.1));
    v
}

/// Bytes of kernel memory the tracer's descriptors hold: BPF maps and programs (`memlock`
/// in fdinfo) and perf buffers (the size of their mappings; no RSS counts them).
fn kernel_bytes(pid: u32) -> u64 {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .flat_map(|s| {
                    s.lines()
                        .filter_map(|l| l.strip_prefix("memlock:")?.trim().parse::<u64>().ok())
                        .collect::<Vec<_>>()
                })
                .sum::<u64>()
        })
        .unwrap_or(0);
    let perf: u64 = smaps_fields(pid)
        .into_iter()
        .filter(|(name, field, _)| name.ends_with("[perf_event]") && field == "Size")
        .map(|(_, _, kb)| kb * 1024)
        .sum();
    fds + perf
}

pub fn at_rest(bin: &Path, seconds: u64) -> Result<Value> {
    println!("\nAT REST on a quiet machine ({seconds} s after 3 s of settling)");
    println!(
        "{:<12} {:>12} {:>14} {:>10} {:>16}  largest parts of the RSS",
        "tracer", "CPU", "wakeups/s", "RSS", "kernel buffers"
    );
    let mut rows = vec![];
    for name in ["crashtrace", "bpftrace"] {
        let t = match name {
            "crashtrace" => Tracer::crashtrace(bin, &[], Stdio::null())?,
            _ => match Tracer::bpftrace() {
                Ok(t) => t,
                Err(e) => {
                    println!("{name:<12} unavailable: {e:#}");
                    continue;
                }
            },
        };
        std::thread::sleep(Duration::from_secs(3));
        let pid = t.pid();
        let (c0, _, _) = proc_usage(pid);
        let (w0, start) = (wakeups(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(seconds));
        let (c1, _, rss) = proc_usage(pid);
        let secs = start.elapsed().as_secs_f64();
        let per_s = (wakeups(pid) - w0) as f64 / secs;
        let pct = (c1 - c0) / secs * 100.0;
        let parts = rss_parts(pid);
        let kernel = kernel_bytes(pid);
        drop(t);
        let shown: Vec<String> = parts
            .iter()
            .take(5)
            .map(|(n, kb)| {
                format!(
                    "{} {:.1} MB",
                    n.rsplit('/').next().unwrap_or(n),
                    *kb as f64 / 1e3
                )
            })
            .collect();
        println!(
            "{name:<12} {:>10.2} % {per_s:>14.0} {:>7.1} MB {:>13.1} MB  {}",
            pct,
            rss as f64 / 1e3,
            kernel as f64 / 1e6,
            shown.join(", ")
        );
        rows.push(json!({
            "tracer": name, "cpu_percent": pct, "wakeups_per_s": per_s, "rss_kb": rss,
            "kernel_bytes": kernel,
            "rss_parts_kb": parts.iter().take(8).map(|(n, kb)| json!([n, kb])).collect::<Vec<_>>(),
        }));
    }
    Ok(json!(rows))
}

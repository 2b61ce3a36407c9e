//! Fork+exec with and without crashtrace: whether the difference stands out of this
//! machine's own spread, and where the extra time goes.
//!
//! Each round runs untraced, then twice with crashtrace attached (started for the round),
//! then untraced again: the two traced runs sit between the two untraced ones, so a drift
//! of the machine's speed over the round cancels in the ratio of their sums. The same
//! rounds give the untraced runs against each other (first against last), which is the
//! spread that a ratio from one round carries when nothing differs.

use std::{path::Path, process::Stdio};

use anyhow::Result;
use serde_json::{Value, json};

use super::measure::{Tracer, median, proc_usage, prog_stats, run_timed};

pub fn forkexec(bin: &Path, cmd: &[String], execs: u64, rounds: usize) -> Result<Value> {
    let mut ratios = vec![];
    let mut placebo = vec![];
    let mut untraced = vec![];
    let mut traced = vec![];
    let (mut cpu_s, mut bpf_ns) = (0.0, 0.0);
    for _ in 0..rounds {
        let u1 = run_timed(cmd)?;
        let t = Tracer::crashtrace(bin, &["--bpf-stats"], Stdio::null())?;
        let (cpu0, _, _) = proc_usage(t.pid());
        let (t1, t2) = (run_timed(cmd)?, run_timed(cmd)?);
        let (cpu1, _, _) = proc_usage(t.pid());
        // Whole-run statistics: the few events before and after the two runs are the
        // machine's own, a rounding error beside 2 × `execs`.
        bpf_ns += prog_stats(&t.stop())
            .iter()
            .map(|(_, runs, ns)| *runs as f64 * ns)
            .sum::<f64>();
        let u2 = run_timed(cmd)?;
        cpu_s += cpu1 - cpu0;
        ratios.push((t1 + t2) / (u1 + u2));
        placebo.push(u1 / u2);
        untraced.extend([u1, u2]);
        traced.extend([t1, t2]);
    }
    let n = (2 * execs * rounds as u64) as f64;
    let per = |v: &[f64]| median(&mut v.to_vec()) / execs as f64 * 1e6;
    let (u, tr) = (per(&untraced), per(&traced));
    let range = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        (median(&mut v.to_vec()), lo, hi)
    };
    let (r, rlo, rhi) = range(&ratios);
    let (p, plo, phi) = range(&placebo);
    let within = r >= plo && r <= phi;
    println!(
        "\nFORK+EXEC ({rounds} rounds of untraced, crashtrace, crashtrace, untraced; {execs} \
         execs of /bin/true a run)"
    );
    println!(
        "crashtrace / untraced, per round: {r:.3} ({rlo:.3}..{rhi:.3}); untraced / untraced \
         (first / last of a round): {p:.3} ({plo:.3}..{phi:.3}); the median ratio is {} the \
         untraced runs' own spread",
        if within { "within" } else { "outside" }
    );
    let bpf_us = bpf_ns / n / 1e3;
    let own_us = cpu_s / n * 1e6;
    println!(
        "µs per fork+exec (medians): untraced {u:.1}, crashtrace attached {tr:.1}; crashtrace's \
         programs {bpf_us:.2}; crashtrace's own CPU, beside the workload, {own_us:.1}"
    );
    Ok(json!({
        "ratio": r, "ratio_range": [rlo, rhi], "placebo": p, "placebo_range": [plo, phi],
        "within_spread": within, "ratios": ratios, "placebos": placebo,
        "untraced_us": u, "traced_us": tr, "bpf_us": bpf_us, "crashtrace_cpu_us": own_us,
        "untraced_runs": untraced, "traced_runs": traced,
    }))
}

//! `cargo xtask bench --dump`: what one dump of a 100-thread Python process costs, and
//! how much it slows the process, beside py-spy on the same process in the same run.
//!
//! The target is tests/victims/dump_threads.py: a busy thread counts its loops into a
//! shared file while the others block. A sampler reads that count every 200 µs; the
//! target's rate while each tool dumps it back to back, against its rate undisturbed,
//! is the slowdown, and the longest time the count stood still is the stall.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::measure::{median, percentile};

const THREADS_BESIDE_MAIN: u32 = 99;
const DUMPS: usize = 20;
const BASELINE: Duration = Duration::from_secs(3);

fn count(file: &Path) -> u64 {
    std::fs::read(file)
        .ok()
        .and_then(|b| {
            b.get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        })
        .unwrap_or(0)
}

/// Samples the count until `stop`: (seconds from start, count).
fn sampler(file: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(f64, u64)>> {
    let file = file.to_path_buf();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut v = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            v.push((t0.elapsed().as_secs_f64(), count(&file)));
            std::thread::sleep(Duration::from_micros(200));
        }
        v
    })
}

/// Loops per second over the samples, and the longest time the count stood still (ms).
fn rate_and_stall(s: &[(f64, u64)]) -> (f64, f64) {
    let (Some(first), Some(last)) = (s.first(), s.last()) else {
        return (0.0, 0.0);
    };
    let rate = (last.1 - first.1) as f64 / (last.0 - first.0).max(1e-9);
    let mut stall: f64 = 0.0;
    let mut since = first.0;
    let mut prev = first.1;
    for &(t, c) in s {
        if c != prev {
            since = t;
            prev = c;
        } else {
            stall = stall.max(t - since);
        }
    }
    (rate, stall * 1e3)
}

struct Row {
    name: String,
    wall_ms: Vec<f64>,
    kernel_ms: Vec<f64>,
    rate: f64,
    stall_ms: f64,
}

pub fn dump(root: &Path, py_spy: &Path) -> Result<()> {
    let counter = Path::new("/dev/shm/crashtrace-bench-dump-counter");
    std::fs::write(counter, [0u8; 8])?;
    let mut victim = Command::new("/usr/bin/python3.11")
        .arg(root.join("tests/victims/dump_threads.py"))
        .arg(counter)
        .arg(THREADS_BESIDE_MAIN.saturating_sub(4).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the Python target")?;
    let pid = victim.id();
    let result = (|| {
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(victim.stdout.take().unwrap()),
            &mut line,
        )?;
        if line.trim() != "ready" {
            bail!("the target did not start: {line:?}");
        }
        std::thread::sleep(Duration::from_secs(1));
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count();
        let bin = root.join("target/release/crashtrace");
        let tools: [(&str, Vec<String>); 3] = [
            (
                "crashtrace dump",
                vec![
                    bin.to_string_lossy().into_owned(),
                    "dump".into(),
                    "--json".into(),
                    pid.to_string(),
                ],
            ),
            (
                "py-spy dump",
                vec![
                    py_spy.to_string_lossy().into_owned(),
                    "dump".into(),
                    "--pid".into(),
                    pid.to_string(),
                ],
            ),
            (
                "py-spy dump --nonblocking",
                vec![
                    py_spy.to_string_lossy().into_owned(),
                    "dump".into(),
                    "--nonblocking".into(),
                    "--pid".into(),
                    pid.to_string(),
                ],
            ),
        ];
        let mut rows = Vec::new();
        let undisturbed = || {
            let stop = Arc::new(AtomicBool::new(false));
            let h = sampler(counter, stop.clone());
            std::thread::sleep(BASELINE);
            stop.store(true, Ordering::Relaxed);
            rate_and_stall(&h.join().unwrap())
        };
        let (first_rate, first_stall) = undisturbed();
        for (name, cmd) in tools {
            let stop = Arc::new(AtomicBool::new(false));
            let h = sampler(counter, stop.clone());
            let mut wall_ms = Vec::new();
            let mut kernel_ms = Vec::new();
            for _ in 0..DUMPS {
                let t = Instant::now();
                let out = Command::new(&cmd[0])
                    .args(&cmd[1..])
                    .stderr(Stdio::null())
                    .output()
                    .with_context(|| format!("running {name}"))?;
                wall_ms.push(t.elapsed().as_secs_f64() * 1e3);
                if !out.status.success() {
                    bail!("{name} failed: {}", out.status);
                }
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    && let Some(ms) = v["read_ms"].as_f64()
                {
                    kernel_ms.push(ms);
                }
            }
            stop.store(true, Ordering::Relaxed);
            let (rate, stall_ms) = rate_and_stall(&h.join().unwrap());
            rows.push(Row {
                name: name.into(),
                wall_ms,
                kernel_ms,
                rate,
                stall_ms,
            });
        }
        // Undisturbed before and after: the spread between the two is the noise.
        let (last_rate, last_stall) = undisturbed();
        let base_rate = (first_rate + last_rate) / 2.0;
        println!(
            "\nDUMP ({threads} threads of /usr/bin/python3.11, {DUMPS} dumps back to back per tool)"
        );
        println!(
            "  target undisturbed: {first_rate:.0} loops/s of its busy thread before, \
             {last_rate:.0} after (longest stand-still {first_stall:.1} and {last_stall:.1} ms)"
        );
        println!(
            "  {:<27} {:>10} {:>9} {:>14} {:>12} {:>16}",
            "tool", "wall p50", "wall p90", "kernel pass", "target rate", "longest stall"
        );
        for r in &mut rows {
            let kernel = if r.kernel_ms.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2} ms", median(&mut r.kernel_ms))
            };
            println!(
                "  {:<27} {:>7.1} ms {:>6.1} ms {:>14} {:>11.2}x {:>13.1} ms",
                r.name,
                median(&mut r.wall_ms),
                percentile(&mut r.wall_ms, 0.9),
                kernel,
                r.rate / base_rate.max(1.0),
                r.stall_ms
            );
        }
        Ok(())
    })();
    let _ = victim.kill();
    let _ = victim.wait();
    let _ = std::fs::remove_file(counter);
    result
}

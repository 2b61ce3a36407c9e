//! `cargo xtask bench --soak`: crashtrace watching the whole machine while unprivileged
//! churn tries to make it grow: executable mappings made and dropped, 10 000 distinct
//! files mapped, forks and execs, a handled-fault loop, and a crash storm every 10 s.
//! RSS, open descriptors and CPU are printed over time; after warm-up they must level
//! off. Everything started here is stopped at the end, whatever happens.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::measure::{Tracer, proc_usage, stop_child};

/// Samples are taken this often; the first minute is warm-up.
const SAMPLE: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(60);
const FILES: &str = "10000";
const CRASHES_PER_STORM: &str = "20";

/// Kills the churn processes (and their children) when dropped.
struct Churn(Vec<Child>);

impl Drop for Churn {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // runuser's child runs the churn: kill the whole process group.
            // SAFETY: signalling a process group we created.
            unsafe { libc_kill(-(c.id() as i32), 9) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn as_nobody(churn: &Path, args: &[&str]) -> Result<Child> {
    use std::os::unix::process::CommandExt as _;
    Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(churn)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("starting churn as nobody")
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub fn soak(root: &Path, out_dir: &Path, seconds: u64) -> Result<()> {
    let churn = out_dir.join("churn");
    let st = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&churn)
        .arg(root.join("bench/churn.c"))
        .status()?;
    if !st.success() {
        bail!("building bench/churn.c failed");
    }
    let files = std::env::temp_dir().join(format!("crashtrace-soak-{}", std::process::id()));
    std::fs::create_dir_all(&files)?;
    let chown = Command::new("chown").arg("nobody").arg(&files).status()?;
    if !chown.success() {
        bail!("chown nobody {}", files.display());
    }
    let reports = out_dir.join("soak-reports.jsonl");
    let ct = Tracer::crashtrace(
        &root.join("target/release/crashtrace"),
        &["--json"],
        Stdio::from(std::fs::File::create(&reports)?),
    )?;
    let pid = ct.pid();
    let files_s = files.to_string_lossy().into_owned();
    let mut churn_procs = Churn(vec![
        as_nobody(&churn, &["maps"])?,
        as_nobody(&churn, &["files", &files_s, FILES])?,
        as_nobody(&churn, &["forks"])?,
        as_nobody(&churn, &["handled"])?,
    ]);
    println!(
        "soak: {seconds} s; crashtrace pid {pid}; a storm of {CRASHES_PER_STORM} crashes every {} s",
        SAMPLE.as_secs()
    );
    println!(
        "{:>6} {:>9} {:>6} {:>7} {:>8}",
        "t (s)", "RSS (MiB)", "fds", "CPU %", "reports"
    );
    let start = Instant::now();
    let (mut last_cpu, mut last_t) = (proc_usage(pid).0, start);
    let mut after_warm: Vec<(u64, usize)> = Vec::new();
    let mut cpu_after_warm = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        let mut storm = as_nobody(&churn, &["crashes", CRASHES_PER_STORM])?;
        std::thread::sleep(SAMPLE);
        let _ = storm.wait();
        let (cpu, _, rss_kb) = proc_usage(pid);
        let now = Instant::now();
        let pct = 100.0 * (cpu - last_cpu) / now.duration_since(last_t).as_secs_f64();
        (last_cpu, last_t) = (cpu, now);
        let fds = fd_count(pid);
        let lines = std::fs::read_to_string(&reports).map_or(0, |s| s.lines().count());
        let t = start.elapsed();
        println!(
            "{:>6} {:>9.1} {:>6} {:>7.1} {:>8}",
            t.as_secs(),
            rss_kb as f64 / 1024.0,
            fds,
            pct,
            lines
        );
        if rss_kb == 0 {
            bail!("crashtrace (pid {pid}) is gone");
        }
        if t > WARM_UP {
            after_warm.push((rss_kb, fds));
            cpu_after_warm.push(pct);
        }
    }
    churn_procs.0.iter_mut().for_each(stop_child);
    drop(churn_procs);
    let said = ct.stop();
    let _ = std::fs::remove_dir_all(&files);
    for l in said
        .iter()
        .filter(|l| l.contains("detached") || l.contains("kernel side"))
    {
        println!("{l}");
    }
    if let (Some(first), Some(last)) = (after_warm.first(), after_warm.last()) {
        let max_rss = after_warm.iter().map(|s| s.0).max().unwrap_or(0);
        let max_fds = after_warm.iter().map(|s| s.1).max().unwrap_or(0);
        let mean_cpu = cpu_after_warm.iter().sum::<f64>() / cpu_after_warm.len() as f64;
        println!(
            "after warm-up: RSS {:.1} -> {:.1} MiB (max {:.1}), fds {} -> {} (max {max_fds}), \
             CPU {mean_cpu:.1} % on average",
            first.0 as f64 / 1024.0,
            last.0 as f64 / 1024.0,
            max_rss as f64 / 1024.0,
            first.1,
            last.1
        );
    }
    Ok(())
}

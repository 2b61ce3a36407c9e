//! `cargo xtask bench`'s options, and which measurement they pick.

use std::path::{Path, PathBuf};

use anyhow::Result;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A shorter run (under 5 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Instead: the soak run, hostile churn while RSS, descriptors and CPU are
    /// printed over time.
    #[arg(long)]
    soak: bool,
    /// Length of the soak run.
    #[arg(long, default_value_t = 600)]
    soak_seconds: u64,
    /// Instead: a crash storm delivered to every output at once (file, journal,
    /// OTLP with a slow collector, metrics).
    #[arg(long)]
    fleet: bool,
    /// Crashes in the fleet run.
    #[arg(long, default_value_t = 1000)]
    fleet_crashes: usize,
    /// Over how many seconds.
    #[arg(long, default_value_t = 10)]
    fleet_seconds: u64,
    /// Instead: `crashtrace dump` of a 100-thread Python process beside py-spy.
    #[arg(long)]
    dump: bool,
    /// Instead: crashtrace at rest beside bpftrace (CPU, wakeups, RSS) over SECONDS.
    #[arg(long, value_name = "SECONDS")]
    rest: Option<u64>,
    /// Instead: only the per-event cost of rejected events, at `--quick`'s sizes or
    /// the full ones.
    #[arg(long)]
    events: bool,
    /// Instead: only the crowded host (start-up and memory with many processes and
    /// threads made), at `--quick`'s size or the full one.
    #[arg(long)]
    scale: bool,
    /// Instead: only fork+exec with and without crashtrace, at `--quick`'s sizes or the
    /// full ones.
    #[arg(long)]
    forkexec: bool,
    /// The crashtrace to measure (default: this checkout's release build).
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
}

pub fn run(root: &Path, otel_venv: &Path, a: BenchArgs) -> Result<()> {
    let bin = a
        .bin
        .unwrap_or_else(|| root.join("target/release/crashtrace"));
    let out = root.join("target/bench");
    if a.dump {
        super::dump::dump(root, &otel_venv.join("bin/py-spy"))
    } else if a.fleet {
        std::fs::create_dir_all(&out)?;
        super::fleet::fleet(root, &out, a.fleet_crashes, a.fleet_seconds)
    } else if a.soak {
        std::fs::create_dir_all(&out)?;
        super::soak::soak(root, &out, a.soak_seconds)
    } else if let Some(seconds) = a.rest {
        super::rest::at_rest(&bin, seconds).map(|_| ())
    } else {
        let only = if a.events {
            super::Only::Events
        } else if a.scale {
            super::Only::Scale
        } else if a.forkexec {
            super::Only::Forkexec
        } else {
            super::Only::All
        };
        super::bench(root, &bin, a.quick, only)
    }
}

//! Fuzzing with cargo-fuzz (libFuzzer) on the nightly toolchain: every target starts
//! from its committed seed corpus (`fuzz/corpus/TARGET`); what a run finds goes to a
//! scratch directory, never into the checkout.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use super::{root, status, step};

/// The decoders and parsers that read what traced processes control.
pub const TARGETS: [&str; 5] = ["records", "unwind", "elf", "python", "linetable"];

/// Installs cargo-fuzz if it is missing.
pub fn install() -> Result<()> {
    let present = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        step("cargo-fuzz", "present");
        return Ok(());
    }
    step("cargo-fuzz", "installing");
    status(Command::new("cargo").args(["+nightly", "install", "--locked", "cargo-fuzz"]))
}

/// Runs each of `targets` for `seconds`; true when every one ran clean.
pub fn run(targets: &[&str], seconds: u64) -> Result<bool> {
    let dir = root().join("fuzz");
    status(
        Command::new("cargo")
            .current_dir(&dir)
            .args(["+nightly", "fuzz", "build", "-O"]),
    )
    .context("building the fuzz targets")?;
    let scratch = std::env::temp_dir().join(format!("crashtrace-fuzz-{}", std::process::id()));
    let mut clean = true;
    for t in targets {
        let work: PathBuf = scratch.join(t);
        std::fs::create_dir_all(&work)?;
        let bin = dir.join("target/x86_64-unknown-linux-gnu/release").join(t);
        let st = Command::new(&bin)
            .arg(&work)
            .arg(dir.join("corpus").join(t))
            .arg(format!("-artifact_prefix={}/", work.display()))
            .arg(format!("-max_total_time={seconds}"))
            .args([
                "-max_len=65536",
                "-rss_limit_mb=3072",
                "-timeout=20",
                "-print_final_stats=1",
            ])
            .status()
            .with_context(|| format!("running {}", bin.display()))?;
        println!(
            "fuzz {t}: {seconds} s, {}",
            if st.success() { "clean" } else { "FAILED" }
        );
        if !st.success() {
            clean = false;
            println!("fuzz {t}: the failing input is kept in {}", work.display());
        }
    }
    if clean {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(clean)
}

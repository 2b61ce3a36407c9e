//! Project tasks: `cargo xtask setup | build | run | test | vm-test | bench | fuzz`.
//!
//! `setup` installs whatever is missing on a Debian 12 machine (idempotent, and fast
//! when everything is present); `run` and `test` call it first.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

mod bench;
mod fuzz;
mod vm;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing prerequisites: Debian packages, rust-src for nightly, bpf-linker.
    Setup,
    /// Build crashtrace (release).
    Build,
    /// Set up, build, and run crashtrace as root with the given arguments.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure overhead, per-event cost, latency, storms and footprint (root).
    Bench(bench::args::BenchArgs),
    /// Run the fuzz targets (all, or one) from their seed corpora.
    Fuzz {
        /// One of records, unwind, elf, python, linetable.
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// Set up, build, and run the smoke tests on other kernels, each booted under qemu.
    VmTest {
        /// Kernels to boot (6.1, 6.12); all of them if none is named.
        #[arg(long = "kernel")]
        kernels: Vec<String>,
    },
    /// Set up, build, and run every test: unit tests, the root integration tests, a
    /// short run of every fuzz target, and the smoke tests on one more kernel.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Debian packages: bpf-linker's build needs LLVM 22; the test victims need gcc/g++ and
/// libc's debug file (to name libc-internal frames); python3 for the Python victims.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "gcc",
    "g++",
    "libc6-dbg",
    "python3",
    // /usr/bin/time: the outcome figures are checked against it.
    "time",
    // Stripped victims with MiniDebugInfo; namespaces for the container test.
    "binutils",
    "xz-utils",
    "util-linux",
    // The kernel matrix: other kernels booted under emulation, busybox as their init.
    "qemu-system-x86",
    "busybox-static",
    // The peer the benchmark compares with.
    "bpftrace",
    // The reference for inlined frames (the test runs the victim under it, not crashtrace).
    "gdb",
    // The real server that scrapes crashtrace's metrics in the tests.
    "prometheus",
    // The deployment test reads the DaemonSet with a real YAML parser.
    "python3-yaml",
    // The flame graph test renders the SVG in a real browser, headless.
    "chromium",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 15;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.task {
        Task::Setup => setup(),
        Task::Build => setup().and_then(|_| build()),
        Task::Run { args } => setup().and_then(|_| build()).and_then(|_| run(&args)),
        Task::Test { args } => setup().and_then(|_| build()).and_then(|_| test(&args)),
        Task::VmTest { kernels } => setup().and_then(|_| build()).and_then(|_| {
            let kernels = if kernels.is_empty() {
                vm::KERNELS.iter().map(|k| k.0.to_string()).collect()
            } else {
                kernels
            };
            let outcomes = vm::run(&root(), &kernels)?;
            Ok(if outcomes.iter().all(|o| o.failed.is_empty()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }),
        Task::Fuzz { target, seconds } => setup().and_then(|_| {
            let all: Vec<&str> = match &target {
                Some(t) => vec![t.as_str()],
                None => fuzz::TARGETS.to_vec(),
            };
            Ok(if fuzz::run(&all, seconds)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }),
        Task::Bench(args) => setup()
            .and_then(|_| build())
            .and_then(|_| bench::args::run(&root(), &otel_venv(), args))
            .map(|_| ExitCode::SUCCESS),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn is_root() -> bool {
    // `id -u` avoids a libc dependency for one call.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn step(what: &str, status: &str) {
    eprintln!("setup: {what:<34} {status}");
}

fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn setup() -> Result<ExitCode> {
    let t = Instant::now();
    // 1. Debian packages.
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        step("Debian packages", "present");
    } else {
        step(
            "Debian packages",
            &format!("installing {}", missing.join(" ")),
        );
        if !is_root() {
            bail!("installing Debian packages needs root: run `sudo cargo xtask setup`");
        }
        status(Command::new("apt-get").args(["update", "-qq"]))?;
        status(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    // 2. The nightly toolchain with rust-src (the eBPF crate builds core from source).
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is required (the eBPF programs build with a nightly toolchain)")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("nightly toolchain", "installing");
        status(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    } else {
        step("nightly toolchain", "present");
    }
    let comps = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if comps.lines().any(|l| l.starts_with("rust-src")) {
        step("rust-src (nightly)", "present");
    } else {
        step("rust-src (nightly)", "installing");
        status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    // 3. bpf-linker, built against Debian's LLVM 22 (no prebuilt download is reachable).
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        step("bpf-linker", "present");
    } else {
        step("bpf-linker", "building against LLVM 22 (about a minute)");
        let path = format!(
            "{LLVM_PREFIX}/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        status(
            Command::new("cargo")
                .args([
                    "install",
                    "--locked",
                    "bpf-linker",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("PATH", path)
                .env("LLVM_PREFIX", LLVM_PREFIX)
                .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
        )?;
    }
    // cargo-fuzz, for the fuzz targets (a short run is part of the tests).
    fuzz::install()?;
    // 4. PyTorch, for the DataLoader-worker crash test: in a venv outside the checkout so
    //    that fresh clones share it (it is about 5 GB).
    let venv = torch_venv();
    let py = venv.join("bin/python");
    if Command::new(&py)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        step("PyTorch (test venv)", "present");
    } else {
        step("PyTorch (test venv)", "installing (about a minute, 5 GB)");
        status(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        status(Command::new(&py).args(["-m", "pip", "install", "--quiet", "torch"]))?;
    }
    // 5. The OTLP receiver of the tests decodes with the official schema: the
    //    opentelemetry-proto package, in a venv of its own beside PyTorch's.
    let venv = otel_venv();
    let py = venv.join("bin/python");
    if Command::new(&py)
        .args([
            "-c",
            "import opentelemetry.proto.collector.logs.v1.logs_service_pb2",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        step("opentelemetry-proto (test venv)", "present");
    } else {
        step("opentelemetry-proto (test venv)", "installing");
        status(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        status(Command::new(&py).args(["-m", "pip", "install", "--quiet", "opentelemetry-proto"]))?;
    }
    //    py-spy, which the dump tests and `bench --dump` compare `crashtrace dump` with.
    if venv.join("bin/py-spy").exists() {
        step("py-spy (test venv)", "present");
    } else {
        step("py-spy (test venv)", "installing");
        status(Command::new(&py).args(["-m", "pip", "install", "--quiet", "py-spy"]))?;
    }
    // bpftrace's tracepoints need tracefs.
    if std::path::Path::new("/sys/kernel/tracing/events").exists() {
        step("tracefs", "mounted");
    } else if is_root() {
        step("tracefs", "mounting on /sys/kernel/tracing");
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status();
    }
    step("done", &format!("in {:.1}s", t.elapsed().as_secs_f64()));
    Ok(ExitCode::SUCCESS)
}

/// Downloads kept between runs and shared by checkouts (kernels, venvs).
fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/crashtrace")
}

/// The venv with PyTorch the tests use (CRASHTRACE_TORCH_VENV overrides the place).
fn torch_venv() -> PathBuf {
    if let Some(p) = std::env::var_os("CRASHTRACE_TORCH_VENV") {
        return p.into();
    }
    cache_dir().join("torch-venv")
}

/// The venv with opentelemetry-proto (CRASHTRACE_OTEL_VENV overrides the place).
fn otel_venv() -> PathBuf {
    if let Some(p) = std::env::var_os("CRASHTRACE_OTEL_VENV") {
        return p.into();
    }
    cache_dir().join("otel-venv")
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !o.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn build() -> Result<ExitCode> {
    status(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--package",
        "crashtrace",
    ]))?;
    Ok(ExitCode::SUCCESS)
}

fn binary() -> PathBuf {
    root().join("target/release/crashtrace")
}

fn run(args: &[String]) -> Result<ExitCode> {
    let mut cmd = if is_root() {
        Command::new(binary())
    } else {
        eprintln!("xtask: crashtrace needs root; running it with sudo");
        let mut c = Command::new("sudo");
        c.arg(binary());
        c
    };
    let st = cmd.args(args).status().context("running crashtrace")?;
    Ok(ExitCode::from(st.code().unwrap_or(1) as u8))
}

fn test(args: &[String]) -> Result<ExitCode> {
    if !is_root() {
        bail!(
            "the integration tests load eBPF programs and crash real processes: run \
             `sudo cargo xtask test` (or as root)"
        );
    }
    // default-members: every crate but the eBPF one, which only builds for BPF.
    // Doc tests are left out: the crates have no examples in their docs.
    let mut child = Command::new("cargo")
        .current_dir(root())
        .args(["test", "--no-fail-fast", "--lib", "--bins", "--tests"])
        .args(args)
        .env("CRASHTRACE_BIN", binary())
        .env("CRASHTRACE_TORCH_PYTHON", torch_venv().join("bin/python"))
        .env("CRASHTRACE_OTEL_PYTHON", otel_venv().join("bin/python"))
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    // Pass the output through, adding up the per-binary results for one closing line.
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count_before(rest, " passed");
            failed += count_before(rest, " failed");
        }
    }
    let st = child.wait()?;
    // A short run of every fuzz target: the seeds and a little beyond them.
    let fuzz_clean = fuzz::run(&fuzz::TARGETS, FUZZ_SECONDS_IN_TEST)?;
    // The smoke tests on one kernel more than the machine's own.
    let vm = vm::run(&root(), &[vm::IN_TEST.to_string()])?;
    let vm_failed: usize = vm.iter().map(|o| o.failed.len()).sum();
    println!(
        "tests: {passed} passed, {failed} failed; fuzz: {} targets {} for {FUZZ_SECONDS_IN_TEST} s each; {}",
        fuzz::TARGETS.len(),
        if fuzz_clean { "clean" } else { "NOT clean" },
        vm.iter()
            .map(|o| format!(
                "kernel {}: {} passed, {} failed",
                o.release,
                o.passed,
                o.failed.len()
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(
        if st.success() && failed == 0 && fuzz_clean && vm_failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// In `ok. 14 passed; 0 failed; ...`, the number before `word`.
fn count_before(s: &str, word: &str) -> u64 {
    s.find(word)
        .and_then(|i| s[..i].rsplit([' ', '.', ';']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

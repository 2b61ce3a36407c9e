//! Command-line interface.

mod config;
mod outputs;

pub use config::args_with_config;

pub use outputs::Outputs;

use std::path::PathBuf;

use clap::Parser;
use crashtrace_common::{
    CommPattern, DEFAULT_STACK_BYTES, MAX_COMM_FILTERS, MAX_PID_FILTERS, MAX_STACK_BYTES,
    STACK_CHUNK, TASK_COMM_LEN,
};

use crate::sys::signals::{DEFAULT_SIGNALS, parse_signal, signal_name};

const EXAMPLES: &str = "\
EXAMPLES:
    crashtrace                        # report every crash on the machine
    crashtrace --comm python          # python, python3, python3.11, and renamed
                                      # processes running them (pt_data_worker, ...)
    crashtrace --comm =python3        # exactly python3, not python3.11
    crashtrace -n python -n java      # either
    crashtrace -p 4242 --json         # one process, one JSON object per line
    crashtrace --signals SEGV,ABRT    # only segmentation faults and aborts
    crashtrace -- python3 train.py    # run one command; its crashes, then its usage
    crashtrace summary a.jsonl b.jsonl --flamegraph crashes.svg
                                      # many hosts' reports, by signature (no root)

PROCESS AND THREAD NAMES:
    --comm NAME matches a process when its name or its executable's file name starts
    with NAME (`=NAME`: equals NAME). The process name is its main thread's comm, as in
    /proc/PID/comm and ps; the executable's name is the base name of /proc/PID/exe. So
    `--comm python` catches `python3.11 train.py`, and also a PyTorch DataLoader worker
    that renamed itself pt_data_worker but still runs python3.11. A crash in any thread
    counts for its process, whatever that thread is called (pthread_setname_np,
    PR_SET_NAME). Matching happens in the kernel, before anything is copied. Only the
    first 15 bytes of a name are compared, as the kernel keeps process names.

ATTRIBUTION:
    A report names the job and rank from the crashing process's environment, read in its
    own memory at the crash. Only allowlisted variables are kept: torchrun's (RANK,
    LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, ROLE_NAME, TORCHELASTIC_RUN_ID),
    Slurm's (SLURM_JOB_ID, SLURM_STEP_ID, SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS,
    SLURM_ARRAY_JOB_ID, SLURM_ARRAY_TASK_ID), the visible GPUs and CUDA's core dump
    settings, and the names given with --env. The rest, where tokens live, is dropped.

Needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN) and a kernel with BTF.";

/// Symbolized native stacks of crashing processes, caught system-wide with eBPF.
///
/// Watches every process on the machine; when one receives a crash signal it prints
/// the signal, the fault and the crashing thread's stack, unwound with DWARF CFI and
/// symbolized after the process is gone. Nothing is attached to the processes themselves.
#[derive(Parser, Debug, Clone)]
#[command(name = "crashtrace", version, after_help = EXAMPLES, args_override_self = true)]
pub struct Args {
    /// Only this process (by process id; repeatable, up to 8).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only processes whose name or executable's name starts with NAME; `=NAME` for an
    /// exact match (repeatable, up to 8; see PROCESS AND THREAD NAMES).
    #[arg(short = 'n', long = "comm", value_name = "NAME", value_parser = parse_comm)]
    pub comms: Vec<CommFilter>,

    /// Also keep this variable of a crashing process's environment (repeatable; `NAME*`
    /// for a prefix). Only allowlisted variables are ever kept: by default the job and
    /// rank variables of torchrun and Slurm and the visible GPUs (see ATTRIBUTION).
    #[arg(long = "env", value_name = "NAME", value_parser = parse_env_name)]
    pub env: Vec<String>,

    /// Signals to report, by name or number, comma-separated (not those whose default
    /// action stops or ignores: they end no process).
    #[arg(
        short = 's',
        long = "signals",
        value_name = "LIST",
        default_value = "SEGV,BUS,FPE,ILL,ABRT,TRAP,SYS",
        value_parser = parse_signal_list
    )]
    pub signals: SignalSet,

    /// Signals that end a process when another process sends them (kill, a supervisor, a
    /// terminal's Ctrl-C), reported with the sender: `all` (every signal whose default
    /// action terminates), `none`, or a comma-separated list. A signal the process
    /// handles (a graceful SIGTERM) is not reported.
    #[arg(
        short = 'k',
        long = "kills",
        value_name = "LIST",
        default_value = "all",
        value_parser = parse_kill_list
    )]
    pub kills: SignalSet,

    #[command(flatten)]
    pub outputs: Outputs,

    /// Wake on every exec on the machine to pin the new program's files at once, not at
    /// the next 5 ms drain: for a program that crashes within milliseconds of its start
    /// and whose files vanish with it. Costs crashtrace about 65 µs of CPU per exec.
    #[arg(long)]
    pub pin_on_exec: bool,

    /// Bytes of the crashing thread's stack to copy (with K/M suffix; 4K to 128K).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_STACK_BYTES, value_parser = parse_stack_size)]
    pub stack_size: u32,

    /// Size of the kernel-to-user ring buffer (power of two, with K/M suffix).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,

    /// Extra directories to search for separate debug files (besides /usr/lib/debug).
    #[arg(long = "debug-dir", value_name = "DIR")]
    pub debug_dirs: Vec<PathBuf>,

    /// Download missing debug files by build ID from the servers in DEBUGINFOD_URLS
    /// (or --debuginfod-url), spending at most --debuginfod-timeout per report.
    #[arg(long)]
    pub debuginfod: bool,

    /// debuginfod server URLs, space-separated (default: $DEBUGINFOD_URLS).
    #[arg(
        long,
        value_name = "URLS",
        env = "DEBUGINFOD_URLS",
        hide_env_values = true
    )]
    pub debuginfod_url: Option<String>,

    /// Time one report may spend on debuginfod downloads, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub debuginfod_timeout: f64,

    /// Count the eBPF programs' runs and run time (BPF_ENABLE_STATS) and print them when
    /// crashtrace stops: what each event costs in the kernel.
    #[arg(long)]
    pub bpf_stats: bool,

    /// Memory crashtrace allows itself (with K/M/G suffix): past it, its symbolization
    /// caches are dropped (and rebuilt as needed), and that is said.
    #[arg(long, value_name = "BYTES", value_parser = parse_budget)]
    pub memory_budget: Option<u64>,

    /// Share of one CPU, in percent (1-100), that the analysis of crashes may use:
    /// reports wait, none is dropped, and the capture is never slowed.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub cpu_budget: Option<u8>,

    /// Set crashtrace's own OOM score adjustment (-1000 to 1000) at start: a service
    /// must outlive the out-of-memory kills it reports (-900 in the deployment files).
    #[arg(long, value_name = "N", allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    pub oom_score_adj: Option<i32>,

    /// Read options from this TOML file first (also $CRASHTRACE_CONFIG): keys are the
    /// long option names (`output = "/var/log/crashtrace/crashes.jsonl"`, `journal =
    /// true`, `comm = ["python", "java"]`). The command line overrides it, as does the
    /// environment for options read from one; lists from both add up.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration (file, environment, options), print it and exit: 0 if
    /// valid, 2 if not.
    #[arg(long)]
    pub check_config: bool,

    /// crashtrace's own status lines on stderr: `text`, or `json` (one object per
    /// line: time, msg) for a log collector.
    #[arg(long, value_name = "FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    pub log_format: String,

    /// More diagnostics on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Run mode: run COMMAND, report its crashes (and its children's), print its
    /// resource use when it ends (like /usr/bin/time -v) and exit with its status.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl Args {
    /// Checks limits that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.pids.len() > MAX_PID_FILTERS {
            return Err(format!("at most {MAX_PID_FILTERS} --pid filters"));
        }
        if self.comms.len() > MAX_COMM_FILTERS {
            return Err(format!("at most {MAX_COMM_FILTERS} --comm filters"));
        }
        if self.pids.contains(&0) {
            return Err("--pid 0 is not a process".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommFilter {
    pub name: String,
    pub exact: bool,
}

impl CommFilter {
    /// What the eBPF filter decides, for a name read from /proc: a prefix, or the whole.
    pub fn matches(&self, name: &str) -> bool {
        if self.exact {
            name == self.name
        } else {
            name.starts_with(&self.name)
        }
    }

    pub fn to_pattern(&self) -> CommPattern {
        CommPattern::new(self.name.as_bytes(), self.exact)
    }
}

/// An environment variable's name, or a prefix of at least two characters: never a
/// pattern that keeps the whole environment.
fn parse_env_name(s: &str) -> Result<String, String> {
    let name = s.strip_suffix('*').unwrap_or(s);
    if name.len() < 2 && s.ends_with('*') || name.is_empty() {
        return Err(format!(
            "`{s}`: a variable name, or a prefix of two characters or more followed by `*`"
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("`{s}`: a variable name is letters, digits and `_`"));
    }
    Ok(s.to_string())
}

pub fn parse_comm(s: &str) -> Result<CommFilter, String> {
    let (name, exact) = match s.strip_prefix('=') {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() >= TASK_COMM_LEN {
        return Err(format!(
            "process names are at most {} bytes in the kernel; `{name}` is {}",
            TASK_COMM_LEN - 1,
            name.len()
        ));
    }
    if name.bytes().any(|b| b == 0) {
        return Err("name contains a NUL byte".into());
    }
    Ok(CommFilter {
        name: name.to_string(),
        exact,
    })
}

/// A set of signal numbers (bit n = signal n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalSet(pub u64);

impl SignalSet {
    pub fn default_set() -> Self {
        Self(DEFAULT_SIGNALS.iter().fold(0, |m, s| m | 1 << s))
    }
    pub fn contains(&self, sig: i32) -> bool {
        (1..64).contains(&sig) && self.0 & (1 << sig) != 0
    }
    pub fn names(&self) -> Vec<String> {
        (1..64)
            .filter(|s| self.contains(*s))
            .map(signal_name)
            .collect()
    }
}

fn parse_signal_list(s: &str) -> Result<SignalSet, String> {
    let mut mask = 0u64;
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let sig = parse_signal(part).ok_or_else(|| format!("unknown signal `{part}`"))?;
        if crashtrace_common::NEVER_WANTED_SIGNALS & (1 << sig) != 0 {
            return Err(format!(
                "{} ends no process (its default action stops or ignores)",
                signal_name(sig)
            ));
        }
        mask |= 1 << sig;
    }
    if mask == 0 {
        return Err("no signals given".into());
    }
    Ok(SignalSet(mask))
}

/// Signals whose default action ends the process (signal(7): Term or Core).
pub fn fatal_by_default() -> SignalSet {
    let mut m = 0u64;
    for sig in 1..64 {
        let stops_or_ignored = crashtrace_common::NEVER_WANTED_SIGNALS & (1 << sig) != 0;
        // 32 and 33 are reserved by the C library for its own threads.
        if !stops_or_ignored && sig != 32 && sig != 33 {
            m |= 1 << sig;
        }
    }
    SignalSet(m)
}

fn parse_kill_list(s: &str) -> Result<SignalSet, String> {
    match s.trim() {
        "all" => Ok(fatal_by_default()),
        "none" => Ok(SignalSet(0)),
        list => parse_signal_list(list),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1),
        Some((i, _)) => {
            let mult = match t[i..].to_ascii_uppercase().as_str() {
                "K" | "KB" | "KIB" => 1024,
                "M" | "MB" | "MIB" => 1024 * 1024,
                "G" | "GB" | "GIB" => 1024 * 1024 * 1024,
                other => return Err(format!("unknown size suffix `{other}`")),
            };
            (&t[..i], mult)
        }
    };
    let n: u64 = num.parse().map_err(|_| format!("not a size: `{s}`"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size too large: `{s}`"))
}

fn parse_budget(s: &str) -> Result<u64, String> {
    parse_size(s).and_then(|n| {
        (n >= 1 << 20)
            .then_some(n)
            .ok_or_else(|| "a memory budget is at least 1M".to_string())
    })
}

fn parse_stack_size(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    if n < STACK_CHUNK as u64 || n > MAX_STACK_BYTES as u64 {
        return Err(format!(
            "stack size must be between {}K and {}K",
            STACK_CHUNK / 1024,
            MAX_STACK_BYTES / 1024
        ));
    }
    // Copies happen in whole pages.
    Ok((n as u32).div_ceil(STACK_CHUNK as u32) * STACK_CHUNK as u32)
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    let min = 2 * std::mem::size_of::<crashtrace_common::SignalCapture>() as u64;
    if !n.is_power_of_two() || n < min || n > 1 << 30 {
        return Err(format!(
            "ring buffer size must be a power of two between {}K and 1024M",
            min.next_power_of_two() / 1024
        ));
    }
    Ok(n as u32)
}

#[cfg(test)]
mod tests;

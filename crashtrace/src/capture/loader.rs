//! Loading and attaching the eBPF programs, with errors a user can act on.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::BtfTracePoint,
};
use crashtrace_common::{Config, STAT_COUNT, Stat, stack_class};

/// The eBPF object, built by build.rs from crashtrace-ebpf.
pub(super) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/crashtrace"));

pub struct Probes {
    /// Owns the programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
    stats: PerCpuArray<MapData, u64>,
}

/// Python processes and their layouts, for the eBPF program to read frames at a crash.
pub type PyProcs = aya::maps::HashMap<MapData, u32, crashtrace_common::PyProc>;
/// Non-PIE interpreters by executable inode (the same layout in every process).
pub type PyFiles = aya::maps::HashMap<MapData, u64, crashtrace_common::PyProc>;
/// glibc files by inode: where their `__abort_msg` is.
pub type LibcFiles = aya::maps::HashMap<MapData, u64, crashtrace_common::LibcFile>;

/// The maps crashtrace writes or reads while the probes run.
pub struct ProbeMaps {
    pub events: RingBuf<MapData>,
    pub pyprocs: PyProcs,
    pub pyfiles: PyFiles,
    pub libc_files: LibcFiles,
}

impl Probes {
    /// Loads and attaches; returns the probes and the maps (the ring buffer their records
    /// arrive in among them).
    pub fn load(config: &Config, ring_bytes: u32) -> Result<(Self, ProbeMaps)> {
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", config, true)
            .map_max_entries("EVENTS", ring_bytes)
            .load(EBPF_OBJECT)
            .map_err(|e| explain(anyhow!(e), "loading the eBPF programs"))?;
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
        // The signal_deliver program whose records hold `--stack-size` (see STACK_CLASSES).
        let deliver = format!(
            "signal_deliver_{}k",
            stack_class(config.stack_bytes as usize) / 1024
        );
        // The exit program first: a crash seen by signal_deliver is then always followed.
        for (name, tracepoint) in [
            ("sched_process_exit", "sched_process_exit"),
            ("mark_victim", "mark_victim"),
            ("signal_generate", "signal_generate"),
            (deliver.as_str(), "signal_deliver"),
        ] {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the eBPF object"))?
                .try_into()?;
            prog.load(tracepoint, &btf)
                .map_err(|e| explain(anyhow!(e), &format!("verifying the {name} program")))?;
            prog.attach()
                .map_err(|e| explain(anyhow!(e), &format!("attaching to the {name} tracepoint")))?;
        }
        let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map missing")?)?;
        let stats = PerCpuArray::try_from(ebpf.take_map("STATS").context("STATS map missing")?)?;
        let pyprocs = PyProcs::try_from(ebpf.take_map("PYPROCS").context("PYPROCS map missing")?)?;
        let pyfiles = PyFiles::try_from(ebpf.take_map("PYFILES").context("PYFILES map missing")?)?;
        let libc_files = LibcFiles::try_from(
            ebpf.take_map("LIBC_FILES")
                .context("LIBC_FILES map missing")?,
        )?;
        let maps = ProbeMaps {
            events,
            pyprocs,
            pyfiles,
            libc_files,
        };
        Ok((Self { _ebpf: ebpf, stats }, maps))
    }

    /// Runs and run time of each program, counted while `--bpf-stats` holds stats on.
    pub fn program_stats(&self) -> Vec<(String, u64, std::time::Duration)> {
        self._ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some((name.to_string(), info.run_count(), info.run_time()))
            })
            .collect()
    }

    /// A counter summed over CPUs.
    pub fn stat(&self, s: Stat) -> u64 {
        debug_assert!((s as u32) < STAT_COUNT);
        self.stats
            .get(&(s as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

/// Turns permission errors into one sentence saying what to do.
pub fn explain(err: anyhow::Error, what: &str) -> anyhow::Error {
    let text = format!("{err:#}");
    let denied = text.contains("Operation not permitted")
        || text.contains("Permission denied")
        || text.contains("EPERM")
        || text.contains("EACCES");
    if denied {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let hint = if euid != 0 {
            "crashtrace needs root: run it with sudo (or grant CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)"
        } else {
            "the kernel refused even root: check kernel.unprivileged_bpf_disabled, lockdown mode, or \
             a container without CAP_BPF/CAP_PERFMON/CAP_SYS_ADMIN (docker run --privileged)"
        };
        return anyhow!("{what} failed: {hint} ({text})");
    }
    err.context(format!("{what} failed"))
}

//! Loading and attaching the eBPF programs, with errors a user can act on.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
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
    pub events: super::ring::Ring,
    pub pyprocs: PyProcs,
    pub pyfiles: PyFiles,
    pub libc_files: LibcFiles,
}

impl Probes {
    /// Loads and attaches; returns the probes and the maps (the ring buffer their records
    /// arrive in among them).
    pub fn load(config: &Config, ring_bytes: u32) -> Result<(Self, ProbeMaps)> {
        let object = super::patch::field_offset(
            EBPF_OBJECT,
            "sched_process_exit",
            crashtrace_common::EXIT_CODE_PLACEHOLDER,
            config.offsets.task_exit_code,
        )
        .context("writing task_struct.exit_code's offset into the eBPF object")?;
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", config, true)
            .map_max_entries("EVENTS", ring_bytes)
            .load(object.bytes())
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
            if let Some(n) = prog
                .info()
                .ok()
                .and_then(|i| i.verified_instruction_count())
            {
                // How close each program is to the verifier's budget (1 000 000).
                log::info!("{name}: the verifier walked {n} instructions");
            }
        }
        let events =
            super::ring::Ring::new(ebpf.take_map("EVENTS").context("EVENTS map missing")?)?;
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

/// Turns permission errors and verifier rejections into one sentence saying what to do.
pub fn explain(err: anyhow::Error, what: &str) -> anyhow::Error {
    let text = format!("{err:#}");
    if let Some(log) = text.split_once("Verifier output:").map(|(_, l)| l) {
        // Not a permission matter: the kernel's verifier refused the program. The log is
        // long; its reason is the last line before the statistics.
        log::debug!("{what}: the verifier's log:{log}");
        let reason = verifier_reason(log);
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        return anyhow!(
            "{what} failed: the verifier of this kernel ({release}) refused it: {reason}. This is \
             a crashtrace bug; please report it with the log `crashtrace -v` prints"
        );
    }
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

/// The verifier's reason: the last line of its log before the statistics (`verification
/// time`, `processed N insns`, `stack depth`).
fn verifier_reason(log: &str) -> &str {
    log.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with("verification time"))
        .last()
        .unwrap_or("no reason given")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_verifier_reason_is_the_line_before_the_statistics() {
        let log = " reg type unsupported for arg#0\n0: R1=ctx() R10=fp0\n; x\n514: (b7) r3 = 16\n\
                   BPF program is too large. Processed 1000001 insn\nverification time 38320985 usec\n\
                   stack depth 48+320\nprocessed 1000001 insns (limit 1000000)\n: Argument list too long";
        assert_eq!(
            super::verifier_reason(log),
            "BPF program is too large. Processed 1000001 insn"
        );
        assert_eq!(super::verifier_reason(""), "no reason given");
    }
}

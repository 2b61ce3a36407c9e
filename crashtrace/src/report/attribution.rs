//! Who crashed: the job and rank from the allowlisted environment, the Slurm job from
//! the cgroup where the environment says nothing, what a thread is to PyTorch from its
//! name, and, for a rank killed by its launcher, the job's failure that came first.
//! No I/O: the crash's records, the cgroup path and the times come in.

use std::collections::{HashMap, VecDeque};

use crate::{
    assemble::{Crash, ProcessMemory},
    model::{EarlierFailure, JobReport},
    sys::cgroups::CgroupInfo,
    sys::signals::signal_name,
};

/// The job and rank of a process, if its environment or cgroup names any.
pub fn job(memory: Option<&ProcessMemory>, cgroup: &CgroupInfo) -> Option<JobReport> {
    let env = memory.map_or(&[][..], |m| &m.env[..]);
    let var = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let number = |name: &str| var(name).and_then(|v| v.trim().parse::<u32>().ok());
    let slurm_job_id = var("SLURM_JOB_ID").or_else(|| cgroup.slurm_job.clone());
    let slurm_step_id = var("SLURM_STEP_ID").or_else(|| cgroup.slurm_step.clone());
    let report = JobReport {
        rank: number("RANK").or_else(|| number("SLURM_PROCID")),
        local_rank: number("LOCAL_RANK").or_else(|| number("SLURM_LOCALID")),
        world_size: number("WORLD_SIZE").or_else(|| number("SLURM_NTASKS")),
        group_rank: number("GROUP_RANK"),
        run_id: var("TORCHELASTIC_RUN_ID").or_else(|| slurm_job_id.clone()),
        role_name: var("ROLE_NAME"),
        slurm_job_id,
        slurm_step_id,
        visible_devices: var("CUDA_VISIBLE_DEVICES").or_else(|| var("NVIDIA_VISIBLE_DEVICES")),
        environment: env.iter().cloned().collect(),
        environment_unread_bytes: memory.map_or(0, |m| m.env_unread),
        after_failure_of: None,
    };
    let empty = report.environment.is_empty()
        && report.slurm_job_id.is_none()
        && report.environment_unread_bytes == 0;
    (!empty).then_some(report)
}

/// What a thread is to the runtime, from the name it gave itself (PyTorch names its
/// threads `pt_*`; the names are 15 bytes at most, as the kernel keeps them).
pub fn thread_role(name: &str, is_main: bool) -> Option<&'static str> {
    let role = match name {
        "pt_nccl_watchdg" => "nccl-watchdog",
        "pt_nccl_heartbt" => "nccl-heartbeat",
        "pt_elastic" => "elastic-agent",
        "pt_data_worker" => "data-loader-worker",
        "pt_data_pin" => "data-loader-pin-memory",
        n if n.starts_with("pt_autograd_") => "autograd",
        _ if is_main => "main",
        _ => return None,
    };
    Some(role)
}

/// The order threads are shown in: the main thread, then autograd workers, then the
/// rest by thread id.
pub fn thread_rank(role: Option<&str>) -> u8 {
    match role {
        Some("main") => 0,
        Some("autograd") => 1,
        _ => 2,
    }
}

/// How long a job's failure stays the explanation of a later kill of its ranks.
const FAILURE_WINDOW_NS: u64 = 120_000_000_000;
/// Failures remembered at most, across jobs.
const MAX_FAILURES: usize = 1024;

/// Recent failures (a fault, an abort: not a kill) by job, so that the kill of another
/// rank that follows can name the rank that failed first.
#[derive(Default)]
pub struct FailureLedger {
    failures: HashMap<String, Failure>,
    order: VecDeque<(String, u64)>,
}

#[derive(Clone)]
struct Failure {
    pid: u32,
    rank: Option<u32>,
    signal: String,
    ktime_ns: u64,
}

impl FailureLedger {
    /// `record` for a complete crash: its run from the environment (torchrun's run id,
    /// else Slurm's job id), its rank, and whether another process killed it.
    pub fn take(&mut self, crash: &Crash) -> Option<EarlierFailure> {
        let env = &crash.memory.as_ref()?.env;
        let var = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let run = var("TORCHELASTIC_RUN_ID").or_else(|| var("SLURM_JOB_ID"))?;
        let rank = var("RANK")
            .or_else(|| var("SLURM_PROCID"))
            .and_then(|r| r.trim().parse().ok());
        let fatal = crash.fatal();
        let killed =
            (fatal.sender_pid != 0 && fatal.sender_pid != fatal.pid) || crash.oom.is_some();
        self.record(
            run,
            fatal.pid,
            rank,
            &signal_name(fatal.signo),
            fatal.ktime_ns,
            killed,
        )
    }

    /// Takes a crash of job `run_id` in crash order; returns, for a process killed by
    /// another one, the job's first failure before it. `ktime_ns` is the fatal signal's
    /// time, `killed` whether another process sent it.
    pub fn record(
        &mut self,
        run_id: &str,
        pid: u32,
        rank: Option<u32>,
        signal: &str,
        ktime_ns: u64,
        killed: bool,
    ) -> Option<EarlierFailure> {
        let earlier = self
            .failures
            .get(run_id)
            .filter(|f| {
                f.pid != pid && f.ktime_ns <= ktime_ns && ktime_ns - f.ktime_ns < FAILURE_WINDOW_NS
            })
            .cloned();
        if killed {
            return earlier.map(|f| EarlierFailure {
                pid: f.pid,
                rank: f.rank,
                signal: f.signal,
                before_ms: (ktime_ns - f.ktime_ns) as f64 / 1e6,
            });
        }
        // The first failure of a run stays its explanation within the window.
        if earlier.is_none() {
            if self.failures.len() >= MAX_FAILURES
                && let Some((old, _)) = self.order.pop_front()
            {
                self.failures.remove(&old);
            }
            self.order.push_back((run_id.to_string(), ktime_ns));
            self.failures.insert(
                run_id.to_string(),
                Failure {
                    pid,
                    rank,
                    signal: signal.to_string(),
                    ktime_ns,
                },
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(vars: &[(&str, &str)]) -> ProcessMemory {
        ProcessMemory {
            env: vars
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..ProcessMemory::default()
        }
    }

    #[test]
    fn jobs_from_torchrun_and_slurm_variables() {
        let torchrun = memory(&[
            ("RANK", "1"),
            ("LOCAL_RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("GROUP_RANK", "0"),
            ("ROLE_NAME", "default"),
            ("TORCHELASTIC_RUN_ID", "run-42"),
            ("CUDA_VISIBLE_DEVICES", "0,1"),
        ]);
        let j = job(Some(&torchrun), &CgroupInfo::default()).unwrap();
        assert_eq!(
            (j.rank, j.local_rank, j.world_size, j.group_rank),
            (Some(1), Some(1), Some(2), Some(0))
        );
        assert_eq!(j.run_id.as_deref(), Some("run-42"));
        assert_eq!(j.visible_devices.as_deref(), Some("0,1"));
        assert_eq!(j.environment.len(), 7);

        let slurm = memory(&[("SLURM_JOB_ID", "981"), ("SLURM_PROCID", "3")]);
        let j = job(Some(&slurm), &CgroupInfo::default()).unwrap();
        assert_eq!((j.rank, j.run_id.as_deref()), (Some(3), Some("981")));

        // Only the cgroup says Slurm: the job and step still come out.
        let cg = CgroupInfo {
            slurm_job: Some("77".into()),
            slurm_step: Some("0".into()),
            ..CgroupInfo::default()
        };
        let j = job(None, &cg).unwrap();
        assert_eq!(j.slurm_job_id.as_deref(), Some("77"));
        assert_eq!(j.slurm_step_id.as_deref(), Some("0"));
        assert_eq!(j.rank, None);

        // A rank that is not a number is kept as text only.
        let odd = memory(&[("RANK", "one")]);
        let j = job(Some(&odd), &CgroupInfo::default()).unwrap();
        assert_eq!(j.rank, None);
        assert_eq!(j.environment["RANK"], "one");

        assert!(job(Some(&memory(&[])), &CgroupInfo::default()).is_none());
        assert!(job(None, &CgroupInfo::default()).is_none());
    }

    #[test]
    fn thread_roles_and_order() {
        let cases = [
            ("pt_nccl_watchdg", false, Some("nccl-watchdog")),
            ("pt_nccl_heartbt", false, Some("nccl-heartbeat")),
            ("pt_autograd_0", false, Some("autograd")),
            ("pt_autograd_12", false, Some("autograd")),
            ("pt_elastic", false, Some("elastic-agent")),
            ("python3", true, Some("main")),
            ("pt_autograd_0", true, Some("autograd")),
            ("worker", false, None),
        ];
        for (name, main, want) in cases {
            assert_eq!(thread_role(name, main), want, "{name}");
        }
        let mut roles = [None, Some("autograd"), Some("nccl-watchdog"), Some("main")];
        roles.sort_by_key(|r| thread_rank(*r));
        assert_eq!(roles[..2], [Some("main"), Some("autograd")]);
    }

    #[test]
    fn a_kill_after_another_ranks_fault_names_it() {
        let s = 1_000_000_000u64;
        let mut l = FailureLedger::default();
        // Rank 1 faults; the agent kills rank 0 0.4 s later.
        assert_eq!(
            l.record("run", 101, Some(1), "SIGSEGV", 10 * s, false),
            None
        );
        let e = l
            .record("run", 100, Some(0), "SIGTERM", 10 * s + 400_000_000, true)
            .unwrap();
        assert_eq!(
            (e.pid, e.rank, e.signal.as_str()),
            (101, Some(1), "SIGSEGV")
        );
        assert!((e.before_ms - 400.0).abs() < 1e-6);
        // A second failure does not replace the first.
        l.record("run", 102, Some(2), "SIGABRT", 11 * s, false);
        let e = l
            .record("run", 103, Some(3), "SIGKILL", 12 * s, true)
            .unwrap();
        assert_eq!(e.pid, 101);
        // Other runs, kills before the failure, and kills long after are not linked.
        assert_eq!(l.record("other", 5, None, "SIGTERM", 12 * s, true), None);
        l.record("late", 7, None, "SIGSEGV", 20 * s, false);
        assert_eq!(l.record("late", 8, None, "SIGTERM", 19 * s, true), None);
        assert_eq!(l.record("late", 8, None, "SIGTERM", 200 * s, true), None);
    }
}

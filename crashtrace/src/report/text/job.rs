//! Who the process was (job, rank, pod) and why it died when its memory says (glibc's
//! abort message, PyTorch's watchdog).

use std::fmt::Write as _;

use crate::model::CrashReport;

pub fn who_and_why(s: &mut String, r: &CrashReport) {
    if let Some(sg) = &r.signature {
        let _ = writeln!(
            s,
            "signature: {} ({}{}{})",
            sg.id,
            sg.cause,
            if sg.frames.is_empty() { "" } else { " in " },
            sg.frames.join(" < ")
        );
    }
    if let Some(j) = &r.job {
        let mut parts = Vec::new();
        match (j.rank, j.world_size) {
            (Some(rank), Some(n)) => parts.push(format!("rank {rank} of {n}")),
            (Some(rank), None) => parts.push(format!("rank {rank}")),
            _ => {}
        }
        if let Some(l) = j.local_rank {
            parts.push(format!("local rank {l}"));
        }
        if let Some(id) = &j.run_id {
            parts.push(format!("job {id}"));
        }
        if let Some(id) = j
            .slurm_job_id
            .as_ref()
            .filter(|id| j.run_id.as_ref() != Some(*id))
        {
            parts.push(format!("Slurm job {id}"));
        }
        if let Some(step) = &j.slurm_step_id {
            parts.push(format!("step {step}"));
        }
        if let Some(role) = &j.role_name {
            parts.push(format!("role {role}"));
        }
        if let Some(d) = &j.visible_devices {
            parts.push(format!("GPUs {d}"));
        }
        if parts.is_empty() {
            parts.push("no job variables".into());
        }
        let _ = writeln!(s, "job:      {}", parts.join(", "));
        if let Some(e) = &j.after_failure_of {
            let rank = e.rank.map(|r| format!("rank {r} ")).unwrap_or_default();
            let _ = writeln!(
                s,
                "first:    {rank}(pid {}) died of {} {:.0} ms before this kill: it failed first",
                e.pid, e.signal, e.before_ms
            );
        }
        let env: Vec<String> = j
            .environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !env.is_empty() {
            let _ = writeln!(s, "env:      {}", env.join(" "));
        }
    }
    if r.pod_uid.is_some() || r.container_runtime.is_some() {
        let _ = writeln!(
            s,
            "pod:      {}{}",
            r.pod_uid
                .as_deref()
                .map(|p| format!("Kubernetes pod {p}"))
                .unwrap_or_else(|| "no pod".into()),
            r.container_runtime
                .as_deref()
                .map(|rt| format!(", container run by {rt}"))
                .unwrap_or_default()
        );
    }
    if let Some(g) = &r.gpu {
        let mut parts = Vec::new();
        if !g.devices.is_empty() {
            parts.push(format!(
                "{} open{}",
                g.devices.join(", "),
                if g.devices_incomplete {
                    " (and maybe more)"
                } else {
                    ""
                }
            ));
        }
        if let Some(d) = &g.driver_version {
            parts.push(format!("driver {d}"));
        }
        match g.cuda_coredump {
            Some(true) => parts.push("CUDA core dumps on".into()),
            Some(false) => parts.push("CUDA core dumps off".into()),
            None => {}
        }
        if !parts.is_empty() {
            let _ = writeln!(s, "gpu:      {}", parts.join("; "));
        }
        let libs: Vec<String> = g
            .libraries
            .iter()
            .filter(|l| l.name != "CUDA driver")
            .map(|l| match &l.version {
                Some(v) => format!("{} {v}", l.name),
                None => format!("{} ({})", l.name, l.path.rsplit('/').next().unwrap_or("")),
            })
            .collect();
        if !libs.is_empty() {
            let _ = writeln!(s, "cuda:     {}", libs.join(", "));
        }
        for x in &g.xid {
            let when = if x.seconds_after_signal < 0.0 {
                format!("{:.1} s before the signal", -x.seconds_after_signal)
            } else {
                format!("{:.1} s after the signal", x.seconds_after_signal)
            };
            let _ = writeln!(
                s,
                "xid:      {} on {}, {when}: {}",
                x.code, x.pci, x.message
            );
        }
    }
    if let Some(m) = &r.abort_message {
        let _ = writeln!(s, "abort:    {m}");
    }
    if r.thread_role.as_deref() == Some("nccl-watchdog") && r.signal.number == libc::SIGABRT {
        let _ = writeln!(
            s,
            "abort:    raised by PyTorch's NCCL watchdog thread: a collective timed out or \
             NCCL reported an error on this rank"
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{CrashReport, EarlierFailure, JobReport};

    #[test]
    fn job_lines_name_the_rank_and_the_rank_that_failed_first() {
        let mut r: CrashReport = serde_json::from_str(super::super::tests::MINIMAL).unwrap();
        r.signal.name = "SIGTERM".into();
        r.signal.number = 15;
        r.job = Some(JobReport {
            rank: Some(0),
            world_size: Some(2),
            local_rank: Some(0),
            run_id: Some("run-1".into()),
            environment: [("RANK".to_string(), "0\x1b[2J".to_string())].into(),
            after_failure_of: Some(EarlierFailure {
                pid: 77,
                rank: Some(1),
                signal: "SIGSEGV".into(),
                before_ms: 412.4,
            }),
            ..JobReport::default()
        });
        r.pod_uid = Some("8a1c".into());
        r.container_runtime = Some("containerd".into());
        r.abort_message = Some("free(): invalid pointer".into());
        let text = super::super::render(&r);
        for line in [
            "job:      rank 0 of 2, local rank 0, job run-1\n",
            "first:    rank 1 (pid 77) died of SIGSEGV 412 ms before this kill: it failed first\n",
            "env:      RANK=0\\x1b[2J\n",
            "pod:      Kubernetes pod 8a1c, container run by containerd\n",
            "abort:    free(): invalid pointer\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }
}

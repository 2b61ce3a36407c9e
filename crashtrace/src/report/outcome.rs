//! How the process ended, as `/usr/bin/time -v` would say it, and what the OOM killer saw.

use crashtrace_common::{OomVictim, ProcessExit};

use crate::{
    capture::records::name_to_string,
    model::{OomReport, Outcome},
    sys::wait,
};

pub fn oom_report(o: &OomVictim) -> OomReport {
    // PAGE_COUNTER_MAX (no limit) is LONG_MAX pages: anything near it means none.
    let limited = o.memcg_limit_kb != 0 && o.memcg_limit_kb < 1 << 50;
    let name = name_to_string(&o.memcg_name);
    OomReport {
        trigger_pid: o.killer_pid,
        trigger_name: name_to_string(&o.killer_comm),
        total_vm_kb: o.total_vm_kb,
        anon_rss_kb: o.anon_rss_kb,
        file_rss_kb: o.file_rss_kb,
        shmem_rss_kb: o.shmem_rss_kb,
        swap_kb: o.swap_kb,
        memory_cgroup: (!name.is_empty()).then_some(name),
        memory_cgroup_limit_kb: limited.then_some(o.memcg_limit_kb),
        memory_cgroup_usage_kb: (o.memcg_usage_kb != 0).then_some(o.memcg_usage_kb),
    }
}

/// The process's end as wait4() and `/usr/bin/time -v` describe it.
pub fn outcome(e: &ProcessExit) -> Outcome {
    let ended = wait::decode(e.exit_code as i32);
    let u = &e.usage;
    // As the kernel does for getrusage(): tick-sampled utime/stime, scaled so that they
    // add up to the precise runtime.
    let (user, system) = {
        let ticks = u.utime_ns + u.stime_ns;
        if ticks == 0 {
            (u.runtime_ns, 0)
        } else {
            let stime = (u.runtime_ns as u128 * u.stime_ns as u128 / ticks as u128) as u64;
            (u.runtime_ns - stime, stime)
        }
    };
    Outcome {
        status: ended.words,
        exit_code: ended.exit_code,
        signal: ended.signal,
        core_dumped: ended.core_dumped,
        wall_seconds: e.header.ktime_ns.saturating_sub(e.start_ns) as f64 / 1e9,
        user_seconds: user as f64 / 1e9,
        system_seconds: system as f64 / 1e9,
        max_rss_kb: e.maxrss_kb,
        minor_faults: u.min_flt,
        major_faults: u.maj_flt,
        voluntary_context_switches: u.nvcsw,
        involuntary_context_switches: u.nivcsw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crashtrace_common::{RecordHeader, Usage};

    #[test]
    fn outcome_of_a_signal_death() {
        let e = ProcessExit {
            header: RecordHeader {
                ktime_ns: 3_500_000_000,
                ..Default::default()
            },
            exit_code: 0x8b,
            start_ns: 1_000_000_000,
            maxrss_kb: 2048,
            usage: Usage {
                utime_ns: 3,
                stime_ns: 1,
                runtime_ns: 2_000_000_000,
                min_flt: 10,
                ..Default::default()
            },
            ..Default::default()
        };
        let o = outcome(&e);
        assert_eq!(o.status, "killed by SIGSEGV (core dumped)");
        assert_eq!(
            (o.signal, o.exit_code, o.core_dumped),
            (Some(11), None, true)
        );
        assert!((o.wall_seconds - 2.5).abs() < 1e-9);
        assert!((o.user_seconds - 1.5).abs() < 1e-9 && (o.system_seconds - 0.5).abs() < 1e-9);
        let o = outcome(&ProcessExit {
            exit_code: 3 << 8,
            ..Default::default()
        });
        assert_eq!(
            (o.status.as_str(), o.exit_code),
            ("exited with status 3", Some(3))
        );
    }
}

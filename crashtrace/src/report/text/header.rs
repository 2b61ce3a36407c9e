//! The fault on top: what happened, to whom, where, and the registers.

use std::fmt::Write as _;

use crate::model::{CrashReport, HandlerEnd};

/// The title line, the process, the signal and fault, the sender, OOM, handler, time,
/// registers and instruction.
pub fn fault(s: &mut String, r: &CrashReport) {
    let sig = &r.signal;
    let what = if r.oom.is_some() {
        "OOM kill:"
    } else if sig.external {
        "killed by"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "=== crashtrace: {}{} in process {} ({}), thread {} ({}) ===",
        what,
        if what.is_empty() {
            sig.name.clone()
        } else {
            format!(" {}", sig.name)
        },
        r.pid,
        r.process_name,
        r.tid,
        r.thread_name
    );
    let _ = writeln!(
        s,
        "process:  {} ({}), executable {}, parent {} ({})",
        r.pid,
        r.process_name,
        r.executable.as_deref().unwrap_or("unknown"),
        r.parent_pid,
        r.parent_name
    );
    if r.namespace_pid.is_some() || r.cgroup.is_some() {
        let _ = writeln!(
            s,
            "container: {}{}{}",
            r.namespace_pid
                .map(|p| format!("pid {p} in its namespace"))
                .unwrap_or_else(|| "host pid namespace".into()),
            r.namespace_tid
                .map(|t| format!(", thread {t}"))
                .unwrap_or_default(),
            match (&r.cgroup, &r.container_id) {
                (Some(c), Some(id)) => format!(", cgroup {c} (container {})", &id[..12]),
                (Some(c), None) => format!(", cgroup {c}"),
                _ => String::new(),
            }
        );
    }
    let _ = write!(s, "signal:   {} ({})", sig.name, sig.number);
    match (&sig.code_name, &sig.code_description) {
        (Some(n), Some(d)) => {
            let _ = write!(s, ", {n}: {d}");
        }
        _ if sig.code != 0 => {
            let _ = write!(s, ", si_code {}", sig.code);
        }
        _ => {}
    }
    s.push('\n');
    if let Some(a) = sig.fault_address {
        match &sig.fault_mapping {
            Some(m) => {
                let _ = writeln!(s, "fault:    address 0x{a:x}, {m}");
            }
            None => {
                let _ = writeln!(s, "fault:    address 0x{a:x}");
            }
        }
    }
    if let Some(c) = &sig.cause {
        let _ = writeln!(s, "cause:    {c}");
    }
    if let Some(p) = sig.sender_pid {
        let name = sig
            .sender_name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let who = if sig.external {
            "sent by another process"
        } else {
            "sent by the process itself"
        };
        let _ = writeln!(
            s,
            "sender:   pid {p}{name}, uid {}: {who}",
            sig.sender_uid.unwrap_or(0)
        );
    }
    if let Some(o) = &r.oom {
        let _ = writeln!(
            s,
            "oom:      chosen by the OOM killer (allocation by pid {} ({})); total-vm {} kB, anon-rss {} kB, file-rss {} kB, shmem-rss {} kB, swap {} kB",
            o.trigger_pid,
            o.trigger_name,
            o.total_vm_kb,
            o.anon_rss_kb,
            o.file_rss_kb,
            o.shmem_rss_kb,
            o.swap_kb
        );
        match o.memory_cgroup_limit_kb {
            Some(limit) => {
                let _ = writeln!(
                    s,
                    "          memory cgroup {} limit {} kB, usage {} kB",
                    o.memory_cgroup.as_deref().unwrap_or("?"),
                    limit,
                    o.memory_cgroup_usage_kb.unwrap_or(0)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "          no memory cgroup limit: the machine ran out of memory"
                );
            }
        }
    }
    if let Some(h) = &r.handler {
        let then = match h.ended_by {
            HandlerEnd::Reraise => "re-raised it".to_string(),
            HandlerEnd::OtherSignal => "raised another signal".to_string(),
            HandlerEnd::Exit => r.outcome.as_ref().map_or_else(
                || "exited".to_string(),
                |o| match o.exit_code {
                    Some(_) => o.status.clone(),
                    None => format!("was {}", o.status),
                },
            ),
        };
        let _ = writeln!(
            s,
            "handler:  {} handled by the process (handler at 0x{:x}), which then {then}{}; \
             the stack below is the original fault's",
            r.signal.name,
            h.address,
            h.reraised_with
                .as_deref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        s,
        "time:     {} (reported {:.1} ms after the signal)",
        r.time, r.latency_ms
    );
    if let Some(g) = &r.registers {
        let _ = writeln!(
            s,
            "registers:\n  rip 0x{:016x}  rsp 0x{:016x}  rbp 0x{:016x}  eflags 0x{:x}\n  rax 0x{:016x}  rbx 0x{:016x}  rcx 0x{:016x}  rdx 0x{:016x}\n  rsi 0x{:016x}  rdi 0x{:016x}  r8  0x{:016x}  r9  0x{:016x}\n  r10 0x{:016x}  r11 0x{:016x}  r12 0x{:016x}  r13 0x{:016x}\n  r14 0x{:016x}  r15 0x{:016x}",
            g.rip,
            g.rsp,
            g.rbp,
            g.eflags,
            g.rax,
            g.rbx,
            g.rcx,
            g.rdx,
            g.rsi,
            g.rdi,
            g.r8,
            g.r9,
            g.r10,
            g.r11,
            g.r12,
            g.r13,
            g.r14,
            g.r15
        );
    }
    if let Some(i) = &r.instruction {
        let _ = writeln!(s, "instruction: {i}");
    }
}

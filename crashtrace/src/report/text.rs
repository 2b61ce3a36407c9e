//! The human-readable report: the fault on top, then gdb's `thread apply all bt` layout,
//! then the outcome as `/usr/bin/time -v` would give it.

use std::fmt::Write as _;

use super::{CrashReport, Frame};
use crate::symbolize::Location;

fn loc(l: &Location) -> String {
    match (l.line, l.column) {
        (Some(line), Some(col)) if col > 0 => format!("{}:{line}:{col}", l.file),
        (Some(line), _) => format!("{}:{line}", l.file),
        _ => l.file.clone(),
    }
}

pub fn render(r: &CrashReport) -> String {
    let mut s = String::new();
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
        let _ = writeln!(
            s,
            "handler:  0x{:x} ran and re-raised the signal{}; the stack below is the original fault's",
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
    let _ = writeln!(
        s,
        "\nthread {} ({}) {} ({} frames; {} over {} bytes of stack{}):",
        r.tid,
        r.thread_name,
        if sig.external {
            "received it first"
        } else {
            "crashed"
        },
        r.frames.len(),
        r.unwind.method,
        r.unwind.stack_bytes,
        if r.unwind.stack_truncated {
            ", copy truncated"
        } else {
            ""
        }
    );
    frames(&mut s, &r.frames);
    let _ = writeln!(s, "unwinding: {}", r.unwind.stop_reason);
    for t in &r.threads {
        let _ = writeln!(
            s,
            "\nthread {} ({}) ({} frames; {} bytes of stack):",
            t.tid,
            t.name,
            t.frames.len(),
            t.unwind.stack_bytes
        );
        frames(&mut s, &t.frames);
        let _ = writeln!(s, "unwinding: {}", t.unwind.stop_reason);
    }
    if let Some(py) = &r.python {
        for t in &py.threads {
            let _ = writeln!(
                s,
                "\n{} {}{}{}{} (most recent call first), Python {}:",
                if t.crashing {
                    "Current thread"
                } else {
                    "Thread"
                },
                t.thread_id,
                t.native_id
                    .map(|n| format!(" [tid {n}]"))
                    .unwrap_or_default(),
                t.name
                    .as_deref()
                    .map(|n| format!(" \"{n}\""))
                    .unwrap_or_default(),
                if t.gil == Some(true) {
                    ", holding the GIL"
                } else {
                    ""
                },
                py.version
            );
            for f in &t.frames {
                let line = f
                    .line
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "???".into());
                let _ = writeln!(s, "  File \"{}\", line {line} in {}", f.file, f.function);
            }
            if t.truncated {
                let _ = writeln!(s, "  ...");
            }
        }
    }
    if r.threads_not_captured > 0 {
        let _ = writeln!(s, "\n{} more threads not captured", r.threads_not_captured);
    }
    if let Some(o) = &r.outcome {
        let _ = writeln!(s, "\noutcome:  {}", o.status);
        let _ = writeln!(
            s,
            "  wall {:.3} s, user {:.3} s, system {:.3} s, max RSS {} kB",
            o.wall_seconds, o.user_seconds, o.system_seconds, o.max_rss_kb
        );
        let _ = writeln!(
            s,
            "  page faults: {} minor, {} major; context switches: {} voluntary, {} involuntary",
            o.minor_faults,
            o.major_faults,
            o.voluntary_context_switches,
            o.involuntary_context_switches
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

/// Runs of the same function longer than this (deep recursion) are shown collapsed.
const REPEAT_RUN: usize = 6;

fn frames(s: &mut String, frames: &[Frame]) {
    let mut i = 0;
    while i < frames.len() {
        let f = &frames[i];
        if let Some(g) = &f.gap_before {
            let _ = writeln!(s, "       ... {g} ...");
        }
        let run = 1 + frames[i + 1..]
            .iter()
            .take_while(|g| {
                g.gap_before.is_none() && g.function.is_some() && g.function == f.function
            })
            .count();
        if run > REPEAT_RUN {
            frame(s, &frames[i]);
            frame(s, &frames[i + 1]);
            let _ = writeln!(
                s,
                "       ... {} more frames of {} ...",
                run - 3,
                f.function.as_deref().unwrap_or("??")
            );
            frame(s, &frames[i + run - 1]);
            i += run;
        } else {
            frame(s, f);
            i += 1;
        }
    }
}

fn frame(s: &mut String, f: &Frame) {
    {
        let module = f
            .module
            .as_deref()
            .map(crate::modules::short_name)
            .unwrap_or("??");
        let _ = write!(s, "#{:<3} 0x{:016x} in ", f.index, f.address);
        match &f.function {
            Some(func) => {
                let _ = match f.function_offset {
                    Some(off) => write!(s, "{func}+0x{off:x} ({module})"),
                    None => write!(s, "{func} ({module})"),
                };
            }
            None => {
                let _ = write!(s, "{module}+0x{:x}", f.module_offset.unwrap_or(f.address));
                if let Some(b) = &f.build_id {
                    let _ = write!(s, " [build-id {b}]");
                }
                if let Some(why) = &f.unnamed_reason {
                    let _ = write!(s, " ({why})");
                }
            }
        }
        if let Some(l) = &f.location {
            let _ = write!(s, " at {}", loc(l));
        }
        s.push('\n');
        for p in &f.python {
            let _ = writeln!(
                s,
                "       python {} ({}:{})",
                p.function,
                p.file,
                p.line.map(|l| l.to_string()).unwrap_or_else(|| "?".into())
            );
        }
        for i in &f.inlined {
            let _ = write!(s, "       inlined {}", i.function);
            if let Some(l) = &i.call_location {
                let _ = write!(s, " (called at {})", loc(l));
            }
            s.push('\n');
        }
    }
}

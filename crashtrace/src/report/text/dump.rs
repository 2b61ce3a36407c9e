//! A dump in text: a header for the process, then each thread as a crash report shows
//! its other threads (with its state and how far its stack can be trusted), then
//! faulthandler's tracebacks.

use std::fmt::Write as _;

use super::{neutral, python, stacks};
use crate::report::dump::DumpReport;

pub fn render_dump(r: &DumpReport) -> String {
    // Nothing the traced process controls reaches the terminal raw.
    let mut r = r.clone();
    neutral::escape(&mut r.process_name);
    neutral::escape_opt(&mut r.executable);
    neutral::escape_opt(&mut r.cgroup);
    r.threads.iter_mut().for_each(neutral::thread);
    if let Some(p) = &mut r.python {
        neutral::tracebacks(p);
    }
    r.notes.iter_mut().for_each(neutral::escape);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "=== crashtrace dump: process {} ({}), {} threads{} ===",
        r.pid,
        r.process_name,
        r.threads.len(),
        if r.exited {
            ", exited during the dump"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "process:  {} ({}), executable {}{}",
        r.pid,
        r.process_name,
        r.executable.as_deref().unwrap_or("unknown"),
        r.namespace_pid
            .map(|n| format!(", pid {n} in its namespace"))
            .unwrap_or_default()
    );
    if let Some(c) = &r.cgroup {
        let _ = writeln!(s, "cgroup:   {c}");
    }
    let _ = writeln!(
        s,
        "read:     in {:.2} ms, without stopping it (no ptrace)",
        r.read_ms
    );
    for t in &r.threads {
        let state = t.state.as_ref();
        let _ = writeln!(
            s,
            "\nthread {} ({}{}) {}{} [{}] ({} frames; {} bytes of stack):",
            t.tid,
            t.name,
            stacks::role(&t.role),
            state.map_or("", |st| st.state.as_str()),
            state
                .and_then(|st| st.syscall.as_deref())
                .map(|c| format!(" in {c}"))
                .unwrap_or_default(),
            state.map_or("", |st| st.consistency.as_str()),
            t.frames.len(),
            t.unwind.stack_bytes
        );
        stacks::frames(&mut s, &t.frames);
        let _ = writeln!(s, "unwinding: {}", t.unwind.stop_reason);
    }
    python::tracebacks(&mut s, r.python.as_ref());
    if !r.threads_exited.is_empty() {
        let tids: Vec<String> = r.threads_exited.iter().map(u32::to_string).collect();
        let _ = writeln!(s, "\nexited before read: {}", tids.join(", "));
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

//! gdb's `thread apply all bt` layout: the crashing thread first, then the others.

use std::fmt::Write as _;

use crate::model::{CrashReport, Frame, Location};

/// Every thread's frames.
pub fn threads(s: &mut String, r: &CrashReport) {
    let _ = writeln!(
        s,
        "\nthread {} ({}{}) {} ({} frames; {} over {} bytes of stack{}):",
        r.tid,
        r.thread_name,
        role(&r.thread_role),
        if r.signal.external {
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
    frames(s, &r.frames);
    let _ = writeln!(s, "unwinding: {}", r.unwind.stop_reason);
    for t in &r.threads {
        let _ = writeln!(
            s,
            "\nthread {} ({}{}) ({} frames; {} bytes of stack):",
            t.tid,
            t.name,
            role(&t.role),
            t.frames.len(),
            t.unwind.stack_bytes
        );
        frames(s, &t.frames);
        let _ = writeln!(s, "unwinding: {}", t.unwind.stop_reason);
    }
}

/// A thread's role after its name, `, main`.
pub(super) fn role(r: &Option<String>) -> String {
    r.as_deref().map(|r| format!(", {r}")).unwrap_or_default()
}

/// Runs of the same function longer than this (deep recursion) are shown collapsed.
const REPEAT_RUN: usize = 6;

pub(super) fn frames(s: &mut String, frames: &[Frame]) {
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
        let module = f.module.as_deref().map(short_name).unwrap_or("??");
        let _ = write!(s, "#{:<3} 0x{:016x} in ", f.index, f.address);
        // Inlined functions first, innermost first, as gdb shows them; then the function
        // they were inlined into, on a line of its own aligned under the first.
        for (i, inl) in f.inlined.iter().enumerate() {
            if i > 0 {
                let _ = write!(s, "{:24}in ", "");
            }
            let _ = write!(s, "{} ({module})", inl.function);
            if let Some(l) = &inl.location {
                let _ = write!(s, " at {}", loc(l));
            }
            s.push_str(" (inlined)\n");
        }
        if !f.inlined.is_empty() {
            let _ = write!(s, "{:24}in ", "");
        }
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
    }
}

/// The basename of a module path, for compact frame lines.
fn short_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn loc(l: &Location) -> String {
    match (l.line, l.column) {
        (Some(line), Some(col)) if col > 0 => format!("{}:{line}:{col}", l.file),
        (Some(line), _) => format!("{}:{line}", l.file),
        _ => l.file.clone(),
    }
}

//! faulthandler's layout: each Python thread, most recent call first.

use std::fmt::Write as _;

use crate::model::PythonReport;

/// The Python traceback of each thread.
pub fn tracebacks(s: &mut String, python: Option<&PythonReport>) {
    if let Some(py) = python {
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
}

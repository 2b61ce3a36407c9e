//! The human-readable report: the fault on top, then gdb's `thread apply all bt` layout,
//! then faulthandler's tracebacks, then the outcome as `/usr/bin/time -v` would give it.
//! One file per section.

mod dump;
mod header;
mod job;
mod neutral;
mod outcome;
mod python;
mod stacks;

pub use dump::render_dump;
pub use neutral::neutral;

use crate::model::CrashReport;

pub fn render(r: &CrashReport) -> String {
    // Nothing the traced process controls reaches the terminal raw.
    let r = &neutral::neutral(r);
    let mut s = String::new();
    header::fault(&mut s, r);
    job::who_and_why(&mut s, r);
    stacks::threads(&mut s, r);
    python::tracebacks(&mut s, r.python.as_ref());
    outcome::outcome(&mut s, r);
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A report as JSON, the way a sink writes it: the fields every report has.
    pub const MINIMAL: &str = r#"{
        "schema_version": 1, "time": "2026-12-01T10:00:00.000Z", "pid": 4242, "tid": 4243,
        "process_name": "victim", "thread_name": "worker",
        "parent_pid": 1, "parent_name": "init",
        "signal": {"number": 11, "name": "SIGSEGV", "code": 1, "code_name": "SEGV_MAPERR",
                   "code_description": "address not mapped to object", "fault_address": 0,
                   "fault_mapping": "not mapped: near NULL", "external": false},
        "frames": [
            {"index": 0, "address": 4096, "module": "/usr/bin/victim", "module_offset": 4096,
             "function": "crash_here", "function_offset": 4,
             "location": {"file": "victim.c", "line": 7, "column": 3},
             "inlined": [], "python": []},
            {"index": 1, "address": 8192, "module": "/usr/lib/libfoo.so", "module_offset": 512,
             "build_id": "abcd", "unnamed_reason": "stripped", "inlined": [], "python": []}
        ],
        "unwind": {"method": "DWARF CFI", "stack_bytes": 8192, "stack_truncated": false,
                   "stop_reason": "reached the outermost frame"},
        "threads": [], "threads_not_captured": 0, "notes": ["a note"], "latency_ms": 1.5
    }"#;

    #[test]
    fn renders_each_section_from_a_read_back_report() {
        let r: crate::model::CrashReport = serde_json::from_str(MINIMAL).unwrap();
        let text = render(&r);
        let expect = [
            "=== crashtrace: SIGSEGV in process 4242 (victim), thread 4243 (worker) ===",
            "process:  4242 (victim), executable unknown, parent 1 (init)",
            "signal:   SIGSEGV (11), SEGV_MAPERR: address not mapped to object",
            "fault:    address 0x0, not mapped: near NULL",
            "thread 4243 (worker) crashed (2 frames; DWARF CFI over 8192 bytes of stack):",
            "#0   0x0000000000001000 in crash_here+0x4 (victim) at victim.c:7:3",
            "#1   0x0000000000002000 in libfoo.so+0x200 [build-id abcd] (stripped)",
            "unwinding: reached the outermost frame",
            "note: a note",
        ];
        for line in expect {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
        // Inlined functions, innermost first with the address's line, then their callers.
        let mut r2 = r.clone();
        r2.frames[0].inlined = serde_json::from_str(
            r#"[{"function": "inner", "location": {"file": "v.c", "line": 4}},
                {"function": "middle", "location": {"file": "v.c", "line": 8}}]"#,
        )
        .unwrap();
        let text2 = render(&r2);
        let want = "\
#0   0x0000000000001000 in inner (victim) at v.c:4 (inlined)
                        in middle (victim) at v.c:8 (inlined)
                        in crash_here+0x4 (victim) at victim.c:7:3
#1   ";
        assert!(text2.contains(want), "{text2}");
        // A name with terminal controls and a forged header line is shown escaped.
        let mut r3 = r.clone();
        r3.thread_name = "\x1b]0;pwned\x07\n=== crashtrace: SIGSEGV in process 1".into();
        r3.frames[1].module = Some("/tmp/lib\u{202e}os.so".into());
        let text3 = render(&r3);
        assert!(
            !text3.chars().any(crate::sys::escape::is_hostile_in_text),
            "{text3:?}"
        );
        assert!(text3.contains("(\\x1b]0;pwned\\x07\\x0a=== crashtrace: SIGSEGV in process 1)"));
        assert!(text3.contains("lib\\u{202e}os.so+0x200"), "{text3}");
        assert_eq!(
            text3
                .lines()
                .filter(|l| l.starts_with("=== crashtrace"))
                .count(),
            1
        );
        // The JSON a sink writes reads back to the same report.
        let again: crate::model::CrashReport = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(render(&again), text);
    }
}

//! The end: threads not captured, the outcome as `/usr/bin/time -v` gives it, notes.

use std::fmt::Write as _;

use crate::model::CrashReport;

/// What the report lacks and how the process ended.
pub fn outcome(s: &mut String, r: &CrashReport) {
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
}

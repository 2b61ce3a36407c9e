//! crashtrace: symbolized native stacks and Python tracebacks of crashing processes,
//! captured with eBPF.
//!
//! The data path, top to bottom, one folder a stage:
//! [`capture`] (eBPF programs, ring-buffer records, mapping table, file pins) →
//! [`assemble`] (records paired into one crash) → [`symbolize`] (DWARF unwinding, names
//! from the files) → [`python`] (tracebacks read from outside) → [`report`] (the report
//! model, text rendering) → [`sinks`] (outputs behind a bounded queue).
//! [`analyze`] takes one crash through symbolize → python → report; [`monitor`] is the
//! event loop that drives it all. [`summary`] reads reports back (many hosts' JSON
//! lines) and groups them. [`sys`] and [`model`] are below every stage.

/// A status line on stderr that never panics: when stderr is closed or full
/// (`crashtrace 2>&1 | head -1`, a full disk) the line is lost, not crashtrace. Plain,
/// or JSON with `--log-format json` (see [`status`]).
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => {{
        $crate::status::line(&format!($($t)*));
    }};
}

pub mod analyze;
pub mod assemble;
pub mod capture;
pub mod cli;
pub mod dump;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod python;
pub mod report;
pub mod sinks;
pub mod status;
pub mod summary;
pub mod symbolize;
pub mod sys;

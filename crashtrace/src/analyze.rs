//! One crash down the data path: unwind/symbolize every thread → Python tracebacks
//! merged into the native frames → the report model.

use std::time::SystemTime;

use crate::{
    assemble::Crash,
    capture::pins::FilePins,
    model::{CrashReport, EarlierFailure, ThreadReport, XidEvent},
    python::{Tracebacks, layouts, merge_all, runtime::version_from_name},
    report::{ReportInput, build},
    symbolize::{Symbolizer, versions},
    sys::procfs::Mapping,
};

/// What the process looked like at its crash, from the tables kept while it ran.
pub struct ProcessView<'a> {
    pub mappings: &'a [Mapping],
    pub executable: Option<&'a str>,
    pub cgroup: Option<String>,
    /// Descriptors on the files mapped, taken while the process existed.
    pub pins: &'a FilePins,
    /// For a kill: the failure of the same job that came before it.
    pub earlier_failure: Option<EarlierFailure>,
    /// The kernel log's Xid lines about it.
    pub xid: Vec<XidEvent>,
    /// The host's name.
    pub host: Option<String>,
    /// What this kernel keeps out of every report (see `capture::features`).
    pub kernel_note: Option<&'a str>,
}

pub fn analyze(
    symbolizer: &mut Symbolizer,
    crash: &Crash,
    view: ProcessView<'_>,
    time: SystemTime,
    latency_ms: f64,
) -> CrashReport {
    let loaded = symbolizer.load(view.mappings, view.pins);
    let subject = &crash.subject;
    let (mut frames, unwind) = symbolizer.stack(subject, &loaded, view.pins);
    let mut threads: Vec<ThreadReport> = crash
        .threads
        .iter()
        .map(|t| {
            let (frames, unwind) = symbolizer.stack(t, &loaded, view.pins);
            ThreadReport {
                tid: t.tid,
                name: t.thread_name.clone(),
                role: None,
                frames,
                unwind,
                state: None,
            }
        })
        .collect();
    threads.sort_by_key(|t| t.tid);
    let mut python = crash.python.as_ref().and_then(|p| Tracebacks(p).report());
    if let Some(py) = &mut python {
        merge_all(py, (&mut frames, &subject.thread_name), &mut threads);
    }
    let python_mapped = view
        .mappings
        .iter()
        .find_map(|m| version_from_name(&m.path));
    let gpu_libraries = versions::gpu_libraries(view.mappings);
    let gpu_open = crash
        .memory
        .as_ref()
        .is_some_and(|m| m.gpu_minors != 0 || m.gpu_flags != 0);
    let mut report = build(ReportInput {
        crash,
        frames,
        unwind,
        threads,
        python,
        executable: view.executable,
        cgroup: view.cgroup,
        python_mapped,
        python_layout_known: python_mapped.is_some_and(|v| layouts::offsets(v).is_some()),
        earlier_failure: view.earlier_failure,
        driver_version: (!gpu_libraries.is_empty() || gpu_open)
            .then(versions::driver_version)
            .flatten(),
        gpu_libraries,
        xid: view.xid,
        host: view.host,
        kernel_note: view.kernel_note.map(str::to_string),
        time,
        latency_ms,
    });
    report.notes.extend(symbolizer.take_notes());
    report
}

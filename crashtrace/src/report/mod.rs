//! The report stage: everything known about one crash, and its symbolized stacks, made
//! into the report model. No I/O and no clock: the wall-clock time comes in.

pub mod attribution;
pub mod dump;
pub mod fault;
pub mod gpu;
pub mod outcome;
pub mod signature;
pub mod text;

use std::time::SystemTime;

use crate::{
    assemble::Crash,
    model::{
        CrashReport, EarlierFailure, Frame, GpuLibrary, HandlerEnd, HandlerReport, PythonReport,
        Registers, SignalReport, ThreadReport, UnwindReport, XidEvent,
    },
    sys::{
        cgroups,
        signals::{decode_si_code, has_fault_address, has_sender, signal_name},
    },
};
use fault::{bus_cause, describe_fault, disassemble};
use outcome::{oom_report, outcome};

/// What the report is made of, besides the crash's own records.
pub struct ReportInput<'a> {
    pub crash: &'a Crash,
    /// The crashing thread's frames and how its unwinding went.
    pub frames: Vec<Frame>,
    pub unwind: UnwindReport,
    /// The other threads, sorted by thread id.
    pub threads: Vec<ThreadReport>,
    pub python: Option<PythonReport>,
    /// The executable's path, where known.
    pub executable: Option<&'a str>,
    /// The process's cgroup path, resolved from its id.
    pub cgroup: Option<String>,
    /// The CPython version mapped in the process, if any, and whether crashtrace knows
    /// its layout (for the note when no Python frames came).
    pub python_mapped: Option<(u8, u8)>,
    pub python_layout_known: bool,
    /// For a kill: the same job's failure before it (see `attribution::FailureLedger`).
    pub earlier_failure: Option<EarlierFailure>,
    /// The GPU libraries it had mapped, the host's driver version, and the kernel log's
    /// Xid lines about it.
    pub gpu_libraries: Vec<GpuLibrary>,
    pub driver_version: Option<String>,
    pub xid: Vec<XidEvent>,
    /// The host's name.
    pub host: Option<String>,
    /// What this kernel keeps out of every report, Python frames among them.
    pub kernel_note: Option<String>,
    /// When the report is made (wall clock), and how long after the fatal signal.
    pub time: SystemTime,
    pub latency_ms: f64,
}

pub fn build(input: ReportInput<'_>) -> CrashReport {
    let crash = input.crash;
    let c = &crash.subject;
    let (frames, unwind, mut threads, python) =
        (input.frames, input.unwind, input.threads, input.python);
    for t in &mut threads {
        t.role = attribution::thread_role(&t.name, t.tid == c.pid).map(str::to_string);
    }
    // The main thread and autograd workers first, then by thread id (a stable sort).
    threads.sort_by_key(|t| attribution::thread_rank(t.role.as_deref()));
    let thread_role = attribution::thread_role(&c.thread_name, c.tid == c.pid);
    let cg = input
        .cgroup
        .as_deref()
        .map(cgroups::describe)
        .unwrap_or_default();
    let mut job = attribution::job(crash.memory.as_ref(), &cg);
    if let Some(j) = &mut job {
        j.after_failure_of = input.earlier_failure;
    }
    let abort_message = crash
        .memory
        .as_ref()
        .and_then(|m| m.abort_message.clone())
        .filter(|_| crash.fatal().signo == libc::SIGABRT);
    let signal = SignalReport {
        number: c.signo,
        name: signal_name(c.signo),
        code: c.si_code,
        code_name: decode_si_code(c.signo, c.si_code).map(|d| d.name.to_string()),
        code_description: decode_si_code(c.signo, c.si_code).map(|d| d.description.to_string()),
        fault_address: (c.has_siginfo && has_fault_address(c.signo, c.si_code))
            .then_some(c.si_addr),
        // The kernel's record of the sender (from signal_generate) also covers SIGKILL,
        // which reaches the process without a siginfo.
        sender_pid: if c.sender_pid != 0 {
            Some(c.sender_pid)
        } else {
            (c.has_siginfo && has_sender(c.si_code)).then_some(c.si_pid)
        },
        sender_uid: if c.sender_pid != 0 {
            Some(c.sender_uid)
        } else {
            (c.has_siginfo && has_sender(c.si_code)).then_some(c.si_uid)
        },
        sender_name: (c.sender_pid != 0).then(|| c.sender_name.clone()),
        // After an overflow the kernel lookup went to the stack, not the fault address.
        fault_mapping: match (crash.fault_maps.as_ref(), &c.top) {
            (Some(m), _) => Some(&m.fault),
            (None, Some(_)) => Some(&crashtrace_common::VmaInfo::NONE),
            (None, None) => None,
        }
        .and_then(|f| {
            (c.has_siginfo && has_fault_address(c.signo, c.si_code)).then(|| describe_fault(c, f))
        }),
        cause: bus_cause(c, crash.fault_maps.as_ref().map(|m| &m.fault)),
        // An OOM kill comes from the kernel, whoever's allocation triggered it.
        external: (c.sender_pid != 0 && c.sender_pid != c.pid) || crash.oom.is_some(),
    };
    let handler = match &crash.reraise {
        Some(fatal) => Some(HandlerReport {
            address: c.handler,
            reraised_with: decode_si_code(fatal.signo, fatal.si_code)
                .map(|d| format!("{} {}", signal_name(fatal.signo), d.name)),
            ended_by: if fatal.signo == c.signo {
                HandlerEnd::Reraise
            } else {
                HandlerEnd::OtherSignal
            },
        }),
        None => crash.exited_after_handler().then_some(HandlerReport {
            address: c.handler,
            reraised_with: None,
            ended_by: HandlerEnd::Exit,
        }),
    };
    let mut notes = Vec::new();
    if let Some(n) = &input.kernel_note {
        notes.push(n.clone());
    } else if python.is_none()
        && let Some(v) = input.python_mapped
    {
        notes.push(if !input.python_layout_known {
            format!(
                "Python {}.{}: not a version crashtrace reads; native frames only",
                v.0, v.1
            )
        } else {
            format!(
                "Python {}.{}: no Python frames (the interpreter crashed before crashtrace had \
                 registered it, or its state could not be read); native frames only",
                v.0, v.1
            )
        });
    }
    let outcome = crash.exit.as_ref().map(outcome);
    if crash.exit.is_none() {
        notes.push(
            "the process's exit was not seen in time: no outcome, and threads still \
             running then are missing"
                .into(),
        );
    }
    if crash.exited_after_handler() {
        notes.push(
            "the other threads were not captured: the process exited after its handler \
             ran, without a fatal signal"
                .into(),
        );
    }
    let threads_not_captured = crash
        .exit
        .as_ref()
        .map_or(0, |e| e.threads_skipped + e.threads_lost);
    if let Some(e) = &crash.exit
        && e.threads_lost > 0
    {
        notes.push(format!(
            "{} threads lost: the ring buffer was full (raise --ring-buffer-size)",
            e.threads_lost
        ));
    }
    if let Some(e) = &crash.exit
        && e.threads_skipped > 0
    {
        notes.push(format!(
            "{} threads not captured: at most {} threads are captured per crash",
            e.threads_skipped,
            crashtrace_common::MAX_THREADS_PER_CRASH
        ));
    }
    CrashReport {
        schema_version: crate::model::SCHEMA_VERSION,
        time: humantime::format_rfc3339_millis(input.time).to_string(),
        host: input.host,
        pid: c.pid,
        tid: c.tid,
        process_name: c.process_name.clone(),
        thread_name: c.thread_name.clone(),
        namespace_pid: (c.ns_pid != 0 && c.ns_pid != c.pid).then_some(c.ns_pid),
        namespace_tid: (c.ns_tid != 0 && c.ns_tid != c.tid).then_some(c.ns_tid),
        container_id: cg.container_id,
        container_runtime: cg.runtime.map(str::to_string),
        pod_uid: cg.pod_uid,
        job,
        abort_message,
        thread_role: thread_role.map(str::to_string),
        // Made from the whole report, last (see `signature`).
        signature: None,
        gpu: gpu::gpu(
            crash.memory.as_ref(),
            input.gpu_libraries,
            input.driver_version,
            input.xid,
        ),
        cgroup: input.cgroup.clone(),
        executable: input
            .executable
            .map(str::to_string)
            .or_else(|| (!c.exe_name.is_empty()).then(|| c.exe_name.clone())),
        parent_pid: c.parent_pid,
        parent_name: c.parent_name.clone(),
        signal,
        oom: crash.oom.as_ref().map(oom_report),
        handler,
        registers: c.regs.as_ref().map(Registers::from),
        instruction: c
            .code
            .as_ref()
            .zip(c.regs.as_ref())
            .and_then(|(code, r)| disassemble(code, r.rip)),
        frames,
        unwind,
        threads,
        threads_not_captured,
        outcome,
        python,
        notes,
        latency_ms: input.latency_ms,
    }
}

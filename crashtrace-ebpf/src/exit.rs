//! Following a crashing process to its exit: status and resource use, like wait4().

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use crashtrace_common::{
    CrashState, EXIT_AFTER_HANDLER, EXIT_CODE_PLACEHOLDER, HANDLED_END_NS, ProcessExit,
    RecordHeader, RecordKind, Stat, Usage,
};

use crate::{
    helpers::{atomic_add64, btf_field, count, read_kernel, read_kernel_or_zero, reserve},
    maps::{CRASHED, HANDLED, config},
    task::{process_start, usage_of_signal},
};

/// `sched_process_exit` runs in each exiting thread. For threads of a crashing process:
/// add the thread's usage; when it is the last one, emit the exit record.
#[inline(always)]
pub fn on_process_exit(task: u64) {
    // The first and only test for almost every exit: a thread of a process killed by a
    // signal exits with that signal in its code, and a handler that ends its process
    // (`_exit(2)`) leaves a non-zero status. A status-0 exit is nobody's crash: one load
    // from the hot task_struct, no helper call and no map lookup. (Python processes leave
    // PYPROCS through crashtrace, which sees every exit; HANDLED entries are checked
    // against the process start time where they are used.)
    // Its offset is written into this load's instruction by the loader, not read from the
    // configuration: that would be one more cache line, cold in a fork+exec storm.
    let exit_code = btf_field::<u32>(task, EXIT_CODE_PLACEHOLDER as u32);
    if exit_code != 0 {
        // The rest in a subprogram, as for the signal programs (see `on_signal_generate`).
        process_exited(task, exit_code);
    }
}

#[inline(never)]
fn process_exited(task: u64, exit_code: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if pid == pid_tgid as u32 {
        // The main thread: the process is ending. A miss for every process that never
        // handled a crash signal.
        if let Some(r) = HANDLED.get_ptr(pid) {
            // SAFETY: map value pointer from a successful lookup.
            let (last, start) = unsafe { ((*r).last_ns, (*r).start_ns) };
            let _ = HANDLED.remove(pid);
            if start == process_start(task) && CRASHED.get_ptr(pid).is_none() {
                exit_after_handler(task, pid, exit_code, last);
            }
        }
    }
    let Some(state) = CRASHED.get_ptr_mut(pid) else {
        return;
    };
    let f = |off: u32| read_kernel_or_zero::<u64>(task + off as u64);
    // SAFETY: map value pointer from a successful lookup; threads may exit concurrently.
    unsafe {
        let u = &raw mut (*state).usage;
        atomic_add64(&raw mut (*u).utime_ns, f(config!(offsets.task_utime)));
        atomic_add64(&raw mut (*u).stime_ns, f(config!(offsets.task_stime)));
        atomic_add64(&raw mut (*u).runtime_ns, f(config!(offsets.task_runtime)));
        atomic_add64(&raw mut (*u).min_flt, f(config!(offsets.task_min_flt)));
        atomic_add64(&raw mut (*u).maj_flt, f(config!(offsets.task_maj_flt)));
        atomic_add64(&raw mut (*u).nvcsw, f(config!(offsets.task_nvcsw)));
        atomic_add64(&raw mut (*u).nivcsw, f(config!(offsets.task_nivcsw)));
    }
    // signal->live reaches 0 in the last thread's do_exit(), before this tracepoint.
    let signal = read_kernel_or_zero::<u64>(task + config!(offsets.task_signal) as u64);
    let live = read_kernel::<i32>(signal + config!(offsets.signal_live) as u64).unwrap_or(1);
    if live != 0 {
        return;
    }
    // SAFETY: as above; this is the last thread, nothing else writes the state now.
    let st: CrashState = unsafe { *state };
    let _ = CRASHED.remove(pid);
    submit_exit(task, pid_tgid as u32, exit_code, &st, 0);
}

/// A process that handled a crash signal ends: if it ended badly and soon after (a
/// handler's `_exit(2)`), the fault's capture is the report and this is its outcome.
/// Seen at the main thread's exit; a main thread that left by `pthread_exit` has status 0.
fn exit_after_handler(task: u64, pid: u32, exit_code: u32, last_ns: u64) {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.saturating_sub(last_ns) >= HANDLED_END_NS {
        return;
    }
    let f = |off: u32| read_kernel_or_zero::<u64>(task + off as u64);
    // The group's usage so far and this thread's own; threads still exiting are missed.
    let g = usage_of_signal(task);
    let st = CrashState {
        usage: Usage {
            utime_ns: g.utime_ns + f(config!(offsets.task_utime)),
            stime_ns: g.stime_ns + f(config!(offsets.task_stime)),
            runtime_ns: g.runtime_ns + f(config!(offsets.task_runtime)),
            min_flt: g.min_flt + f(config!(offsets.task_min_flt)),
            maj_flt: g.maj_flt + f(config!(offsets.task_maj_flt)),
            nvcsw: g.nvcsw + f(config!(offsets.task_nvcsw)),
            nivcsw: g.nivcsw + f(config!(offsets.task_nivcsw)),
        },
        ..CrashState::default()
    };
    submit_exit(task, pid, exit_code, &st, EXIT_AFTER_HANDLER);
}

fn submit_exit(task: u64, tid: u32, exit_code: u32, st: &CrashState, flags: u32) {
    let Some(mut entry) = reserve::<ProcessExit>() else {
        count(Stat::ExitsLost);
        return;
    };
    let signal = read_kernel_or_zero::<u64>(task + config!(offsets.task_signal) as u64);
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let rec = ProcessExit {
        header: RecordHeader::of::<ProcessExit>(
            RecordKind::ProcessExit,
            // SAFETY: helper without arguments.
            unsafe { bpf_ktime_get_ns() },
            pid,
            tid,
        ),
        exit_code,
        threads_captured: st
            .threads_captured
            .min(crashtrace_common::MAX_THREADS_PER_CRASH),
        threads_skipped: st.threads_skipped,
        threads_lost: st.threads_lost,
        flags,
        _pad: 0,
        start_ns: process_start(task),
        // signal->maxrss is in pages. Nothing here reads through the mm: on older kernels
        // (6.1) this tracepoint runs after exit_mm(), the mm gone, on newer ones (6.18)
        // before it; do_exit() folds the mm's peak into signal->maxrss ahead of both.
        maxrss_kb: read_kernel_or_zero::<u64>(signal + config!(offsets.signal_maxrss) as u64) * 4,
        usage: st.usage,
    };
    entry.write(rec);
    entry.submit(0);
}

//! `crashtrace dump`: every thread of a live process, from a sleepable task iterator run
//! in crashtrace's own context. The target is neither stopped nor signalled: its saved
//! user registers (`bpf_task_pt_regs`) and its stack (`bpf_copy_from_user_task`) are
//! read while it runs on.

use crashtrace_common::{CAPTURE_ON_CPU, RecordKind, ThreadCapture};

use super::{python, record::fill_thread};
use crate::{
    helpers::{count, read_kernel, read_kernel_or_zero, reserve},
    maps::{DUMP_TARGETS, config},
    task::read_exe_name,
};

/// One task per call (`task` is the iterator's trusted, non-null task pointer).
#[inline(always)]
pub fn on_task(task: u64) {
    let Some(pid) = read_kernel::<u32>(task + config!(offsets.task_tgid) as u64) else {
        return;
    };
    let Some(state) = DUMP_TARGETS.get_ptr_mut(pid) else {
        return;
    };
    // A thread that has exited but not yet been reaped has no memory to read.
    if read_kernel_or_zero::<u64>(task + config!(offsets.task_mm) as u64) == 0 {
        return;
    }
    let tid = read_kernel_or_zero::<u32>(task + config!(offsets.task_pid) as u64);
    let task_state = read_kernel_or_zero::<u32>(task + config!(offsets.task_state) as u64);
    let on_cpu = read_kernel_or_zero::<i32>(task + config!(offsets.task_on_cpu) as u64);
    if let Some(mut entry) = reserve::<ThreadCapture>() {
        let rec = entry.as_mut_ptr();
        // SAFETY: `rec` is a reserved ThreadCapture; fill_thread writes every field the
        // reader looks at but these.
        unsafe {
            fill_thread::<true>(rec, RecordKind::DumpThread, 0, pid, tid, task);
            let head = &raw mut (*rec).head;
            (*head).task_state = task_state;
            if on_cpu != 0 {
                (*head).flags |= CAPTURE_ON_CPU;
            }
            read_exe_name(task, &raw mut (*head).exe_name);
        }
        entry.submit(0);
        count(crashtrace_common::Stat::ThreadsCaptured);
    }
    // SAFETY: map value pointer from a successful lookup; the iterator runs one task at
    // a time.
    unsafe {
        if *state == 0 {
            *state = 1;
            python::capture::<true>(task, pid, tid);
        }
    }
}

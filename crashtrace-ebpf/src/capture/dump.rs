//! `crashtrace dump`: every thread of a live process, from a sleepable task iterator run
//! in crashtrace's own context. The target is neither stopped nor signalled: its saved
//! user registers (`bpf_task_pt_regs`) and its stack (`bpf_copy_from_user_task`) are
//! read while it runs on.

use crashtrace_common::{
    CAPTURE_ON_CPU, EXE_NAME_LEN, RecordKind, STACK_CHUNK, TASK_COMM_LEN, THREAD_STACK_BYTES,
    ThreadCapture,
};

use super::{
    python,
    record::{copy_stack, fill_head},
};
use crate::{
    helpers::{count, read_kernel, reserve},
    maps::{DUMP_TARGETS, config},
    task::{process_comm, read_exe_name},
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
    if read_kernel::<u64>(task + config!(offsets.task_mm) as u64).unwrap_or(0) == 0 {
        return;
    }
    let tid = read_kernel::<u32>(task + config!(offsets.task_pid) as u64).unwrap_or(0);
    let task_state = read_kernel::<u32>(task + config!(offsets.task_state) as u64).unwrap_or(0);
    let on_cpu = read_kernel::<i32>(task + config!(offsets.task_on_cpu) as u64).unwrap_or(0);
    if let Some(mut entry) = reserve::<ThreadCapture>() {
        let rec = entry.as_mut_ptr();
        // SAFETY: `rec` points at a reserved record; every field the reader looks at is
        // written here or by fill_head and copy_stack.
        unsafe {
            let head = &raw mut (*rec).head;
            fill_head::<true>(
                head,
                RecordKind::DumpThread,
                size_of::<ThreadCapture>(),
                pid,
                tid,
                task,
            );
            (*head).signo = 0;
            (*head).si_code = 0;
            (*head).si_errno = 0;
            (*head).si_addr = 0;
            (*head).si_pid = 0;
            (*head).si_uid = 0;
            (*head).handler_kind = 0;
            (*head).handler = 0;
            (*head).sa_flags = 0;
            (*head).task_state = task_state;
            if on_cpu != 0 {
                (*head).flags |= CAPTURE_ON_CPU;
            }
            (*head).process_comm = process_comm(task);
            (*head).exe_name = [0; EXE_NAME_LEN];
            read_exe_name(task, &mut (*head).exe_name);
            (*head).sender_pid = 0;
            (*head).sender_uid = 0;
            (*head).sender_comm = [0; TASK_COMM_LEN];
            (*head).top_start = 0;
            (*head).top_len = 0;
            (*head).top_offset = 0;
            let flags = copy_stack::<{ THREAD_STACK_BYTES / STACK_CHUNK }, true>(
                head,
                (*rec).stack.as_mut_ptr(),
                THREAD_STACK_BYTES / STACK_CHUNK,
                task,
            );
            (*head).flags |= flags;
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

//! The capture itself: one ring-buffer record per signal, filled in place.

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{
            bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_kernel_str,
            bpf_probe_read_user, bpf_task_pt_regs,
        },
    },
    programs::BtfTracePointContext,
};
use crashtrace_common::{
    CAPTURE_HAS_SIGINFO, CAPTURE_NO_REGS, CAPTURE_SP_PAGE_SKIPPED, CAPTURE_STACK_TRUNCATED,
    EXE_NAME_LEN, HANDLER_CUSTOM, HANDLER_DEFAULT, MAX_STACK_CHUNKS, RecordHeader, RecordKind,
    STACK_CHUNK, SignalCapture, Stat, TASK_COMM_LEN, UserRegs,
};

use crate::{
    EVENTS, count,
    filter::{comm_wanted, config, pid_wanted, signal_wanted},
};

const SIG_IGN: u64 = 1;

pub fn on_signal_deliver(ctx: &BtfTracePointContext) {
    let sig: i32 = ctx.arg(0);
    if !signal_wanted(sig) {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if !pid_wanted(pid) {
        return;
    }
    // SAFETY: helper without arguments; returns the current task (BTF pointer).
    let task = unsafe { bpf_get_current_task_btf() };
    let process_comm = process_comm(task as u64);
    let mut exe_name = [0u8; EXE_NAME_LEN];
    read_exe_name(task as u64, &mut exe_name);
    if !comm_wanted(&process_comm, &exe_name) {
        return;
    }
    let ka: u64 = ctx.arg(2);
    // struct k_sigaction starts with struct sigaction { sa_handler; sa_flags; ... }.
    let disposition = read_kernel::<[u64; 2]>(ka).unwrap_or([0, 0]);
    if disposition[0] == SIG_IGN {
        // get_signal() drops ignored signals right after this tracepoint.
        return;
    }
    count(Stat::Matched);

    let Some(mut entry) = EVENTS.reserve::<SignalCapture>(0) else {
        count(Stat::RingFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved record of the right size; every field the
    // reader looks at is written below before submit.
    unsafe {
        (*rec).header = RecordHeader {
            kind: RecordKind::SignalCapture as u32,
            size: size_of::<SignalCapture>() as u32,
            ktime_ns: bpf_ktime_get_ns(),
            pid,
            tid,
        };
        (*rec).signo = sig as u32;
        (*rec).handler = disposition[0];
        (*rec).sa_flags = disposition[1];
        (*rec).handler_kind = if disposition[0] == 0 {
            HANDLER_DEFAULT
        } else {
            HANDLER_CUSTOM
        };
        (*rec)._pad0 = 0;
        (*rec)._pad1 = 0;
        (*rec).thread_comm = bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]);
        (*rec).process_comm = process_comm;
        (*rec).exe_name = exe_name;
        (*rec)._pad2 = 0;
        let parent =
            read_kernel::<u64>(task as u64 + config!(offsets.task_real_parent) as u64).unwrap_or(0);
        (*rec).parent_pid = if parent != 0 {
            read_kernel::<u32>(parent + config!(offsets.task_tgid) as u64).unwrap_or(0)
        } else {
            0
        };
        (*rec).parent_comm = if parent != 0 {
            read_kernel::<[u8; TASK_COMM_LEN]>(parent + config!(offsets.task_comm) as u64)
                .unwrap_or([0; TASK_COMM_LEN])
        } else {
            [0; TASK_COMM_LEN]
        };

        let mut flags = 0;
        // info is SEND_SIG_NOINFO (0) or SEND_SIG_PRIV (1) when there is no siginfo.
        let info: u64 = ctx.arg(1);
        let si = if info > 1 {
            flags |= CAPTURE_HAS_SIGINFO;
            read_kernel::<[u64; 3]>(info).unwrap_or([0; 3])
        } else {
            [0; 3]
        };
        (*rec).si_errno = (si[0] >> 32) as i32;
        (*rec).si_code = si[1] as i32;
        (*rec).si_addr = si[2];
        (*rec).si_pid = si[2] as u32;
        (*rec).si_uid = (si[2] >> 32) as u32;

        let regs = bpf_task_pt_regs(task) as u64;
        let rc = bpf_probe_read_kernel(
            &raw mut (*rec).regs as *mut c_void,
            size_of::<UserRegs>() as u32,
            regs as *const c_void,
        );
        if rc != 0 {
            (*rec).regs = UserRegs::default();
            flags |= CAPTURE_NO_REGS;
            count(Stat::RegsFailed);
        }
        flags |= copy_stack(rec, (*rec).regs.rsp);
        (*rec).flags = flags;
    }
    entry.submit(0);
    count(Stat::Captured);
}

/// Copies the user stack upwards from the page that holds `sp`, a page at a time, until
/// the budget is spent or a page cannot be read (the top of the stack mapping).
///
/// # Safety
/// `rec` must point at a reserved `SignalCapture`.
unsafe fn copy_stack(rec: *mut SignalCapture, sp: u64) -> u32 {
    let mut flags = 0;
    let budget = (config!(stack_bytes) as usize / STACK_CHUNK).min(MAX_STACK_CHUNKS);
    let dst = unsafe { (*rec).stack.as_mut_ptr() };
    let mut base = sp & !(STACK_CHUNK as u64 - 1);
    // Whole-page reads fail as a unit, so probe the first page alone: after a stack
    // overflow sp sits in the guard page and the frames start one page up.
    // SAFETY: dst has room for at least one chunk.
    if sp == 0 || unsafe { bpf_probe_read_user(dst as *mut c_void, 1, base as *const c_void) } != 0
    {
        base += STACK_CHUNK as u64;
        flags |= CAPTURE_SP_PAGE_SKIPPED;
    }
    let mut chunks = 0usize;
    for i in 0..MAX_STACK_CHUNKS {
        if i >= budget {
            break;
        }
        // SAFETY: i < MAX_STACK_CHUNKS keeps the chunk inside `stack`.
        let rc = unsafe {
            bpf_probe_read_user(
                dst.add(i * STACK_CHUNK) as *mut c_void,
                STACK_CHUNK as u32,
                (base + (i * STACK_CHUNK) as u64) as *const c_void,
            )
        };
        if rc != 0 {
            break;
        }
        chunks = i + 1;
    }
    if chunks == budget {
        // Say whether the budget, not the end of the stack, stopped the copy.
        let mut probe = 0u8;
        let next = base + (chunks * STACK_CHUNK) as u64;
        // SAFETY: one byte into a local.
        if unsafe { bpf_probe_read_user(&raw mut probe as *mut c_void, 1, next as *const c_void) }
            == 0
        {
            flags |= CAPTURE_STACK_TRUNCATED;
        }
    }
    unsafe {
        (*rec).stack_start = base;
        (*rec).stack_len = (chunks * STACK_CHUNK) as u32;
    }
    flags
}

/// The process name: the comm of the thread-group leader (a thread's own comm may have
/// been renamed with PR_SET_NAME).
fn process_comm(task: u64) -> [u8; TASK_COMM_LEN] {
    let leader =
        read_kernel::<u64>(task + config!(offsets.task_group_leader) as u64).unwrap_or(task);
    read_kernel::<[u8; TASK_COMM_LEN]>(leader + config!(offsets.task_comm) as u64)
        .unwrap_or([0; TASK_COMM_LEN])
}

/// Base name of the executable: `task->mm->exe_file->f_path.dentry->d_name.name`.
/// Left empty for tasks without an mm (kernel threads, late in exit).
fn read_exe_name(task: u64, out: &mut [u8; EXE_NAME_LEN]) {
    let Some(mm) = read_kernel::<u64>(task + config!(offsets.task_mm) as u64) else {
        return;
    };
    if mm == 0 {
        return;
    }
    let Some(file) = read_kernel::<u64>(mm + config!(offsets.mm_exe_file) as u64) else {
        return;
    };
    if file == 0 {
        return;
    }
    let Some(dentry) = read_kernel::<u64>(file + config!(offsets.file_dentry) as u64) else {
        return;
    };
    let Some(name) = read_kernel::<u64>(dentry + config!(offsets.dentry_name) as u64) else {
        return;
    };
    // SAFETY: bounded copy into `out`; the helper NUL-terminates.
    unsafe {
        bpf_probe_read_kernel_str(
            out.as_mut_ptr() as *mut c_void,
            EXE_NAME_LEN as u32,
            name as *const c_void,
        )
    };
}

fn read_kernel<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const T).ok() }
}

//! Filling a capture record in place: header, identity, registers, code bytes, siginfo
//! and the user stack.

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs},
    },
};
use crashtrace_common::{
    CAPTURE_HAS_CODE, CAPTURE_HAS_SIGINFO, CAPTURE_NO_REGS, CAPTURE_SP_PAGE_SKIPPED,
    CAPTURE_STACK_TRUNCATED, CODE_BYTES, CaptureHead, HANDLER_CUSTOM, HANDLER_DEFAULT,
    RecordHeader, RecordKind, STACK_CHUNK, Stat, THREAD_STACK_BYTES, TOP_STACK_BYTES,
    ThreadCapture, UserRegs, top_bytes,
};

use super::faultmaps::mapping_end;
use crate::{
    helpers::{count, read_kernel, read_kernel_or_zero},
    maps::config,
    task::{ns_nr, process_comm},
    user::read_raw,
};

/// `info` values that are not pointers: SEND_SIG_NOINFO (0) and SEND_SIG_PRIV (1).
pub(super) const NOT_A_SIGINFO: u64 = 1;

/// Header, thread identity, registers and code bytes. `O`: `task` is not the current
/// task (the dump iterator; see `user`).
///
/// # Safety
/// `head` must point at a reserved record.
// Inlined: a BPF call takes at most five arguments.
#[inline(always)]
pub unsafe fn fill_head<const O: bool>(
    head: *mut CaptureHead,
    kind: RecordKind,
    size: usize,
    pid: u32,
    tid: u32,
    task: u64,
) {
    // SAFETY: the caller passes a reserved record (see # Safety).
    unsafe {
        (*head).header = RecordHeader {
            kind: kind as u32,
            size: size as u32,
            ktime_ns: bpf_ktime_get_ns(),
            pid,
            tid,
        };
        (*head)._pad0 = 0;
        (*head)._pad1 = 0;
        (*head).task_state = 0;
        (*head).flags = 0;
        (*head).thread_comm = read_kernel_or_zero(task + config!(offsets.task_comm) as u64);
        (*head).ns_tid = ns_nr(task);
        let leader =
            read_kernel::<u64>(task + config!(offsets.task_group_leader) as u64).unwrap_or(task);
        (*head).ns_pid = ns_nr(leader);
        // A dump reads the cgroup from /proc: the process is alive.
        (*head).cgroup_id = if O {
            0
        } else {
            aya_ebpf::helpers::bpf_get_current_cgroup_id()
        };
        let parent = read_kernel_or_zero::<u64>(task + config!(offsets.task_real_parent) as u64);
        (*head).parent_pid = if parent != 0 {
            read_kernel_or_zero::<u32>(parent + config!(offsets.task_tgid) as u64)
        } else {
            0
        };
        // Zeros without a parent (the read at a small address fails).
        (*head).parent_comm = read_kernel_or_zero(parent + config!(offsets.task_comm) as u64);
        let regs = bpf_task_pt_regs(task as *mut _) as u64;
        let rc = bpf_probe_read_kernel(
            &raw mut (*head).regs as *mut c_void,
            size_of::<UserRegs>() as u32,
            regs as *const c_void,
        );
        // A failed read left them zero.
        if rc != 0 {
            (*head).flags |= CAPTURE_NO_REGS;
            count(Stat::RegsFailed);
        }
        let rc = read_raw::<O>(
            (*head).code.as_mut_ptr(),
            CODE_BYTES as u32,
            (*head).regs.rip,
            task,
        );
        if rc == 0 {
            (*head).flags |= CAPTURE_HAS_CODE;
        }
    }
}

/// The signal, its siginfo and the disposition in force.
///
/// # Safety
/// `head` must point at a reserved record.
#[inline(always)]
pub unsafe fn fill_signal(head: *mut CaptureHead, sig: i32, info: u64, disposition: [u64; 2]) {
    // SAFETY: as for fill_head.
    unsafe {
        (*head).signo = sig as u32;
        (*head).handler = disposition[0];
        (*head).sa_flags = disposition[1];
        (*head).handler_kind = if disposition[0] == 0 {
            HANDLER_DEFAULT
        } else {
            HANDLER_CUSTOM
        };
        let si = if info > NOT_A_SIGINFO {
            (*head).flags |= CAPTURE_HAS_SIGINFO;
            read_kernel_or_zero::<[u64; 3]>(info)
        } else {
            [0; 3]
        };
        (*head).si_errno = (si[0] >> 32) as i32;
        (*head).si_code = si[1] as i32;
        (*head).si_addr = si[2];
        (*head).si_pid = si[2] as u32;
        (*head).si_uid = (si[2] >> 32) as u32;
    }
}

/// A whole ThreadCapture but its exe name: another thread of a crashing process, in its
/// own context (`sig` SIGKILL), or a thread `crashtrace dump` reads (`O`, `sig` 0).
///
/// # Safety
/// `rec` must point at a reserved ThreadCapture.
#[inline(always)]
pub unsafe fn fill_thread<const O: bool>(
    rec: *mut ThreadCapture,
    kind: RecordKind,
    sig: i32,
    pid: u32,
    tid: u32,
    task: u64,
) {
    // SAFETY: the caller passes a reserved record (see # Safety).
    unsafe {
        let head = &raw mut (*rec).head;
        fill_head::<O>(head, kind, size_of::<ThreadCapture>(), pid, tid, task);
        fill_signal(head, sig, 0, [0, 0]);
        (*head).process_comm = process_comm(task);
        (*head).exe_name = read_kernel_or_zero(0);
        (*head).sender_pid = 0;
        (*head).sender_uid = 0;
        (*head).sender_comm = read_kernel_or_zero(0);
        (*head).top_start = 0;
        (*head).top_len = 0;
        (*head).top_offset = 0;
        let flags = copy_stack::<{ THREAD_STACK_BYTES / STACK_CHUNK }, O>(
            head,
            (*rec).stack.as_mut_ptr(),
            THREAD_STACK_BYTES / STACK_CHUNK,
            task,
        );
        (*head).flags |= flags;
    }
}

/// Copies the user stack upwards from the page that holds `sp`, a page at a time, until
/// the budget is spent or a page cannot be read (the top of the stack mapping).
/// `CHUNKS` is the record's capacity: the verifier needs it constant.
///
/// # Safety
/// `head` must point at a reserved record whose stack area, at `dst`, holds `CHUNKS` pages.
#[inline(always)]
pub unsafe fn copy_stack<const CHUNKS: usize, const O: bool>(
    head: *mut CaptureHead,
    dst: *mut u8,
    budget: usize,
    task: u64,
) -> u32 {
    let mut flags = 0;
    // SAFETY: the caller passes a reserved record (see # Safety).
    let sp = unsafe { (*head).regs.rsp };
    let budget = budget.min(CHUNKS);
    let mut base = sp & !(STACK_CHUNK as u64 - 1);
    // Whole-page reads fail as a unit, so probe the first page alone: after a stack
    // overflow sp sits in the guard page and the frames start one page up.
    // SAFETY: dst has room for at least one chunk.
    if sp == 0 || unsafe { read_raw::<O>(dst, 1, base, task) } != 0 {
        base += STACK_CHUNK as u64;
        flags |= CAPTURE_SP_PAGE_SKIPPED;
    }
    let mut chunks = 0usize;
    for i in 0..CHUNKS {
        if i >= budget {
            break;
        }
        // SAFETY: i < CHUNKS keeps the chunk inside the record.
        let rc = unsafe {
            read_raw::<O>(
                dst.add(i * STACK_CHUNK),
                STACK_CHUNK as u32,
                base + (i * STACK_CHUNK) as u64,
                task,
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
        if unsafe { read_raw::<O>(&raw mut probe, 1, next, task) } == 0 {
            flags |= CAPTURE_STACK_TRUNCATED;
        }
    }
    // SAFETY: as above.
    unsafe {
        (*head).stack_start = base;
        (*head).stack_len = (chunks * STACK_CHUNK) as u32;
    }
    flags
}

/// Copies the top of the stack mapping (`top_bytes` of the class) into the last part of
/// the stack area, which holds `CHUNKS` pages; the innermost copy is cut short of it.
/// `head.stack_start` is the lowest readable stack page.
///
/// # Safety
/// `dst` must be the stack area of a reserved SignalCapture<CHUNKS>.
#[inline(never)]
pub unsafe fn copy_stack_top<const CHUNKS: usize>(task: u64, head: *mut CaptureHead, dst: *mut u8) {
    let top = top_bytes(CHUNKS * STACK_CHUNK);
    let at = CHUNKS * STACK_CHUNK - top;
    // SAFETY: the caller passes a reserved record (see # Safety).
    let end = mapping_end(task, unsafe { (*head).stack_start });
    if end < top as u64 {
        return;
    }
    let start = end - top as u64;
    let mut len = 0u32;
    for i in 0..TOP_STACK_BYTES / STACK_CHUNK {
        if i * STACK_CHUNK >= top {
            break;
        }
        // SAFETY: the chunk lies in the last `top` bytes of the stack area.
        let rc = unsafe {
            bpf_probe_read_user(
                dst.add(at + i * STACK_CHUNK) as *mut c_void,
                STACK_CHUNK as u32,
                (start + (i * STACK_CHUNK) as u64) as *const c_void,
            )
        };
        if rc != 0 {
            break;
        }
        len += STACK_CHUNK as u32;
    }
    if len == 0 {
        return;
    }
    // SAFETY: as above. The innermost copy now ends where the top begins.
    unsafe {
        (*head).top_start = start;
        (*head).top_len = len;
        (*head).top_offset = at as u32;
        if (*head).stack_len > at as u32 {
            (*head).stack_len = at as u32;
            (*head).flags |= CAPTURE_STACK_TRUNCATED;
        }
    }
}

//! The captures: one ring-buffer record per thread, filled in place.

use core::intrinsics::AtomicOrdering;

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
    CAPTURE_HAS_CODE, CAPTURE_HAS_SIGINFO, CAPTURE_NO_REGS, CAPTURE_SP_PAGE_SKIPPED,
    CAPTURE_STACK_TRUNCATED, CODE_BYTES, CaptureHead, CrashState, EXE_NAME_LEN, HANDLER_CUSTOM,
    HANDLER_DEFAULT, MAX_STACK_BYTES, MAX_THREADS_PER_CRASH, RecordHeader, RecordKind, STACK_CHUNK,
    Sender, SignalCapture, Stat, TASK_COMM_LEN, THREAD_STACK_BYTES, TOP_STACK_BYTES, ThreadCapture,
    UserRegs,
};

use crate::{
    CRASHED, EVENTS, OOMED, SENDERS, count,
    exit::usage_of_signal,
    filter::{comm_wanted, config, kill_wanted, pid_wanted, signal_wanted},
};

const SIG_IGN: u64 = 1;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
/// A fault this close below sp is the stack growing into its guard gap (a call's push).
const PUSH_BELOW_SP: u64 = 64;
/// `info` values that are not pointers: SEND_SIG_NOINFO (0) and SEND_SIG_PRIV (1).
const NOT_A_SIGINFO: u64 = 1;

/// How long a recorded sender stays attributable to the delivery that follows.
const SENDER_TTL_NS: u64 = 5_000_000_000;

/// In the sender's context: remember who sent a signal of interest to another process.
pub fn on_signal_generate(ctx: &BtfTracePointContext) {
    let sig: i32 = ctx.arg(0);
    let result: i32 = ctx.arg(4);
    // TRACE_SIGNAL_DELIVERED is 0; ignored or already pending signals change nothing.
    if result != 0 || !(signal_wanted(sig) || kill_wanted(sig)) {
        return;
    }
    let task: u64 = ctx.arg(2);
    // SAFETY: helper without arguments.
    let current = unsafe { bpf_get_current_task_btf() } as u64;
    if task == current {
        // Faults, raise() and abort(): the thread itself; the common case, decided
        // without reading the target.
        return;
    }
    let Some(target) = read_kernel::<u32>(task + config!(offsets.task_tgid) as u64) else {
        return;
    };
    let me = (bpf_get_current_pid_tgid() >> 32) as u32;
    if target == me {
        // Another thread of the same process.
        return;
    }
    let sender = Sender {
        // SAFETY: helper without arguments.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        signo: sig as u32,
        pid: me,
        uid: task_uid(current),
        _pad: 0,
        comm: process_comm(current),
    };
    let _ = SENDERS.insert(target, sender, 0);
}

fn task_uid(task: u64) -> u32 {
    let cred = read_kernel::<u64>(task + config!(offsets.task_cred) as u64).unwrap_or(0);
    if cred == 0 {
        return 0;
    }
    read_kernel::<u32>(cred + config!(offsets.cred_uid) as u64).unwrap_or(0)
}

/// The recorded sender of `sig` to process `pid`, if recent. A pointer into the map, not
/// a copy: the BPF stack (512 bytes) is nearly full here.
fn sender_of(pid: u32, sig: i32) -> Option<*const Sender> {
    let p = SENDERS.get_ptr(pid)?;
    // SAFETY: map value pointer from a successful lookup; helper without arguments.
    let (signo, at, now) = unsafe { ((*p).signo, (*p).ktime_ns, bpf_ktime_get_ns()) };
    (signo == sig as u32 && now.saturating_sub(at) < SENDER_TTL_NS).then_some(p)
}

pub fn on_signal_deliver(ctx: &BtfTracePointContext) {
    let sig: i32 = ctx.arg(0);
    let info: u64 = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    // The process is going down (core dump or group exit): each other thread gets SIGKILL.
    // Only threads of a process that crashed are wanted; for the rest this is one lookup.
    if sig == SIGKILL
        && let Some(state) = CRASHED.get_ptr_mut(pid)
    {
        capture_sibling(ctx, state, pid, tid);
        return;
    }
    // Most signals (SIGCHLD, SIGALRM, ...) stop here.
    if sig != SIGKILL && !signal_wanted(sig) && !kill_wanted(sig) {
        return;
    }
    // A kill the process handles ends nothing: decided before any lookup. (SIGKILL
    // cannot be handled; crash signals are captured either way, for re-raise pairing.)
    if sig != SIGKILL && !signal_wanted(sig) {
        let ka: u64 = ctx.arg(2);
        if read_kernel::<u64>(ka).unwrap_or(0) != 0 {
            return;
        }
    }
    // SAFETY: helper without arguments; returns the current task (BTF pointer).
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    // A fatal signal with the default action that does not dump core (SIGTERM, SIGKILL,
    // SIGUSR1, ...) reaches every thread as SIGKILL: the signal that ended the process is
    // in signal->group_exit_code. A plain exit_group() leaves it 0 there.
    let sig = if sig == SIGKILL {
        let signal = read_kernel::<u64>(task + config!(offsets.task_signal) as u64).unwrap_or(0);
        let code = read_kernel::<u32>(signal + config!(offsets.signal_group_exit_code) as u64)
            .unwrap_or(0);
        if code & 0x7f == 0 {
            return;
        }
        (code & 0x7f) as i32
    } else {
        sig
    };
    let sender = sender_of(pid, sig);
    // An OOM kill: the OOM killer marked this process just before its SIGKILL.
    let oom = sig == SIGKILL && OOMED.get_ptr(pid).is_some();
    // A crash signal, however it was sent; a kill from another process; an OOM kill.
    let wanted = signal_wanted(sig) || (sender.is_some() && kill_wanted(sig)) || oom;
    if !wanted || !pid_wanted(pid) {
        return;
    }
    let process_comm = process_comm(task);
    let mut exe_name = [0u8; EXE_NAME_LEN];
    read_exe_name(task, &mut exe_name);
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
    if !signal_wanted(sig) && disposition[0] != 0 {
        // A kill the process handles (a graceful SIGTERM) ends nothing.
        return;
    }
    count(Stat::Matched);
    if disposition[0] == 0 {
        // The default action ends the process: follow it to its exit. Usage of the
        // threads already gone is in signal_struct now; later exits add their own.
        let state = CrashState {
            usage: usage_of_signal(task),
            ..CrashState::default()
        };
        // BPF_NOEXIST: a second fatal signal must not reset the counts.
        if CRASHED.insert(pid, state, 1).is_err() && CRASHED.get_ptr(pid).is_none() {
            count(Stat::StateFull);
        }
    }

    let Some(mut entry) = EVENTS.reserve::<SignalCapture>(0) else {
        count(Stat::RingFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved record; fill_head and copy_stack write every
    // field the reader looks at.
    unsafe {
        let head = &raw mut (*rec).head;
        fill_head(
            head,
            RecordKind::SignalCapture,
            size_of::<SignalCapture>(),
            pid,
            tid,
            task,
        );
        fill_signal(ctx, head, sig, info, disposition);
        (*head).process_comm = process_comm;
        (*head).exe_name = exe_name;
        match sender {
            Some(s) => {
                (*head).sender_pid = (*s).pid;
                (*head).sender_uid = (*s).uid;
                (*head).sender_comm = (*s).comm;
            }
            None => {
                (*head).sender_pid = 0;
                (*head).sender_uid = 0;
                (*head).sender_comm = [0; TASK_COMM_LEN];
            }
        }
        let budget = config!(stack_bytes) as usize / STACK_CHUNK;
        let flags = copy_stack::<{ MAX_STACK_BYTES / STACK_CHUNK }>(
            head,
            (*rec).stack.as_mut_ptr(),
            budget,
        );
        (*head).flags |= flags;
        (*head).top_start = 0;
        (*head).top_len = 0;
        (*head)._pad3 = 0;
        // A stack overflow: the frames that matter most (main and its callers) are at
        // the far end of the stack. Copy its top into the unused end of the record.
        // Either sp itself is in the guard gap, or sp is the lowest mapped byte and the
        // push of a call faulted just below it.
        let sp = (*head).regs.rsp;
        let fault = (*head).si_addr;
        let push_below_sp = (*head).flags & CAPTURE_HAS_SIGINFO != 0
            && sig == SIGSEGV
            && fault < sp
            && sp - fault <= PUSH_BELOW_SP;
        if (flags & CAPTURE_SP_PAGE_SKIPPED != 0 || push_below_sp)
            && budget * STACK_CHUNK + TOP_STACK_BYTES <= MAX_STACK_BYTES
        {
            copy_stack_top(task, head, (*rec).stack.as_mut_ptr());
        }
    }
    // SAFETY: the record is still ours until submit.
    let (addr, has_info, overflow) = unsafe {
        let h = &raw const (*rec).head;
        (
            (*h).si_addr,
            (*h).flags & CAPTURE_HAS_SIGINFO != 0,
            (*h).top_len != 0,
        )
    };
    entry.submit(0);
    count(Stat::Captured);
    crate::python::capture(task, pid, tid);
    // Fault signals carry an address in si_addr: say what it hit. (After an overflow the
    // one mapping lookup an event allows went to the stack.)
    if has_info && fault_signal(sig) && !overflow {
        crate::faultmaps::emit(task, pid, tid, addr);
    }
}

fn fault_signal(sig: i32) -> bool {
    // SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGSEGV
    matches!(sig, 4 | 5 | 7 | 8 | 11)
}

/// Another thread of a crashing process, stopped by the group exit in its own context.
fn capture_sibling(ctx: &BtfTracePointContext, state: *mut CrashState, pid: u32, tid: u32) {
    // SAFETY: map value pointer from a successful lookup; counters are per process, and
    // its threads run this one after another or on other CPUs: use atomics.
    // The count is read back after the add: the fetching form needs BPF cpu v3, and a
    // race at the limit only moves it by a thread or two.
    let captured = unsafe {
        atomic_add32(&raw mut (*state).threads_captured, 1);
        core::ptr::read_volatile(&raw const (*state).threads_captured)
    };
    if captured > MAX_THREADS_PER_CRASH {
        unsafe { atomic_add32(&raw mut (*state).threads_skipped, 1) };
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ThreadCapture>(0) else {
        unsafe { atomic_add32(&raw mut (*state).threads_lost, 1) };
        count(Stat::RingFull);
        return;
    };
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    let rec = entry.as_mut_ptr();
    // SAFETY: as in on_signal_deliver.
    unsafe {
        let head = &raw mut (*rec).head;
        fill_head(
            head,
            RecordKind::ThreadCapture,
            size_of::<ThreadCapture>(),
            pid,
            tid,
            task,
        );
        fill_signal(ctx, head, SIGKILL, 0, [0, 0]);
        (*head).process_comm = process_comm(task);
        (*head).exe_name = [0; EXE_NAME_LEN];
        (*head).sender_pid = 0;
        (*head).sender_uid = 0;
        (*head).sender_comm = [0; TASK_COMM_LEN];
        (*head).top_start = 0;
        (*head).top_len = 0;
        (*head)._pad3 = 0;
        let flags = copy_stack::<{ THREAD_STACK_BYTES / STACK_CHUNK }>(
            head,
            (*rec).stack.as_mut_ptr(),
            THREAD_STACK_BYTES / STACK_CHUNK,
        );
        (*head).flags |= flags;
    }
    entry.submit(0);
    count(Stat::ThreadsCaptured);
}

/// Header, thread identity, registers and code bytes.
///
/// # Safety
/// `head` must point at a reserved record.
// Inlined: a BPF call takes at most five arguments.
#[inline(always)]
unsafe fn fill_head(
    head: *mut CaptureHead,
    kind: RecordKind,
    size: usize,
    pid: u32,
    tid: u32,
    task: u64,
) {
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
        (*head)._pad2 = 0;
        (*head).flags = 0;
        (*head).thread_comm = bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]);
        (*head).ns_tid = ns_nr(task);
        let leader =
            read_kernel::<u64>(task + config!(offsets.task_group_leader) as u64).unwrap_or(task);
        (*head).ns_pid = ns_nr(leader);
        (*head).cgroup_id = aya_ebpf::helpers::bpf_get_current_cgroup_id();
        let parent =
            read_kernel::<u64>(task + config!(offsets.task_real_parent) as u64).unwrap_or(0);
        (*head).parent_pid = if parent != 0 {
            read_kernel::<u32>(parent + config!(offsets.task_tgid) as u64).unwrap_or(0)
        } else {
            0
        };
        (*head).parent_comm = if parent != 0 {
            read_kernel::<[u8; TASK_COMM_LEN]>(parent + config!(offsets.task_comm) as u64)
                .unwrap_or([0; TASK_COMM_LEN])
        } else {
            [0; TASK_COMM_LEN]
        };
        let regs = bpf_task_pt_regs(task as *mut _) as u64;
        let rc = bpf_probe_read_kernel(
            &raw mut (*head).regs as *mut c_void,
            size_of::<UserRegs>() as u32,
            regs as *const c_void,
        );
        if rc != 0 {
            (*head).regs = UserRegs::default();
            (*head).flags |= CAPTURE_NO_REGS;
            count(Stat::RegsFailed);
        }
        let rc = bpf_probe_read_user(
            (*head).code.as_mut_ptr() as *mut c_void,
            CODE_BYTES as u32,
            (*head).regs.rip as *const c_void,
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
unsafe fn fill_signal(
    _ctx: &BtfTracePointContext,
    head: *mut CaptureHead,
    sig: i32,
    info: u64,
    disposition: [u64; 2],
) {
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
            read_kernel::<[u64; 3]>(info).unwrap_or([0; 3])
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

/// Copies the user stack upwards from the page that holds `sp`, a page at a time, until
/// the budget is spent or a page cannot be read (the top of the stack mapping).
/// `CHUNKS` is the record's capacity: the verifier needs it constant.
///
/// # Safety
/// `head` must point at a reserved record whose stack area, at `dst`, holds `CHUNKS` pages.
#[inline(always)]
unsafe fn copy_stack<const CHUNKS: usize>(
    head: *mut CaptureHead,
    dst: *mut u8,
    budget: usize,
) -> u32 {
    let mut flags = 0;
    let sp = unsafe { (*head).regs.rsp };
    let budget = budget.min(CHUNKS);
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
    for i in 0..CHUNKS {
        if i >= budget {
            break;
        }
        // SAFETY: i < CHUNKS keeps the chunk inside the record.
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
        (*head).stack_start = base;
        (*head).stack_len = (chunks * STACK_CHUNK) as u32;
    }
    flags
}

/// The task's id in its own (innermost) pid namespace: `thread_pid->numbers[level].nr`.
fn ns_nr(task: u64) -> u32 {
    let pid = read_kernel::<u64>(task + config!(offsets.task_thread_pid) as u64).unwrap_or(0);
    if pid == 0 {
        return 0;
    }
    // Nesting is at most 32 levels (MAX_PID_NS_LEVEL); the mask keeps the verifier sure.
    let level = read_kernel::<u32>(pid + config!(offsets.pid_level) as u64).unwrap_or(0) & 31;
    let off =
        config!(offsets.pid_numbers_nr) as u64 + level as u64 * config!(offsets.upid_size) as u64;
    read_kernel::<u32>(pid + off).unwrap_or(0)
}

/// Copies the top TOP_STACK_BYTES of the stack mapping into the last part of the stack
/// area. `head.stack_start` is the lowest readable stack page.
///
/// # Safety
/// `dst` must be the stack area of a reserved SignalCapture.
#[inline(never)]
unsafe fn copy_stack_top(task: u64, head: *mut CaptureHead, dst: *mut u8) {
    let end = crate::faultmaps::mapping_end(task, unsafe { (*head).stack_start });
    if end < TOP_STACK_BYTES as u64 {
        return;
    }
    let start = end - TOP_STACK_BYTES as u64;
    let mut len = 0u32;
    for i in 0..TOP_STACK_BYTES / STACK_CHUNK {
        // SAFETY: the chunk lies in the last TOP_STACK_BYTES of the stack area.
        let rc = unsafe {
            bpf_probe_read_user(
                dst.add(MAX_STACK_BYTES - TOP_STACK_BYTES + i * STACK_CHUNK) as *mut c_void,
                STACK_CHUNK as u32,
                (start + (i * STACK_CHUNK) as u64) as *const c_void,
            )
        };
        if rc != 0 {
            break;
        }
        len += STACK_CHUNK as u32;
    }
    unsafe {
        (*head).top_start = start;
        (*head).top_len = len;
    }
}

/// The process name: the comm of the thread-group leader (a thread's own comm may have
/// been renamed with PR_SET_NAME).
pub fn process_comm(task: u64) -> [u8; TASK_COMM_LEN] {
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

pub fn read_kernel<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const T).ok() }
}

/// Atomic add on a map value field (the result is unused: see capture_sibling).
///
/// # Safety
/// `p` must point into a map value.
pub unsafe fn atomic_add32(p: *mut u32, v: u32) {
    // The BPF target has no core::sync::atomic types; the intrinsic lowers to BPF_XADD.
    unsafe { core::intrinsics::atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, v) };
}

/// # Safety
/// `p` must point into a map value.
pub unsafe fn atomic_add64(p: *mut u64, v: u64) {
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

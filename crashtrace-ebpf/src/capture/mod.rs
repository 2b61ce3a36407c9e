//! The signal programs: who sent a signal (`signal_generate`), and the captures where it
//! lands (`signal_deliver`): one ring-buffer record per thread, filled in place.

pub mod dump;
mod faultmaps;
mod memory;
mod python;
mod record;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_get_current_task_btf},
    programs::BtfTracePointContext,
};
use crashtrace_common::{
    CAPTURE_HAS_SIGINFO, CAPTURE_SP_PAGE_SKIPPED, CrashState, EXE_NAME_LEN, HANDLED_PER_WINDOW,
    HANDLED_WINDOW_NS, HandledRate, MAX_THREADS_PER_CRASH, RecordKind, STACK_CHUNK, Sender,
    SignalCapture, Stat, ThreadCapture,
};

use crate::{
    filter::{comm_wanted, kill_wanted, never_wanted, pid_wanted, signal_wanted},
    helpers::{atomic_add32, btf_field, count, read_kernel, read_kernel_or_zero, reserve},
    maps::{CRASHED, HANDLED, OOMED, SENDERS, config},
    task::{
        process_comm, process_comm_words, process_start, read_exe_name, task_uid, usage_of_signal,
    },
};
use record::{NOT_A_SIGINFO, copy_stack, copy_stack_top, fill_head, fill_signal, fill_thread};

/// Offset of si_code in struct kernel_siginfo (after si_signo and si_errno).
const SI_CODE_OFFSET: u64 = 8;

const SIG_IGN: u64 = 1;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
/// A fault this close below sp is the stack growing into its guard gap (a call's push).
const PUSH_BELOW_SP: u64 = 64;

/// How long a recorded sender stays attributable to the delivery that follows.
const SENDER_TTL_NS: u64 = 5_000_000_000;

/// In the sender's context: remember who sent a signal of interest to another process.
/// The tests that reject nearly every signal (SIGCHLD at each exit, a process signalling
/// itself) are all the entry program holds: the rest is a subprogram, its own JIT image,
/// whose code a rejected event never touches (a cold event's cost is mostly the code it
/// runs through).
#[inline(always)]
pub fn on_signal_generate(ctx: &BtfTracePointContext) {
    let sig: i32 = ctx.arg(0);
    let result: i32 = ctx.arg(4);
    // TRACE_SIGNAL_DELIVERED is 0; ignored or already pending signals change nothing.
    if never_wanted(sig) || result != 0 || !(signal_wanted(sig) || kill_wanted(sig)) {
        return;
    }
    let task: u64 = ctx.arg(2);
    // SAFETY: helper without arguments.
    let current = unsafe { bpf_get_current_task_btf() } as u64;
    if task == current {
        // Faults, raise() and abort(): the thread itself, decided without reading the
        // target.
        return;
    }
    signal_generated(sig, task, current);
}

#[inline(never)]
fn signal_generated(sig: i32, task: u64, current: u64) {
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

/// The recorded sender of `sig` to process `pid`, if recent. A pointer into the map, not
/// a copy: the BPF stack (512 bytes) is nearly full here.
fn sender_of(pid: u32, sig: i32) -> Option<*const Sender> {
    let p = SENDERS.get_ptr(pid)?;
    // SAFETY: map value pointer from a successful lookup; helper without arguments.
    let (signo, at, now) = unsafe { ((*p).signo, (*p).ktime_ns, bpf_ktime_get_ns()) };
    (signo == sig as u32 && now.saturating_sub(at) < SENDER_TTL_NS).then_some(p)
}

/// Whether another capture of a signal process `pid` handles fits its rate.
fn handled_allowed(task: u64, pid: u32) -> bool {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let start_ns = process_start(task);
    match HANDLED.get_ptr_mut(pid) {
        // SAFETY: map value pointer from a successful lookup; a race between two threads
        // of one process can only let one capture more through. An entry of an earlier
        // process with this pid (it exited normally) starts afresh.
        Some(r) if unsafe { (*r).start_ns } == start_ns => unsafe {
            if now.saturating_sub((*r).window_start_ns) >= HANDLED_WINDOW_NS {
                (*r).window_start_ns = now;
                (*r).count = 1;
            } else if (*r).count < HANDLED_PER_WINDOW {
                (*r).count += 1;
            } else {
                return false;
            }
            (*r).last_ns = now;
            true
        },
        _ => {
            let r = HandledRate {
                window_start_ns: now,
                count: 1,
                _pad: 0,
                last_ns: now,
                start_ns,
            };
            let _ = HANDLED.insert(pid, r, 0);
            true
        }
    }
}

/// `CHUNKS`: the record's stack capacity in pages, one program per class (see
/// `STACK_CLASSES`).
///
/// As for `on_signal_generate`, the entry holds the constant test, and past it the two
/// calls of a capture (see `after_capture`).
#[inline(always)]
pub fn on_signal_deliver<const CHUNKS: usize>(ctx: &BtfTracePointContext) {
    let sig: i32 = ctx.arg(0);
    if !delivery_rejected(ctx, sig)
        && let Some(c) = signal_delivered::<CHUNKS>(ctx, sig)
    {
        after_capture(&c);
    }
}

/// The tests that end nearly every delivery, with plain loads of BTF-typed fields and at
/// most one helper call. The mask tests read `CONFIG`, constants to the verifier, which
/// drops the branches they decide.
#[inline(always)]
fn delivery_rejected(ctx: &BtfTracePointContext, sig: i32) -> bool {
    if never_wanted(sig) {
        return true;
    }
    if sig == SIGKILL {
        // Every other thread of a process that calls exit_group() gets a SIGKILL here;
        // only a group exit by a signal (a crash, a kill) leaves one in the exit code.
        // SAFETY: helper without arguments; returns the current task (BTF pointer).
        let task = unsafe { bpf_get_current_task_btf() } as u64;
        let signal = btf_field::<u64>(task, config!(offsets.task_signal));
        let code = btf_field::<u32>(signal, config!(offsets.signal_group_exit_code));
        return code & 0x7f == 0;
    }
    if signal_wanted(sig) {
        return false;
    }
    // A kill the process handles (a graceful SIGTERM, a SIGUSR1 handler) ends nothing.
    // struct k_sigaction starts with struct sigaction { sa_handler; ... }.
    !kill_wanted(sig) || btf_field::<u64>(ctx.arg(2), 0) != 0
}

/// What the records that follow a capture need from it.
struct Captured {
    task: u64,
    pid: u32,
    tid: u32,
    sig: i32,
    rip: u64,
    /// The faulting address to look up, or None.
    fault_addr: Option<u64>,
}

/// The Python stacks, the process's memory, the faulting mapping. Called from the entry
/// program, not from `signal_delivered`. Verifier workaround: 6.1 and 6.12 (not 6.18) cap
/// the stack of a whole call chain at 512 bytes, and `signal_delivered`'s frame alone is
/// over 200.
#[inline(never)]
fn after_capture(c: &Captured) {
    // Off on a kernel without bpf_loop and bpf_find_vma: a known constant, so its
    // verifier skips what follows and never sees the helpers it lacks.
    if config!(extras) == 0 {
        return;
    }
    python::capture::<false>(c.task, c.pid, c.tid);
    memory::emit(c.task, c.pid, c.tid, c.sig, c.rip);
    if let Some(addr) = c.fault_addr {
        faultmaps::emit(c.task, c.pid, c.tid, addr);
    }
}

/// The capture of the signalled thread; None for a signal not captured.
#[inline(never)]
fn signal_delivered<const CHUNKS: usize>(ctx: &BtfTracePointContext, sig: i32) -> Option<Captured> {
    let info: u64 = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    // The process is going down by a signal (core dump or group exit): each other thread
    // gets SIGKILL. Only threads of a process that crashed are wanted; for a kill this is
    // one lookup.
    if sig == SIGKILL
        && let Some(state) = CRASHED.get_ptr_mut(pid)
    {
        capture_sibling(state, pid, tid);
        return None;
    }
    // Signals no mask wants and kills the process handles ended in `delivery_rejected`.
    // SAFETY: helper without arguments; returns the current task (BTF pointer).
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    // A fatal signal with the default action that does not dump core (SIGTERM, SIGKILL,
    // SIGUSR1, ...) reaches every thread as SIGKILL: the signal that ended the process is
    // in signal->group_exit_code. A plain exit_group() leaves it 0 there.
    let sig = if sig == SIGKILL {
        let signal = read_kernel_or_zero::<u64>(task + config!(offsets.task_signal) as u64);
        let code =
            read_kernel_or_zero::<u32>(signal + config!(offsets.signal_group_exit_code) as u64);
        if code & 0x7f == 0 {
            return None;
        }
        (code & 0x7f) as i32
    } else {
        sig
    };
    // Only a signal another process sent has a sender: a fault the kernel raised
    // (si_code > 0) is never attributed to an earlier kill of the same number.
    let user_sent = info <= NOT_A_SIGINFO
        || read_kernel::<i32>(info + SI_CODE_OFFSET).is_some_and(|code| code <= 0);
    let sender = if user_sent { sender_of(pid, sig) } else { None };
    // An OOM kill: the OOM killer marked this process just before its SIGKILL.
    let oom = sig == SIGKILL && OOMED.get_ptr(pid).is_some();
    // A crash signal, however it was sent; a kill from another process; an OOM kill.
    let wanted = signal_wanted(sig) || (sender.is_some() && kill_wanted(sig)) || oom;
    if !wanted || !pid_wanted(pid) {
        return None;
    }
    if !names_wanted(task) {
        return None;
    }
    let ka: u64 = ctx.arg(2);
    // struct k_sigaction starts with struct sigaction { sa_handler; sa_flags; ... }.
    let disposition = read_kernel::<[u64; 2]>(ka).unwrap_or([0, 0]);
    if disposition[0] == SIG_IGN {
        // get_signal() drops ignored signals right after this tracepoint.
        return None;
    }
    if !signal_wanted(sig) && disposition[0] != 0 {
        // A kill the process handles (a graceful SIGTERM) ends nothing.
        return None;
    }
    count(Stat::Matched);
    if disposition[0] != 0 && !handled_allowed(task, pid) {
        count(Stat::HandledLimited);
        return None;
    }
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

    let mut entry = reserve::<SignalCapture<CHUNKS>>()?;
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved record; fill_head and copy_stack write every
    // field the reader looks at.
    unsafe {
        let head = &raw mut (*rec).head;
        fill_head::<false>(
            head,
            RecordKind::SignalCapture,
            size_of::<SignalCapture<CHUNKS>>(),
            pid,
            tid,
            task,
        );
        fill_signal(head, sig, info, disposition);
        // Read again, straight into the record: copies held from the filter would take
        // stack (see `names_wanted`).
        (*head).process_comm = process_comm(task);
        read_exe_name(task, &raw mut (*head).exe_name);
        let (sender_pid, sender_uid, sender_comm) = match sender {
            Some(s) => ((*s).pid, (*s).uid, &raw const (*s).comm as u64),
            None => (0, 0, 0),
        };
        (*head).sender_pid = sender_pid;
        (*head).sender_uid = sender_uid;
        // Zeros without a sender (address 0).
        (*head).sender_comm = read_kernel_or_zero(sender_comm);
        let budget = config!(stack_bytes) as usize / STACK_CHUNK;
        let area = (*rec).stack.as_mut_ptr() as *mut u8;
        let flags = copy_stack::<CHUNKS, false>(head, area, budget, task);
        (*head).flags |= flags;
        (*head).top_start = 0;
        (*head).top_len = 0;
        (*head).top_offset = 0;
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
        // (bpf_find_vma: only with the extras, see `after_capture`.)
        if config!(extras) != 0 && (flags & CAPTURE_SP_PAGE_SKIPPED != 0 || push_below_sp) {
            copy_stack_top::<CHUNKS>(task, head, area);
        }
    }
    // SAFETY: the record is still ours until submit.
    let (addr, si_code, has_info, overflow, rip) = unsafe {
        let h = &raw const (*rec).head;
        (
            (*h).si_addr,
            (*h).si_code,
            (*h).flags & CAPTURE_HAS_SIGINFO != 0,
            (*h).top_len != 0,
            (*h).regs.rip,
        )
    };
    entry.submit(0);
    count(Stat::Captured);
    if sender.is_some() {
        // Used once: a later signal of the same number is not this sender's.
        let _ = SENDERS.remove(pid);
    }
    // Fault signals carry an address in si_addr: say what it hit. (After an overflow the
    // one mapping lookup an event allows went to the stack.)
    // Only a fault the kernel raised has an address: a handler's re-raise (SI_TKILL, si_code
    // < 0) carries a pid there, and its lookup must not replace the original fault's.
    let fault_addr = (has_info && fault_signal(sig) && si_code > 0 && !overflow).then_some(addr);
    Some(Captured {
        task,
        pid,
        tid,
        sig,
        rip,
        fault_addr,
    })
}

/// `--comm` on the process and executable names. Its own frame (verifier workaround):
/// the names would otherwise sit in `signal_delivered`'s for the whole capture, past the
/// 512 bytes 6.1 and 6.12 allow a call chain (see `after_capture`).
#[inline(never)]
fn names_wanted(task: u64) -> bool {
    // Words, for the filter's aligned loads (see `CommPattern`).
    let mut exe = core::mem::MaybeUninit::<[u64; EXE_NAME_LEN / 8]>::uninit();
    read_exe_name(task, exe.as_mut_ptr() as *mut [u8; EXE_NAME_LEN]);
    // SAFETY: read_exe_name writes every byte.
    let exe = unsafe { exe.assume_init() };
    comm_wanted(process_comm_words(task), [exe[0], exe[1]])
}

fn fault_signal(sig: i32) -> bool {
    // SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGSEGV
    matches!(sig, 4 | 5 | 7 | 8 | 11)
}

/// Another thread of a crashing process, stopped by the group exit in its own context.
fn capture_sibling(state: *mut CrashState, pid: u32, tid: u32) {
    // SAFETY: map value pointer from a successful lookup; counters are per process, and
    // its threads run this one after another or on other CPUs: use atomics.
    // The count is read back after the add: the fetching form needs BPF cpu v3, and a
    // race at the limit only moves it by a thread or two.
    let captured = unsafe {
        atomic_add32(&raw mut (*state).threads_captured, 1);
        core::ptr::read_volatile(&raw const (*state).threads_captured)
    };
    if captured > MAX_THREADS_PER_CRASH {
        // SAFETY: map value pointer from a successful lookup.
        unsafe { atomic_add32(&raw mut (*state).threads_skipped, 1) };
        return;
    }
    let Some(mut entry) = reserve::<ThreadCapture>() else {
        // SAFETY: as above.
        unsafe { atomic_add32(&raw mut (*state).threads_lost, 1) };
        return;
    };
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    // SAFETY: `entry` is a reserved ThreadCapture.
    unsafe {
        fill_thread::<false>(
            entry.as_mut_ptr(),
            RecordKind::ThreadCapture,
            SIGKILL,
            pid,
            tid,
            task,
        )
    };
    entry.submit(0);
    count(Stat::ThreadsCaptured);
}

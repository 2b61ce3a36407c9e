//! crashtrace's eBPF side: catch fatal signals where they land and copy what the
//! user-space unwinder needs (registers, user stack) while the thread still exists.
#![no_std]
#![no_main]
// Atomic adds on map values: the BPF target has no core::sync::atomic types.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod capture;
mod exit;
mod faultmaps;
mod filter;
mod oom;
mod python;

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use crashtrace_common::{Config, CrashState, PyProc, STAT_COUNT, Sender, Stat};

/// Load-time configuration; the loader overwrites it with `EbpfLoader::set_global`.
#[unsafe(no_mangle)]
static CONFIG: Config = Config::empty();

/// Kernel-to-user records. The loader may resize it (`--ring-buffer-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Per-CPU counters, indexed by `Stat`: drops are counted here, never silent.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Processes that received a fatal signal, by process id, until their exit. LRU so a
/// lost exit can never leak an entry for good.
#[map]
static CRASHED: LruHashMap<u32, CrashState> = LruHashMap::with_max_entries(4096, 0);

/// The last signal of interest another process sent to a process, by target process id.
#[map]
static SENDERS: LruHashMap<u32, Sender> = LruHashMap::with_max_entries(4096, 0);

/// Processes the OOM killer chose, by process id: their SIGKILL is an OOM kill.
#[map]
static OOMED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);

/// Python processes, by process id: where their runtime is and its layout. Written by
/// crashtrace when it sees the interpreter mapped.
#[map]
static PYPROCS: HashMap<u32, PyProc> = HashMap::with_max_entries(16384, 0);

/// Non-PIE interpreters (Debian's /usr/bin/python3.x), by the inode of the executable:
/// their runtime has the same address in every process, so a process that crashes
/// before crashtrace has registered it is still read.
#[map]
static PYFILES: HashMap<u64, PyProc> = HashMap::with_max_entries(256, 0);

/// The Python thread record being assembled (too big for the BPF stack, and written
/// from loop callbacks), sent with one copy.
#[map]
static PY_SCRATCH: PerCpuArray<crashtrace_common::PyThread> = PerCpuArray::with_max_entries(1, 0);

/// Code objects already sent, by (process id, address): each is sent once.
#[map]
static PY_CODES_SEEN: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

fn count(stat: Stat) {
    if let Some(v) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += 1 };
    }
}

/// `signal_deliver(int sig, struct kernel_siginfo *info, struct k_sigaction *ka)` runs in
/// the receiving thread, in `get_signal()`, before any handler frame is pushed: its user
/// registers are the interrupted (faulting) context and its stack is readable.
#[btf_tracepoint(function = "signal_deliver")]
pub fn signal_deliver(ctx: BtfTracePointContext) -> i32 {
    capture::on_signal_deliver(&ctx);
    0
}

/// `signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task,
/// int group, int result)` runs in the sender: the only place to learn who sent a kill.
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate(ctx: BtfTracePointContext) -> i32 {
    capture::on_signal_generate(&ctx);
    0
}

/// `mark_victim(struct task_struct *task, uid_t uid)`: the OOM killer's choice.
#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim(ctx: BtfTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    let uid: u32 = ctx.arg(1);
    oom::on_mark_victim(task, uid);
    0
}

/// `sched_process_exit(struct task_struct *p, ...)`, in the exiting thread.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    exit::on_process_exit(task);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

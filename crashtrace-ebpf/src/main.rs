//! crashtrace's eBPF side: catch fatal signals where they land and copy what the
//! user-space unwinder needs (registers, user stack) while the thread still exists.
#![no_std]
#![no_main]
// Atomic adds on map values: the BPF target has no core::sync::atomic types.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod capture;
mod exit;
mod filter;
mod helpers;
mod maps;
mod oom;
mod task;
mod user;

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

/// `signal_deliver(int sig, struct kernel_siginfo *info, struct k_sigaction *ka)` runs in
/// the receiving thread, in `get_signal()`, before any handler frame is pushed: its user
/// registers are the interrupted (faulting) context and its stack is readable. One
/// program per stack-size class (`STACK_CLASSES`); its records hold the class's pages and
/// four more for the top of an overflowed stack. The loader attaches one.
macro_rules! signal_deliver_programs {
    ($($name:ident = $chunks:literal),+) => {$(
        #[btf_tracepoint(function = "signal_deliver")]
        pub fn $name(ctx: BtfTracePointContext) -> i32 {
            capture::on_signal_deliver::<$chunks>(&ctx);
            0
        }
    )+};
}
signal_deliver_programs!(
    signal_deliver_8k = 6,
    signal_deliver_16k = 8,
    signal_deliver_32k = 12,
    signal_deliver_64k = 20,
    signal_deliver_128k = 36
);

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

/// `crashtrace dump`: a sleepable task iterator (`iter.s/task`, which aya-ebpf has no
/// macro for). Its context is `struct bpf_iter__task { meta; task; }`; `task` is null on
/// the last call.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter.s/task")]
pub fn dump_task(ctx: *mut core::ffi::c_void) -> i32 {
    // SAFETY: the kernel passes a bpf_iter__task: two pointers.
    let task = unsafe { *(ctx as *const u64).add(1) };
    if task != 0 {
        capture::dump::on_task(task);
    }
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

//! The capture records and the per-crash state kept in the kernel.

/// Bytes kept of a mapped file's base name.
pub const VMA_NAME_LEN: usize = 64;

use crate::{
    CODE_BYTES, EXE_NAME_LEN, MAX_RECORD_STACK, RecordHeader, STACK_CHUNK, TASK_COMM_LEN,
    THREAD_STACK_BYTES,
};

/// x86-64 `struct pt_regs`, in kernel order. The layout is ABI: it is what
/// `bpf_task_pt_regs` points at and what ptrace exposes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Values of `SignalCapture::handler_kind`.
pub const HANDLER_DEFAULT: u32 = 0;
pub const HANDLER_CUSTOM: u32 = 2;

/// Bits of `SignalCapture::flags`.
/// `info` was a real siginfo (not SEND_SIG_NOINFO/SEND_SIG_PRIV): si_* fields are valid.
pub const CAPTURE_HAS_SIGINFO: u32 = 1 << 0;
/// The user registers could not be read.
pub const CAPTURE_NO_REGS: u32 = 1 << 1;
/// `code` holds the bytes at the instruction pointer.
pub const CAPTURE_HAS_CODE: u32 = 1 << 4;
/// The page holding `sp` was unreadable (e.g. `sp` is in the guard page after a stack
/// overflow); the copy starts one page higher.
pub const CAPTURE_SP_PAGE_SKIPPED: u32 = 1 << 2;
/// The copy stopped because the budget ran out, not at the end of the stack mapping.
pub const CAPTURE_STACK_TRUNCATED: u32 = 1 << 3;
/// A dumped thread was on a CPU: its registers may be from its last kernel entry and
/// its stack may have changed during the copy.
pub const CAPTURE_ON_CPU: u32 = 1 << 5;

/// Everything taken in a thread's own context when a signal reaches it, but the stack.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CaptureHead {
    pub header: RecordHeader,
    pub signo: u32,
    pub flags: u32,
    pub si_code: i32,
    pub si_errno: i32,
    /// `si_addr` for fault signals; for kill-style signals the first word of the
    /// union holds `si_pid` and `si_uid`.
    pub si_addr: u64,
    pub si_pid: u32,
    pub si_uid: u32,
    pub handler_kind: u32,
    pub _pad0: u32,
    /// `sa_handler` and `sa_flags` of the disposition in force.
    pub handler: u64,
    pub sa_flags: u64,
    /// The thread's name and the process's name (its thread-group leader's).
    pub thread_comm: [u8; TASK_COMM_LEN],
    pub process_comm: [u8; TASK_COMM_LEN],
    /// Base name of the process's executable (`mm->exe_file`), NUL-terminated.
    pub exe_name: [u8; EXE_NAME_LEN],
    /// The parent process (`real_parent`): its process id and name.
    pub parent_pid: u32,
    /// In a dump record, the task's `__state` (0: runnable); 0 in the others.
    pub task_state: u32,
    pub parent_comm: [u8; TASK_COMM_LEN],
    /// The process and thread ids inside the task's own pid namespace (a container's).
    pub ns_pid: u32,
    pub ns_tid: u32,
    /// The cgroup v2 id of the thread (0 where none): the container it runs in.
    pub cgroup_id: u64,
    /// Who sent the signal, when another process did (seen at `signal_generate`).
    pub sender_pid: u32,
    pub sender_uid: u32,
    pub sender_comm: [u8; TASK_COMM_LEN],
    pub regs: UserRegs,
    /// The bytes at `regs.rip` (valid when CAPTURE_HAS_CODE is set).
    pub code: [u8; CODE_BYTES],
    /// User address of `stack[0]`; `stack_len` bytes of the stack that follows are valid.
    pub stack_start: u64,
    pub stack_len: u32,
    pub _pad1: u32,
    /// After a stack overflow, the top of the stack, copied into the end of the stack
    /// area: user address of its first byte, how many bytes were copied (0: none), and
    /// where in the stack area they are.
    pub top_start: u64,
    pub top_len: u32,
    pub top_offset: u32,
}

/// A memory mapping as the kernel had it at the crash (`bpf_find_vma`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaInfo {
    pub start: u64,
    pub end: u64,
    /// VM_READ 0x1, VM_WRITE 0x2, VM_EXEC 0x4, VM_SHARED 0x8, VM_GROWSDOWN 0x100, ...
    pub flags: u64,
    /// File offset of `start`, in pages.
    pub pgoff: u64,
    /// 1 if found; the rest is valid only then.
    pub found: u32,
    /// 1 if a file backs the mapping: then `file_size` is its size at the fault.
    pub has_file: u32,
    /// The file's size (`i_size`) when the fault was taken: a mapping can reach past the
    /// end of a file truncated under it.
    pub file_size: u64,
    /// The file system's magic (`s_magic`); for tmpfs, its size and use in pages when
    /// the fault was taken (0: unknown).
    pub fs_magic: u64,
    pub fs_blocks: u64,
    pub fs_blocks_used: u64,
    /// Base name of the mapped file; empty for anonymous memory.
    pub name: [u8; VMA_NAME_LEN],
}

impl VmaInfo {
    /// A lookup that found nothing.
    pub const NONE: Self = Self {
        start: 0,
        end: 0,
        flags: 0,
        pgoff: 0,
        found: 0,
        has_file: 0,
        file_size: 0,
        fs_magic: 0,
        fs_blocks: 0,
        fs_blocks_used: 0,
        name: [0; VMA_NAME_LEN],
    };
}

// By hand: arrays over 32 bytes have no derived Default.
impl Default for VmaInfo {
    fn default() -> Self {
        Self::NONE
    }
}

/// The thread that received a signal of the configured set (`signal_deliver`), with room
/// for `CHUNKS` pages of stack: one record type per stack-size class, so that a ring
/// reservation (a verifier-known constant) is only as large as the copy asked for.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SignalCapture<const CHUNKS: usize = { MAX_RECORD_STACK / STACK_CHUNK }> {
    pub head: CaptureHead,
    pub stack: [[u8; STACK_CHUNK]; CHUNKS],
}

/// Another thread of a crashing process, at its own group-exit `signal_deliver`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ThreadCapture {
    pub head: CaptureHead,
    pub stack: [u8; THREAD_STACK_BYTES],
}

/// Resource use, summed over a process's threads, as getrusage() would report it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub utime_ns: u64,
    pub stime_ns: u64,
    /// Precise scheduler runtime (utime/stime are tick samples scaled to this).
    pub runtime_ns: u64,
    pub min_flt: u64,
    pub maj_flt: u64,
    pub nvcsw: u64,
    pub nivcsw: u64,
}

/// The last signal another process sent to a process, kept until it is delivered.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Sender {
    pub ktime_ns: u64,
    pub signo: u32,
    pub pid: u32,
    pub uid: u32,
    pub _pad: u32,
    pub comm: [u8; TASK_COMM_LEN],
}

/// What the fault address hit, for the crashing thread's record. One lookup only: the
/// helper's deferred mmap unlock makes a second one in the same event fail with EBUSY.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultMaps {
    pub header: RecordHeader,
    /// The mapping holding the fault address, if any.
    pub fault: VmaInfo,
}

/// A process chosen by the OOM killer, with its memory when it was chosen. The header's
/// pid/tid are the victim's; the killer is the task whose allocation failed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomVictim {
    pub header: RecordHeader,
    pub killer_pid: u32,
    pub uid: u32,
    pub killer_comm: [u8; TASK_COMM_LEN],
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub swap_kb: u64,
    /// The memory cgroup's limit and usage (0: none could be read).
    pub memcg_limit_kb: u64,
    pub memcg_usage_kb: u64,
    /// Base name of the victim's memory cgroup.
    pub memcg_name: [u8; 64],
}

/// Per-process state kept in the kernel from the crash to the exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CrashState {
    /// Threads whose exit was seen after the crash add their usage here, on top of the
    /// totals of the threads that were already gone at the crash.
    pub usage: Usage,
    pub threads_captured: u32,
    /// Threads not copied: over MAX_THREADS_PER_CRASH, or the ring buffer was full.
    pub threads_skipped: u32,
    pub threads_lost: u32,
    pub _pad: u32,
}

/// `ProcessExit::flags`: no fatal signal was seen; the process ended soon after a signal
/// it handled (a handler's `_exit(2)`), seen at its main thread's exit.
pub const EXIT_AFTER_HANDLER: u32 = 1 << 0;

/// The exit of a crashing process (its last thread, at `sched_process_exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessExit {
    pub header: RecordHeader,
    /// The wait status: terminating signal in the low 7 bits, 0x80 if a core was dumped.
    pub exit_code: u32,
    pub threads_captured: u32,
    pub threads_skipped: u32,
    pub threads_lost: u32,
    /// `EXIT_AFTER_HANDLER`, or 0.
    pub flags: u32,
    pub _pad: u32,
    /// The thread-group leader's start (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// Peak resident set size, in kilobytes.
    pub maxrss_kb: u64,
    pub usage: Usage,
}

/// Pages of the environment block a crash record holds: the block's first pages and,
/// when it is longer, its last ones (launchers such as torchrun append their variables).
pub const ENV_PAGES: usize = 8;
/// Bytes kept of glibc's last fatal message (`__abort_msg`).
pub const ABORT_MSG_BYTES: usize = 256;

/// The `LIBC_FILES` key of a file: its inode number and its device as the kernel
/// encodes `dev_t` (major << 20 | minor), so that the same inode number on another
/// file system is another key.
pub const fn file_key(dev_major: u32, dev_minor: u32, ino: u64) -> u64 {
    ino ^ ((((dev_major as u64) << 20) | dev_minor as u64) << 40)
}

/// A glibc file crashtrace has read, for the kernel side (`LIBC_FILES`, by `file_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LibcFile {
    /// `__abort_msg`'s address minus the load address of file offset 0: the variable is
    /// at `vm_start - vm_pgoff * 4096 + abort_msg_offset` for any mapping of the file.
    pub abort_msg_offset: u64,
    /// The file's size, checked against the mapped inode's (inode numbers repeat across
    /// file systems).
    pub file_size: u64,
}

/// `CrashMemory::gpu_flags`: /dev/nvidiactl, /dev/nvidia-modeset and /dev/nvidia-uvm were
/// open; more descriptors were open than were looked at (`MAX_FDS_SCANNED`).
pub const GPU_CTL: u32 = 1 << 0;
pub const GPU_MODESET: u32 = 1 << 1;
pub const GPU_UVM: u32 = 1 << 2;
pub const GPU_FDS_MORE: u32 = 1 << 3;
/// Descriptors looked at per crash for open GPU devices.
pub const MAX_FDS_SCANNED: u32 = 1024;
/// NVIDIA's character device major (`/dev/nvidia*`, but UVM's, which is dynamic).
pub const NVIDIA_MAJOR: u32 = 195;

/// `CrashMemory::flags`: a page of the environment block could not be read (paged out).
pub const MEMORY_ENV_UNREADABLE: u32 = 1 << 0;

/// Read from the crashing process's memory in its own context, right after the capture.
/// crashtrace keeps only the allowlisted variables of the environment and drops the
/// rest at once.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CrashMemoryHead {
    pub header: RecordHeader,
    /// `mm->env_start` and `mm->env_end`: the whole block, in the process's addresses.
    pub env_start: u64,
    pub env_end: u64,
    /// User addresses of the page-aligned runs copied into `env`: `head_pages` pages
    /// from `head_addr` into its start, then `tail_pages` pages from `tail_addr`.
    pub head_addr: u64,
    pub tail_addr: u64,
    pub head_pages: u32,
    pub tail_pages: u32,
    /// Bytes of `abort_msg` read, its NUL included (0: no message was set).
    pub abort_len: u32,
    pub flags: u32,
    /// NVIDIA devices open in the process: bit N for /dev/nvidiaN (N < 64), and
    /// `GPU_*` bits for the control and UVM devices; how many descriptors were looked at.
    pub gpu_minors: u64,
    pub gpu_flags: u32,
    pub fds_scanned: u32,
    pub abort_msg: [u8; ABORT_MSG_BYTES],
}

/// The record: the head, then `PAGES` pages for the environment. One record type per
/// size class (`ENV_CLASSES`), so that a process with a short environment (most) takes
/// little room in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CrashMemory<const PAGES: usize = ENV_PAGES> {
    pub head: CrashMemoryHead,
    pub env: [[u8; STACK_CHUNK]; PAGES],
}

/// The environment size classes, in pages; the largest holds a long block's first and
/// last `ENV_PAGES / 2` pages.
pub const ENV_CLASSES: [usize; 3] = [1, 2, ENV_PAGES];

// By hand, and without the bytes: the environment holds secrets no log may show.
impl core::fmt::Debug for CrashMemoryHead {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CrashMemoryHead")
            .field("header", &self.header)
            .field("env_bytes", &(self.env_end.saturating_sub(self.env_start)))
            .field("abort_len", &self.abort_len)
            .finish_non_exhaustive()
    }
}

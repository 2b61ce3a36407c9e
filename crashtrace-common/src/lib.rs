//! The one definition of every record that crosses the kernel/user boundary.
//!
//! Everything here is `#[repr(C)]`, has no implicit padding and no `bool`, so the
//! same bytes mean the same thing to the eBPF programs and to the loader.
#![no_std]

/// Bytes of user stack a capture can hold. The ring-buffer reservation has to be a
/// verifier-known constant, so this is the size of every capture record; how much of
/// it is filled is set at load time (`Config::stack_bytes`).
pub const MAX_STACK_BYTES: usize = 128 * 1024;
/// The stack is copied in page-sized chunks, starting at the page that holds `sp`.
pub const STACK_CHUNK: usize = 4096;
pub const MAX_STACK_CHUNKS: usize = MAX_STACK_BYTES / STACK_CHUNK;
/// Default copy budget: enough for deep C++/CPython stacks, small enough for bursts.
pub const DEFAULT_STACK_BYTES: u32 = 64 * 1024;
/// Stack bytes kept for each other thread of a crashing process: they are many, and
/// their interesting frames (where they wait) sit near the top of their stacks.
pub const THREAD_STACK_BYTES: usize = 32 * 1024;
/// Threads of one crashing process captured at most; the rest are counted, not copied.
pub const MAX_THREADS_PER_CRASH: u32 = 512;
/// After a stack overflow, the top of the stack (where main and its callers sit) is
/// copied too, into the end of the record's stack area, so the outermost frames can be
/// shown beside the innermost ones.
pub const TOP_STACK_BYTES: usize = 16 * 1024;
/// Bytes of code copied at the faulting instruction pointer, for disassembly.
pub const CODE_BYTES: usize = 32;
pub const TASK_COMM_LEN: usize = 16;
/// Bytes kept of the executable's file name (a dentry name; longer names are cut).
pub const EXE_NAME_LEN: usize = 64;
/// How many `--comm` patterns and `--pid`s the kernel-side filter holds.
pub const MAX_COMM_FILTERS: usize = 8;
pub const MAX_PID_FILTERS: usize = 8;

/// The kind tag at the start of every ring-buffer record. Numbers are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A signal from the configured set reached a thread (`signal_deliver`):
    /// registers and stack of that thread at that moment.
    SignalCapture = 1,
    /// Another thread of a crashing process, stopped by the group exit.
    ThreadCapture = 2,
    /// A crashing process finished exiting: its status and resource use.
    ProcessExit = 3,
    /// The mappings around a fault, right after its SignalCapture.
    FaultMaps = 4,
    /// The OOM killer chose a victim (`mark_victim`): its memory figures.
    OomVictim = 5,
    /// One Python thread's frames at a crash (code object and position per frame).
    PyThread = 6,
    /// A code object those frames refer to: names, first line, line table.
    PyCode = 7,
}

impl RecordKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::SignalCapture),
            2 => Some(Self::ThreadCapture),
            3 => Some(Self::ProcessExit),
            4 => Some(Self::FaultMaps),
            5 => Some(Self::OomVictim),
            6 => Some(Self::PyThread),
            7 => Some(Self::PyCode),
            _ => None,
        }
    }
}

/// Common header of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordHeader {
    pub kind: u32,
    /// Size in bytes of the whole record, header included.
    pub size: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the record was made.
    pub ktime_ns: u64,
    /// Thread-group id (the process id users see) and thread id, host namespace.
    pub pid: u32,
    pub tid: u32,
}

impl RecordHeader {
    /// The header of a fixed-size record of type `T`: its size comes from the type, so
    /// the two cannot disagree.
    pub const fn of<T>(kind: RecordKind, ktime_ns: u64, pid: u32, tid: u32) -> Self {
        Self {
            kind: kind as u32,
            size: core::mem::size_of::<T>() as u32,
            ktime_ns,
            pid,
            tid,
        }
    }
}

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
pub const HANDLER_IGNORE: u32 = 1;
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
    pub _pad2: u32,
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
    /// The top of the stack, in the last TOP_STACK_BYTES of the stack area: user address
    /// of its first byte, and how many bytes were copied (0: none).
    pub top_start: u64,
    pub top_len: u32,
    pub _pad3: u32,
}

/// A memory mapping as the kernel had it at the crash (`bpf_find_vma`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaInfo {
    pub start: u64,
    pub end: u64,
    /// VM_READ 0x1, VM_WRITE 0x2, VM_EXEC 0x4, VM_SHARED 0x8, VM_GROWSDOWN 0x100, ...
    pub flags: u64,
    /// File offset of `start`, in pages.
    pub pgoff: u64,
    /// 1 if found; the rest is valid only then.
    pub found: u32,
    pub _pad: u32,
    /// Base name of the mapped file; empty for anonymous memory.
    pub name: [u8; 32],
}

/// The thread that received a signal of the configured set (`signal_deliver`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SignalCapture {
    pub head: CaptureHead,
    pub stack: [u8; MAX_STACK_BYTES],
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

/// Python threads and frames read per crash; deeper stacks are cut and marked.
pub const PY_MAX_THREADS: usize = 16;
pub const PY_MAX_FRAMES: usize = 64;
pub const PY_FILENAME_BYTES: usize = 256;
pub const PY_NAME_BYTES: usize = 128;
/// A prefix this long covers more than 99 % of real line tables.
pub const PY_LINETABLE_BYTES: usize = 2048;
/// An offset that does not exist in this CPython version.
pub const PY_NONE: u32 = u32::MAX;

/// Where CPython keeps what a traceback needs, for one version (x86-64, GIL builds).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyOffsets {
    /// `_PyRuntime.interpreters.head`; `PyInterpreterState.threads.head`;
    /// `PyThreadState.next`.
    pub interp_head: u32,
    pub tstate_head: u32,
    pub ts_next: u32,
    /// In the thread state: the frame (3.10), the cframe (3.11/3.12) or current_frame.
    pub ts_frame: u32,
    /// `_PyCFrame.current_frame` (3.11/3.12), else PY_NONE.
    pub cf_current: u32,
    /// `thread_id` (pthread_self, the FS base) and `native_thread_id` (PY_NONE in 3.10).
    pub ts_thread_id: u32,
    pub ts_native: u32,
    /// Frame: previous frame, code object, position (`f_lasti` in 3.10, else the
    /// instruction pointer), owner byte and is_entry byte (PY_NONE where absent).
    pub fr_back: u32,
    pub fr_code: u32,
    pub fr_pos: u32,
    pub fr_owner: u32,
    pub fr_is_entry: u32,
    /// Frames with owner >= this are C-stack shims, not Python code.
    pub shim_owner: u32,
    /// Low bits to clear from the code pointer (3.14 tags it).
    pub code_tag_mask: u32,
    /// Code object: filename, qualified name (co_name before 3.11), first line, line table.
    pub co_filename: u32,
    pub co_name: u32,
    pub co_firstlineno: u32,
    pub co_linetable: u32,
    /// `co_code_adaptive` (3.11+): positions count from here.
    pub co_adaptive: u32,
    /// sizeof(PyASCIIObject) and sizeof(PyCompactUnicodeObject): where string data starts.
    pub ascii_size: u32,
    pub compact_size: u32,
    /// In `_PyRuntime`: the GIL's last holder (3.10/3.11; PY_NONE where the GIL is
    /// per interpreter).
    pub gil_holder: u32,
}

/// A Python process: where its runtime is, and which layout it has. Kept by crashtrace
/// from the moment the interpreter is mapped, read by the eBPF program at a crash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyProc {
    pub runtime: u64,
    /// major << 8 | minor
    pub version: u32,
    pub _pad: u32,
    pub offsets: PyOffsets,
}

/// One frame: its code object and raw position (see PyOffsets::fr_pos).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyFrameRef {
    pub code: u64,
    pub pos: u64,
    /// PY_FRAME_* bits.
    pub flags: u32,
    pub owner: u32,
}
pub const PY_FRAME_ENTRY: u32 = 1 << 0;
pub const PY_FRAME_SHIM: u32 = 1 << 1;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PyThread {
    pub header: RecordHeader,
    pub thread_id: u64,
    pub native_id: u32,
    /// PY_THREAD_* bits.
    pub flags: u32,
    pub nframes: u32,
    pub version: u32,
    pub frames: [PyFrameRef; PY_MAX_FRAMES],
}
/// The thread whose FS base is the crashing thread's.
pub const PY_THREAD_CRASHING: u32 = 1 << 0;
/// More frames than PY_MAX_FRAMES.
pub const PY_THREAD_TRUNCATED: u32 = 1 << 1;
/// The GIL's holder (its last holder) at the crash.
pub const PY_THREAD_GIL: u32 = 1 << 2;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PyCode {
    pub header: RecordHeader,
    pub code: u64,
    pub firstlineno: i32,
    /// Strings: bytes copied and the character width (1, 2 or 4; 0 = unreadable).
    pub filename_len: u32,
    pub filename_kind: u32,
    pub name_len: u32,
    pub name_kind: u32,
    pub linetable_len: u32,
    /// The whole table's length (more than `linetable_len` when it was cut).
    pub linetable_total: u32,
    pub _pad: u32,
    pub filename: [u8; PY_FILENAME_BYTES],
    pub name: [u8; PY_NAME_BYTES],
    pub linetable: [u8; PY_LINETABLE_BYTES],
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
    /// The thread-group leader's start (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// Peak resident set size, in kilobytes.
    pub maxrss_kb: u64,
    pub usage: Usage,
}

/// One `--comm` pattern, matched in the kernel against the process's name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommPattern {
    pub bytes: [u8; TASK_COMM_LEN],
    /// Number of significant bytes in `bytes` (1..=15).
    pub len: u32,
    /// 1: the name must equal the pattern; 0: the name must start with it.
    pub exact: u32,
}

/// Kernel structure offsets the eBPF side needs, read from the running kernel's BTF
/// at load time (Rust eBPF emits no CO-RE relocations).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_group_leader: u32,
    pub task_comm: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_exit_code: u32,
    pub task_start_time: u32,
    pub task_utime: u32,
    pub task_stime: u32,
    pub task_runtime: u32,
    pub task_min_flt: u32,
    pub task_maj_flt: u32,
    pub task_nvcsw: u32,
    pub task_nivcsw: u32,
    pub signal_live: u32,
    pub signal_maxrss: u32,
    pub signal_utime: u32,
    pub signal_stime: u32,
    pub signal_runtime: u32,
    pub signal_min_flt: u32,
    pub signal_maj_flt: u32,
    pub signal_nvcsw: u32,
    pub signal_nivcsw: u32,
    pub mm_exe_file: u32,
    /// `file.f_path.dentry`
    pub file_dentry: u32,
    /// `dentry.d_name.name`
    pub dentry_name: u32,
    pub task_cred: u32,
    /// `cred.uid`
    pub cred_uid: u32,
    pub signal_group_exit_code: u32,
    pub vma_start: u32,
    pub vma_end: u32,
    pub vma_flags: u32,
    pub vma_pgoff: u32,
    pub vma_file: u32,
    pub task_cgroups: u32,
    /// `css_set.subsys[memory_cgrp_id]`
    pub css_set_memory: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kn_name: u32,
    /// `mem_cgroup.memory.max` and `.usage` (pages); `css` is mem_cgroup's first member.
    pub memcg_max: u32,
    pub memcg_usage: u32,
    pub mm_total_vm: u32,
    /// `mm_struct.rss_stat[0].count`, and the stride of that array.
    pub mm_rss_count: u32,
    pub mm_rss_stride: u32,
    pub task_pid: u32,
    pub task_thread_pid: u32,
    pub pid_level: u32,
    /// `pid.numbers[0].nr`, and the stride of that array.
    pub pid_numbers_nr: u32,
    pub upid_size: u32,
    /// `task_struct.thread.fsbase`: what pthread_self() and CPython's thread_id hold.
    pub task_fsbase: u32,
    /// `file.f_inode` and `inode.i_ino`: which executable a process runs.
    pub file_inode: u32,
    pub inode_ino: u32,
    pub _pad: u32,
}

/// Load-time configuration of the eBPF programs, set as one global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bit n set: signal n is captured, whoever sent it (the crash signals).
    pub signal_mask: u64,
    /// Bit n set: signal n is captured when another process sent it and it ends the
    /// process (default action): kills by supervisors, `kill -9`, ...
    pub kill_mask: u64,
    /// crashtrace's own process id: never captured.
    pub self_pid: u32,
    /// Bytes of stack to copy, a multiple of STACK_CHUNK, at most MAX_STACK_BYTES.
    pub stack_bytes: u32,
    pub pid_count: u32,
    pub comm_count: u32,
    pub pids: [u32; MAX_PID_FILTERS],
    pub comms: [CommPattern; MAX_COMM_FILTERS],
    pub offsets: KernelOffsets,
}

impl Config {
    pub const fn empty() -> Self {
        Self {
            signal_mask: 0,
            kill_mask: 0,
            self_pid: 0,
            stack_bytes: DEFAULT_STACK_BYTES,
            pid_count: 0,
            comm_count: 0,
            pids: [0; MAX_PID_FILTERS],
            comms: [CommPattern {
                bytes: [0; TASK_COMM_LEN],
                len: 0,
                exact: 0,
            }; MAX_COMM_FILTERS],
            offsets: KernelOffsets {
                task_group_leader: 0,
                task_comm: 0,
                task_real_parent: 0,
                task_tgid: 0,
                task_mm: 0,
                task_signal: 0,
                task_exit_code: 0,
                task_start_time: 0,
                task_utime: 0,
                task_stime: 0,
                task_runtime: 0,
                task_min_flt: 0,
                task_maj_flt: 0,
                task_nvcsw: 0,
                task_nivcsw: 0,
                signal_live: 0,
                signal_maxrss: 0,
                signal_utime: 0,
                signal_stime: 0,
                signal_runtime: 0,
                signal_min_flt: 0,
                signal_maj_flt: 0,
                signal_nvcsw: 0,
                signal_nivcsw: 0,
                mm_exe_file: 0,
                file_dentry: 0,
                dentry_name: 0,
                task_cred: 0,
                cred_uid: 0,
                signal_group_exit_code: 0,
                vma_start: 0,
                vma_end: 0,
                vma_flags: 0,
                vma_pgoff: 0,
                vma_file: 0,
                task_cgroups: 0,
                css_set_memory: 0,
                css_cgroup: 0,
                cgroup_kn: 0,
                kn_name: 0,
                memcg_max: 0,
                memcg_usage: 0,
                mm_total_vm: 0,
                mm_rss_count: 0,
                mm_rss_stride: 0,
                task_pid: 0,
                task_thread_pid: 0,
                pid_level: 0,
                pid_numbers_nr: 0,
                upid_size: 0,
                task_fsbase: 0,
                file_inode: 0,
                inode_ino: 0,
                _pad: 0,
            },
        }
    }
}

/// Indices into the per-CPU `STATS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Signals of the configured set that passed the filters.
    Matched = 0,
    /// Captures written to the ring buffer.
    Captured = 1,
    /// Captures lost because the ring buffer was full.
    RingFull = 2,
    /// Captures whose registers could not be read.
    RegsFailed = 3,
    /// Other threads of crashing processes captured at the group exit.
    ThreadsCaptured = 4,
    /// Exit records lost because the ring buffer was full.
    ExitsLost = 5,
    /// Crashing processes not tracked to their exit (the state map was full).
    StateFull = 6,
    /// OOM victims seen.
    OomVictims = 7,
}
pub const STAT_COUNT: u32 = 8;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data without padding or invalid bit patterns.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::CommPattern {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::CrashState {}
    unsafe impl aya::Pod for super::Usage {}
    unsafe impl aya::Pod for super::PyProc {}
    unsafe impl aya::Pod for super::PyOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<RecordHeader>(), 24);
        assert_eq!(size_of::<UserRegs>(), 21 * 8);
        assert_eq!(offset_of!(UserRegs, rip), 16 * 8);
        assert_eq!(offset_of!(UserRegs, rsp), 19 * 8);
        let fixed = offset_of!(SignalCapture, stack);
        assert_eq!(fixed, size_of::<CaptureHead>());
        assert_eq!(fixed % 8, 0);
        assert_eq!(size_of::<SignalCapture>(), fixed + MAX_STACK_BYTES);
        assert_eq!(size_of::<ThreadCapture>(), fixed + THREAD_STACK_BYTES);
        assert_eq!(size_of::<Usage>(), 7 * 8);
        assert_eq!(size_of::<Sender>(), 24 + TASK_COMM_LEN);
        assert_eq!(size_of::<VmaInfo>(), 40 + 32);
        assert_eq!(size_of::<FaultMaps>(), 24 + 72);
        assert_eq!(size_of::<PyOffsets>(), 22 * 4);
        assert_eq!(size_of::<PyProc>(), 16 + 22 * 4);
        assert_eq!(size_of::<PyThread>(), 24 + 24 + PY_MAX_FRAMES * 24);
        assert_eq!(
            size_of::<PyCode>(),
            24 + 8 + 32 + PY_FILENAME_BYTES + PY_NAME_BYTES + PY_LINETABLE_BYTES
        );
        assert_eq!(size_of::<OomVictim>(), 24 + 8 + 16 + 7 * 8 + 64);
        assert_eq!(size_of::<CrashState>(), 7 * 8 + 16);
        assert_eq!(size_of::<ProcessExit>(), 24 + 16 + 16 + 7 * 8);
        assert_eq!(size_of::<CommPattern>(), 24);
        assert_eq!(
            size_of::<Config>(),
            16 + 4 * 4 + 4 * MAX_PID_FILTERS + 24 * MAX_COMM_FILTERS + size_of::<KernelOffsets>()
        );
        assert_eq!(MAX_STACK_BYTES % STACK_CHUNK, 0);
    }
}

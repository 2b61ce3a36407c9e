//! The one definition of every record that crosses the kernel/user boundary.
//!
//! Everything here is `#[repr(C)]`, has no implicit padding and no `bool`, so the
//! same bytes mean the same thing to the eBPF programs and to the loader.
#![no_std]

/// Bytes of user stack a capture can hold at most (`--stack-size`'s limit).
pub const MAX_STACK_BYTES: usize = 128 * 1024;
/// The stack-size classes: a ring-buffer reservation has to be a verifier-known constant,
/// so there is one `signal_deliver` program per class and the loader attaches the
/// smallest that holds `--stack-size`. A record of a class holds that much stack and,
/// after it, room for the top of an overflowed stack (`TOP_STACK_BYTES`).
pub const STACK_CLASSES: [usize; 5] = [8 << 10, 16 << 10, 32 << 10, 64 << 10, 128 << 10];
/// The stack area of the largest record.
pub const MAX_RECORD_STACK: usize = MAX_STACK_BYTES + TOP_STACK_BYTES;

/// The smallest class that holds `bytes` of stack.
pub const fn stack_class(bytes: usize) -> usize {
    let mut i = 0;
    while i < STACK_CLASSES.len() - 1 && STACK_CLASSES[i] < bytes {
        i += 1;
    }
    STACK_CLASSES[i]
}

/// How much of a stack area of `area` bytes the top of an overflowed stack takes: all of
/// `TOP_STACK_BYTES` in every record of a class (see `STACK_CLASSES`).
pub const fn top_bytes(area: usize) -> usize {
    if area > TOP_STACK_BYTES {
        TOP_STACK_BYTES
    } else {
        area / 2
    }
}

/// The stack is copied in page-sized chunks, starting at the page that holds `sp`.
pub const STACK_CHUNK: usize = 4096;
/// Default copy budget: enough for deep C++/CPython stacks, small enough for bursts.
pub const DEFAULT_STACK_BYTES: u32 = 64 * 1024;
/// Stack bytes kept for each other thread of a crashing process: they are many, and
/// their interesting frames (where they wait) sit near the top of their stacks.
pub const THREAD_STACK_BYTES: usize = 32 * 1024;
/// Threads of one crashing process captured at most; the rest are counted, not copied.
pub const MAX_THREADS_PER_CRASH: u32 = 512;
/// After a stack overflow, the top of the stack (where main and its callers sit, below the
/// arguments, the environment and up to 8 KiB of random padding) is copied too, into the
/// end of the record's stack area, so the outermost frames can be shown beside the
/// innermost ones.
pub const TOP_STACK_BYTES: usize = 16 * 1024;
/// Bytes of code copied at the faulting instruction pointer, for disassembly.
pub const CODE_BYTES: usize = 32;
pub const TASK_COMM_LEN: usize = 16;
/// Bytes kept of the executable's file name (a dentry name; longer names are cut).
pub const EXE_NAME_LEN: usize = 64;
/// How many `--comm` patterns and `--pid`s the kernel-side filter holds.
pub const MAX_COMM_FILTERS: usize = 8;
pub const MAX_PID_FILTERS: usize = 8;

mod config;
mod python;
mod records;

pub use config::*;
pub use python::*;
pub use records::*;

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
    /// What the crashing process's own memory says about it: its environment block and
    /// glibc's last fatal message, right after its SignalCapture.
    CrashMemory = 8,
    /// One thread of a live process, read by `crashtrace dump` (a ThreadCapture's
    /// layout, with `task_state` and CAPTURE_ON_CPU saying how settled it was).
    DumpThread = 9,
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
            8 => Some(Self::CrashMemory),
            9 => Some(Self::DumpThread),
            _ => None,
        }
    }
}

/// `super_block.s_magic` of tmpfs (and /dev/shm): TMPFS_MAGIC.
pub const TMPFS_MAGIC: u64 = 0x0102_1994;

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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] data without padding or invalid bit patterns.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: plain #[repr(C)] data without padding or invalid bit patterns.
    unsafe impl aya::Pod for super::CommPattern {}
    // SAFETY: plain #[repr(C)] data without padding or invalid bit patterns.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: plain #[repr(C)] data without padding or invalid bit patterns.
    unsafe impl aya::Pod for super::CrashState {}
    // SAFETY: plain #[repr(C)] data without padding or invalid bit patterns.
    unsafe impl aya::Pod for super::Usage {}
    // SAFETY: plain #[repr(C)] data without padding or invalid bit patterns.
    unsafe impl aya::Pod for super::PyProc {}
    // SAFETY: plain #[repr(C)] data without padding or invalid bit patterns.
    unsafe impl aya::Pod for super::PyOffsets {}
    // SAFETY: plain #[repr(C)] data without padding or invalid bit patterns.
    unsafe impl aya::Pod for super::LibcFile {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn comm_patterns() {
        let padded = |n: &[u8]| {
            let mut b = [0u8; TASK_COMM_LEN];
            b[..n.len()].copy_from_slice(n);
            [0, 1].map(|i| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()))
        };
        // (pattern, exact, name, matches)
        let cases: &[(&[u8], bool, &[u8], bool)] = &[
            (b"python", false, b"python3.11", true),
            (b"python", false, b"pytho", false),
            (b"python", false, b"ruby", false),
            (b"python3", true, b"python3", true),
            (b"python3", true, b"python3.11", false),
            (b"python3", true, b"python", false),
            (b"pt_data_worker_", false, b"pt_data_worker_", true),
            (b"pt_data_worker_", true, b"pt_data_worker_", true),
            (b"pt_data_worker_", true, b"pt_data_worker", false),
            (b"a", false, b"a", true),
            (b"a", true, b"ab", false),
        ];
        for &(pattern, exact, name, want) in cases {
            let p = CommPattern::new(pattern, exact);
            assert_eq!(
                p.matches(padded(name)),
                want,
                "{pattern:?} {exact} {name:?}"
            );
        }
    }

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<RecordHeader>(), 24);
        assert_eq!(size_of::<UserRegs>(), 21 * 8);
        assert_eq!(offset_of!(UserRegs, rip), 16 * 8);
        assert_eq!(offset_of!(UserRegs, rsp), 19 * 8);
        let fixed = offset_of!(SignalCapture, stack);
        assert_eq!(fixed, size_of::<CaptureHead>());
        assert_eq!(fixed % 8, 0);
        assert_eq!(size_of::<SignalCapture>(), fixed + MAX_RECORD_STACK);
        assert_eq!(size_of::<SignalCapture<4>>(), fixed + 4 * STACK_CHUNK);
        assert_eq!(offset_of!(SignalCapture<4>, stack), fixed);
        assert_eq!(size_of::<ThreadCapture>(), fixed + THREAD_STACK_BYTES);
        assert_eq!(size_of::<Usage>(), 7 * 8);
        assert_eq!(size_of::<Sender>(), 24 + TASK_COMM_LEN);
        assert_eq!(size_of::<VmaInfo>(), 72 + VMA_NAME_LEN);
        assert_eq!(size_of::<FaultMaps>(), 24 + 72 + VMA_NAME_LEN);
        assert_eq!(size_of::<PyOffsets>(), 22 * 4);
        assert_eq!(size_of::<PyProc>(), 16 + 22 * 4);
        assert_eq!(size_of::<PyThread>(), 24 + 24 + PY_MAX_FRAMES * 24);
        assert_eq!(
            size_of::<PyCode>(),
            24 + 8 + 32 + PY_FILENAME_BYTES + PY_NAME_BYTES + PY_LINETABLE_BYTES
        );
        assert_eq!(size_of::<OomVictim>(), 24 + 8 + 16 + 7 * 8 + 64);
        assert_eq!(size_of::<CrashState>(), 7 * 8 + 16);
        assert_eq!(size_of::<ProcessExit>(), 24 + 24 + 16 + 7 * 8);
        assert_eq!(size_of::<HandledRate>(), 32);
        assert_eq!(size_of::<LibcFile>(), 16);
        // The same inode number on two file systems: two keys.
        assert_ne!(file_key(8, 1, 42), file_key(0, 35, 42));
        assert_eq!(file_key(0, 0, 42), 42);
        assert_eq!(
            size_of::<CrashMemoryHead>(),
            24 + 32 + 16 + 16 + ABORT_MSG_BYTES
        );
        assert_eq!(
            size_of::<CrashMemory<2>>(),
            size_of::<CrashMemoryHead>() + 2 * STACK_CHUNK
        );
        assert_eq!(size_of::<CommPattern>(), 32);
        assert_eq!(
            size_of::<Config>(),
            16 + 4 * 6 + 4 * MAX_PID_FILTERS + 32 * MAX_COMM_FILTERS + size_of::<KernelOffsets>()
        );
        assert_eq!(MAX_STACK_BYTES % STACK_CHUNK, 0);
        assert_eq!(*STACK_CLASSES.last().unwrap(), MAX_STACK_BYTES);
        let classes = [4096, 8192, 12288, 65536, 65537, 131072].map(stack_class);
        assert_eq!(classes, [8192, 8192, 16384, 65536, 131072, 131072]);
        assert_eq!((top_bytes(8192), top_bytes(65536)), (4096, TOP_STACK_BYTES));
        assert_eq!(top_bytes(8192 + TOP_STACK_BYTES), TOP_STACK_BYTES);
    }
}

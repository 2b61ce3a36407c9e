//! What the eBPF program needs to read Python frames, and what it sends about them.

use crate::RecordHeader;

/// Python threads and frames read per crash; deeper stacks are cut and marked.
pub const PY_MAX_THREADS: usize = 16;
/// Python threads a dump reads at most: it runs in crashtrace's time, not a crash's.
pub const PY_DUMP_THREADS: usize = 1024;
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

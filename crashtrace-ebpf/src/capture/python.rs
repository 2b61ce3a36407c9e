//! Python frames at a crash, read from the interpreter's own structures while the process
//! still exists: every thread state of the first interpreter, each thread's frame chain,
//! and, once per code object, what a traceback line needs. Layouts come from user space
//! (PYPROCS), per process; every walk is bounded and every read may fail.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_ktime_get_ns, generated::bpf_loop},
};
use crashtrace_common::{
    PY_DUMP_THREADS, PY_FILENAME_BYTES, PY_FRAME_ENTRY, PY_FRAME_SHIM, PY_LINETABLE_BYTES,
    PY_MAX_FRAMES, PY_MAX_THREADS, PY_NAME_BYTES, PY_NONE, PY_THREAD_CRASHING, PY_THREAD_GIL,
    PY_THREAD_TRUNCATED, PyCode, PyFrameRef, PyProc, PyThread, RecordHeader, RecordKind,
};

use crate::{
    helpers::{output, read_kernel_or_zero, reserve},
    maps::{PY_CODES_SEEN, PY_SCRATCH, PYFILES, PYPROCS, config},
    task::inode_key,
    user::{read, read_raw},
};

// `O`: whose memory is read (see `user`); `task` is that task.
fn field<const O: bool>(task: u64, base: u64, off: u32) -> u64 {
    if base == 0 || off == PY_NONE {
        return 0;
    }
    read::<u64, O>(base + off as u64, task).unwrap_or(0)
}

fn byte<const O: bool>(task: u64, base: u64, off: u32) -> u32 {
    if base == 0 || off == PY_NONE {
        return 0;
    }
    read::<u8, O>(base + off as u64, task).unwrap_or(0) as u32
}

/// State shared by the loop callbacks; it lives on the capturing program's stack, as
/// bpf_loop requires of its context.
#[repr(C)]
struct Walk {
    /// The task whose memory is read (any thread of the process).
    task: u64,
    pid: u32,
    tid: u32,
    tstate: u64,
    fsbase: u64,
    /// The frame to read next, and how many were read, for the current thread.
    frame: u64,
    nframes: u64,
    /// The thread state holding the GIL, where the version says (0 otherwise).
    gil: u64,
}

/// Emits the Python threads (and their code objects) of process `pid`, if it is one.
/// bpf_loop keeps the verifier's work linear: each callback is verified once.
/// `O`: false in a thread of the process at its crash (`tid` is the crashing thread),
/// true from the dump iterator (no thread is the crashing one).
#[inline(never)]
pub fn capture<const O: bool>(task: u64, pid: u32, tid: u32) {
    if PYPROCS.get_ptr(pid).is_none() {
        // Not registered yet: maybe a known non-PIE interpreter (same layout everywhere).
        let mm = read_kernel_or_zero::<u64>(task + config!(offsets.task_mm) as u64);
        let exe = if mm != 0 {
            read_kernel_or_zero::<u64>(mm + config!(offsets.mm_exe_file) as u64)
        } else {
            0
        };
        let inode = if exe != 0 {
            read_kernel_or_zero::<u64>(exe + config!(offsets.file_inode) as u64)
        } else {
            0
        };
        let Some(known) = PYFILES.get_ptr(inode_key(inode)) else {
            return;
        };
        // SAFETY: map value pointer from a successful lookup. Passed by reference: a copy
        // would take 104 bytes of the 512-byte BPF stack.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = PYPROCS.insert(pid, unsafe { &*known }, 0);
    }
    let Some(p) = PYPROCS.get_ptr(pid) else {
        return;
    };
    // SAFETY: map value pointer from a successful lookup; read-only here.
    let p: &PyProc = unsafe { &*p };
    let interp = field::<O>(task, p.runtime, p.offsets.interp_head);
    let mut w = Walk {
        task,
        pid,
        tid,
        tstate: field::<O>(task, interp, p.offsets.tstate_head),
        fsbase: if O {
            0
        } else {
            read_kernel_or_zero::<u64>(task + config!(offsets.task_fsbase) as u64)
        },
        frame: 0,
        nframes: 0,
        gil: field::<O>(task, p.runtime, p.offsets.gil_holder),
    };
    // SAFETY: the callback is a BPF subprogram; the context is on this stack.
    unsafe {
        bpf_loop(
            if O { PY_DUMP_THREADS } else { PY_MAX_THREADS } as u32,
            thread_cb::<O> as *mut c_void,
            &raw mut w as *mut c_void,
            0,
        )
    };
}

/// One thread state per call: its frames, then its code objects; 1 stops the loop.
#[inline(never)]
extern "C" fn thread_cb<const O: bool>(_i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the Walk on the caller's stack.
    let w = unsafe { &mut *(ctx as *mut Walk) };
    if w.tstate == 0 {
        return 1;
    }
    let (Some(p), Some(t)) = (PYPROCS.get_ptr(w.pid), PY_SCRATCH.get_ptr_mut(0)) else {
        return 1;
    };
    // SAFETY: map value pointers from successful lookups; the scratch is this CPU's.
    let (p, t): (&PyProc, &mut PyThread) = unsafe { (&*p, &mut *t) };
    let o = &p.offsets;
    let thread_id = field::<O>(w.task, w.tstate, o.ts_thread_id);
    let mut frame = field::<O>(w.task, w.tstate, o.ts_frame);
    if o.cf_current != PY_NONE {
        frame = field::<O>(w.task, frame, o.cf_current);
    }
    w.frame = frame;
    w.nframes = 0;
    // SAFETY: as in `capture`.
    unsafe { bpf_loop(PY_MAX_FRAMES as u32, frame_cb::<O> as *mut c_void, ctx, 0) };
    t.header = RecordHeader::of::<PyThread>(
        RecordKind::PyThread,
        // SAFETY: helper without arguments.
        unsafe { bpf_ktime_get_ns() },
        w.pid,
        w.tid,
    );
    t.thread_id = thread_id;
    t.native_id = if o.ts_native != PY_NONE {
        read::<u32, O>(w.tstate + o.ts_native as u64, w.task).unwrap_or(0)
    } else {
        0
    };
    t.version = p.version;
    t.nframes = w.nframes as u32;
    t.flags = if thread_id == w.fsbase {
        PY_THREAD_CRASHING
    } else {
        0
    } | if w.frame != 0 { PY_THREAD_TRUNCATED } else { 0 }
        | if w.gil != 0 && w.gil == w.tstate {
            PY_THREAD_GIL
        } else {
            0
        };
    // One copy of the whole record; frames were gathered in the per-CPU scratch.
    output::<PyThread>(&*t);
    // SAFETY: as in `capture`.
    unsafe { bpf_loop(w.nframes as u32, code_cb::<O> as *mut c_void, ctx, 0) };
    w.tstate = field::<O>(w.task, w.tstate, o.ts_next);
    0
}

/// One frame per call, into the scratch record; 1 stops at the end of the chain.
#[inline(never)]
extern "C" fn frame_cb<const O: bool>(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the Walk on the capturing program's stack.
    let w = unsafe { &mut *(ctx as *mut Walk) };
    let frame = w.frame;
    if frame == 0 {
        return 1;
    }
    let (Some(p), Some(t)) = (PYPROCS.get_ptr(w.pid), PY_SCRATCH.get_ptr_mut(0)) else {
        return 1;
    };
    // SAFETY: as in thread_cb.
    let (p, t): (&PyProc, &mut PyThread) = unsafe { (&*p, &mut *t) };
    let o = &p.offsets;
    let code = field::<O>(w.task, frame, o.fr_code) & !(o.code_tag_mask as u64);
    let owner = byte::<O>(w.task, frame, o.fr_owner);
    let mut flags = 0;
    if o.fr_owner != PY_NONE && owner >= o.shim_owner {
        flags |= PY_FRAME_SHIM;
    }
    if o.fr_is_entry != PY_NONE && byte::<O>(w.task, frame, o.fr_is_entry) != 0 {
        flags |= PY_FRAME_ENTRY;
    }
    let pos = if o.fr_owner == PY_NONE {
        // 3.10: f_lasti, an int.
        read::<i32, O>(frame + o.fr_pos as u64, w.task).unwrap_or(-1) as i64 as u64
    } else {
        field::<O>(w.task, frame, o.fr_pos)
    };
    // The mask keeps the verifier sure of the index.
    t.frames[(i as usize) & (PY_MAX_FRAMES - 1)] = PyFrameRef {
        code,
        pos,
        flags,
        owner,
    };
    w.nframes = i + 1;
    w.frame = field::<O>(w.task, frame, o.fr_back);
    0
}

/// The code object of the current thread's frame `i`.
#[inline(never)]
extern "C" fn code_cb<const O: bool>(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the Walk on the capturing program's stack.
    let w = unsafe { &*(ctx as *const Walk) };
    let (Some(p), Some(t)) = (PYPROCS.get_ptr(w.pid), PY_SCRATCH.get_ptr(0)) else {
        return 1;
    };
    // SAFETY: map value pointers from successful lookups.
    let (p, t) = unsafe { (&*p, &*t) };
    let f = &t.frames[(i as usize) & (PY_MAX_FRAMES - 1)];
    if f.flags & PY_FRAME_SHIM == 0 {
        code_object::<O>(p, w.task, w.pid, f.code);
    }
    0
}

/// Emits a code object once per process.
#[inline(never)]
fn code_object<const O: bool>(p: &PyProc, task: u64, pid: u32, code: u64) {
    if code == 0 {
        return;
    }
    let key = code ^ ((pid as u64) << 47);
    if PY_CODES_SEEN.get_ptr(key).is_some() {
        return;
    }
    let _ = PY_CODES_SEEN.insert(key, 0u8, 0);
    let o = &p.offsets;
    let Some(mut entry) = reserve::<PyCode>() else {
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is a reserved PyCode; every field is written below.
    unsafe {
        (*rec).header = RecordHeader::of::<PyCode>(RecordKind::PyCode, bpf_ktime_get_ns(), pid, 0);
        (*rec).code = code;
        (*rec)._pad = 0;
        (*rec).firstlineno = read::<i32, O>(code + o.co_firstlineno as u64, task).unwrap_or(0);
        let (len, kind) = string::<O>(
            p,
            task,
            field::<O>(task, code, o.co_filename),
            (*rec).filename.as_mut_ptr(),
            PY_FILENAME_BYTES,
        );
        (*rec).filename_len = len;
        (*rec).filename_kind = kind;
        let (len, kind) = string::<O>(
            p,
            task,
            field::<O>(task, code, o.co_name),
            (*rec).name.as_mut_ptr(),
            PY_NAME_BYTES,
        );
        (*rec).name_len = len;
        (*rec).name_kind = kind;
        // A bytes object: ob_size at +16, the data at +32.
        let table = field::<O>(task, code, o.co_linetable);
        let total = if table != 0 {
            read::<u64, O>(table + 16, task).unwrap_or(0)
        } else {
            0
        };
        let mut copy = total.min(PY_LINETABLE_BYTES as u64) as u32;
        // The mask keeps the verifier sure of the bound.
        copy &= (PY_LINETABLE_BYTES * 2 - 1) as u32;
        if copy > PY_LINETABLE_BYTES as u32 {
            copy = PY_LINETABLE_BYTES as u32;
        }
        if copy == 0 || read_raw::<O>((*rec).linetable.as_mut_ptr(), copy, table + 32, task) != 0 {
            copy = 0;
        }
        (*rec).linetable_len = copy;
        (*rec).linetable_total = total as u32;
    }
    entry.submit(0);
}

/// Copies a str object's characters: (bytes copied, character width; 0 if unreadable).
///
/// # Safety
/// `dst` must have room for `cap` bytes (a power of two).
unsafe fn string<const O: bool>(
    p: &PyProc,
    task: u64,
    s: u64,
    dst: *mut u8,
    cap: usize,
) -> (u32, u32) {
    if s == 0 {
        return (0, 0);
    }
    let o = &p.offsets;
    // PyASCIIObject: length (code points) at +16; state bits at +32: kind in bits 2-4,
    // compact bit 5, ascii bit 6 (the same in 3.10-3.14).
    let length = read::<u64, O>(s + 16, task).unwrap_or(0);
    let state = read::<u32, O>(s + 32, task).unwrap_or(0);
    let kind = (state >> 2) & 7;
    let ascii = state & (1 << 6) != 0;
    let compact = state & (1 << 5) != 0;
    if !compact || !(kind == 1 || kind == 2 || kind == 4) {
        return (0, 0);
    }
    let data = s + if ascii { o.ascii_size } else { o.compact_size } as u64;
    // Bounded first: no 128-bit multiply in BPF.
    let bytes = length.min(1 << 20) * kind as u64;
    // Keep the tail of long strings (a path's file name is at its end).
    let (from, mut n) = if bytes > cap as u64 {
        (data + bytes - cap as u64, cap as u32)
    } else {
        (data, bytes as u32)
    };
    // Verifier workaround: the compiler knows n <= cap and drops any clamp, passing the
    // helper a copy it spilled before the comparison, whose bound 6.1's verifier does not
    // learn; hidden from the compiler, the clamp stays next to the call.
    n = core::hint::black_box(n);
    if n > cap as u32 {
        n = cap as u32;
    }
    // SAFETY: n <= cap.
    if n == 0 || unsafe { read_raw::<O>(dst, n, from, task) } != 0 {
        return (0, 0);
    }
    (n, kind)
}

//! What the crashing process's own memory says about it, read in its context while it
//! still exists: the environment block (job, rank, devices) and glibc's last fatal
//! message. Both are gone once the process is: /proc/PID/environ cannot be read later.

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_find_vma, bpf_loop, bpf_probe_read_user, bpf_probe_read_user_str},
    },
};
use crashtrace_common::{
    ABORT_MSG_BYTES, CrashMemory, CrashMemoryHead, ENV_CLASSES, GPU_CTL, GPU_FDS_MORE, GPU_MODESET,
    GPU_UVM, MAX_FDS_SCANNED, MEMORY_ENV_UNREADABLE, NVIDIA_MAJOR, RecordHeader, RecordKind,
    STACK_CHUNK,
};

use crate::{
    helpers::{read_kernel, read_kernel_or_zero, reserve},
    maps::{LIBC_FILES, config},
    task::inode_key,
};

const SIGABRT: i32 = 6;
const PAGE: u64 = STACK_CHUNK as u64;
/// glibc's `struct abort_msg_s` is `{ unsigned int size; char msg[]; }`.
const ABORT_MSG_TEXT: u64 = 4;

/// Emits the CrashMemory record for the capture just sent, in the smallest size class
/// that holds the environment block.
#[inline(never)]
pub fn emit(task: u64, pid: u32, tid: u32, sig: i32, rip: u64) {
    let mm = read_kernel_or_zero::<u64>(task + config!(offsets.task_mm) as u64);
    let start = read_kernel_or_zero::<u64>(mm + config!(offsets.mm_env_start) as u64);
    let end = read_kernel_or_zero::<u64>(mm + config!(offsets.mm_env_end) as u64);
    let first = start & !(PAGE - 1);
    let last = (end + PAGE - 1) & !(PAGE - 1);
    let pages = if mm != 0 && start < end {
        (last - first) / PAGE
    } else {
        0
    };
    let b = Block {
        task,
        pid,
        tid,
        sig,
        rip,
        start,
        end,
        first,
        last,
        pages,
    };
    if pages <= ENV_CLASSES[0] as u64 {
        emit_class::<{ ENV_CLASSES[0] }>(&b);
    } else if pages <= ENV_CLASSES[1] as u64 {
        emit_class::<{ ENV_CLASSES[1] }>(&b);
    } else {
        emit_class::<{ ENV_CLASSES[2] }>(&b);
    }
}

/// The capture this record belongs to, and where the environment block is: its bytes
/// and the pages that hold them. One argument: a BPF call takes at most five.
struct Block {
    task: u64,
    pid: u32,
    tid: u32,
    sig: i32,
    rip: u64,
    start: u64,
    end: u64,
    first: u64,
    last: u64,
    pages: u64,
}

// Not inlined: one BPF subprogram per class.
#[inline(never)]
fn emit_class<const PAGES: usize>(b: &Block) {
    let (task, pid, tid, sig, rip) = (b.task, b.pid, b.tid, b.sig, b.rip);
    let Some(mut entry) = reserve::<CrashMemory<PAGES>>() else {
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved record; every field the reader uses is written
    // before submit.
    unsafe {
        let h = &raw mut (*rec).head;
        (*h).header = RecordHeader::of::<CrashMemory<PAGES>>(
            RecordKind::CrashMemory,
            bpf_ktime_get_ns(),
            pid,
            tid,
        );
        (*h).env_start = b.start;
        (*h).env_end = b.end;
        (*h).flags = 0;
        (*h).abort_len = 0;
        // A short block is copied whole; a long one as its first and last pages.
        let (head, tail) = if b.pages <= PAGES as u64 {
            (b.pages as u32, 0u32)
        } else {
            ((PAGES / 2) as u32, (PAGES / 2) as u32)
        };
        (*h).head_addr = b.first;
        (*h).tail_addr = b.last - tail as u64 * PAGE;
        let area = (*rec).env.as_mut_ptr() as *mut u8;
        let mut ok = 0u32;
        for i in 0..PAGES {
            let (from, wanted) = if (i as u32) < head {
                (b.first + i as u64 * PAGE, true)
            } else {
                (
                    (*h).tail_addr + (i as u64 - head as u64) * PAGE,
                    (i as u32) < head + tail,
                )
            };
            if !wanted {
                break;
            }
            // i < PAGES keeps the page inside the record.
            let rc = bpf_probe_read_user(
                area.add(i * STACK_CHUNK) as *mut c_void,
                STACK_CHUNK as u32,
                from as *const c_void,
            );
            if rc != 0 {
                (*h).flags |= MEMORY_ENV_UNREADABLE;
                break;
            }
            ok = i as u32 + 1;
        }
        (*h).head_pages = ok.min(head);
        (*h).tail_pages = ok.saturating_sub(head);
        if sig == SIGABRT {
            read_abort_msg(task, rip, h);
        }
        let gpus = scan_fds(task);
        (*h).gpu_minors = gpus.minors;
        (*h).gpu_flags = gpus.flags;
        (*h).fds_scanned = gpus.scanned;
    }
    entry.submit(0);
}

/// The descriptor walk's state; it lives on this program's stack, as bpf_loop requires.
#[repr(C)]
struct FdScan {
    fds: u64,
    max: u32,
    scanned: u32,
    minors: u64,
    flags: u32,
    _pad: u32,
}

const S_IFMT: u16 = 0o170000;
const S_IFCHR: u16 = 0o020000;
/// `dev_t` inside the kernel: major above MINORBITS (20).
const MINOR_BITS: u32 = 20;

/// bpf_loop callback: one descriptor; a character device of NVIDIA's is noted.
#[inline(never)]
extern "C" fn fd_cb(i: u64, ctx: *mut c_void) -> i64 {
    let s = ctx as *mut FdScan;
    // SAFETY: ctx is the FdScan on scan_fds's stack.
    let (fds, max) = unsafe { ((*s).fds, (*s).max) };
    if i >= max as u64 {
        return 1;
    }
    // SAFETY: as above.
    unsafe { (*s).scanned = i as u32 + 1 };
    let file = read_kernel_or_zero::<u64>(fds + i * 8);
    if file == 0 {
        return 0;
    }
    let inode = read_kernel_or_zero::<u64>(file + config!(offsets.file_inode) as u64);
    let mode = read_kernel_or_zero::<u16>(inode + config!(offsets.inode_mode) as u64);
    if inode == 0 || mode & S_IFMT != S_IFCHR {
        return 0;
    }
    let rdev = read_kernel_or_zero::<u32>(inode + config!(offsets.inode_rdev) as u64);
    let (major, minor) = (rdev >> MINOR_BITS, rdev & ((1 << MINOR_BITS) - 1));
    // SAFETY: as above.
    unsafe {
        if major == NVIDIA_MAJOR {
            match minor {
                0..64 => (*s).minors |= 1u64 << minor,
                254 => (*s).flags |= GPU_MODESET,
                255 => (*s).flags |= GPU_CTL,
                _ => {}
            }
            return 0;
        }
    }
    // UVM's major is dynamic: known by its name.
    let dentry = read_kernel_or_zero::<u64>(file + config!(offsets.file_dentry) as u64);
    let name = read_kernel_or_zero::<u64>(dentry + config!(offsets.dentry_name) as u64);
    if name != 0 && read_kernel::<[u8; 11]>(name) == Some(*b"nvidia-uvm\0") {
        // SAFETY: as above.
        unsafe { (*s).flags |= GPU_UVM };
    }
    0
}

/// The NVIDIA devices the process has open, from its descriptor table.
#[inline(never)]
fn scan_fds(task: u64) -> FdScan {
    let mut s = FdScan {
        fds: 0,
        max: 0,
        scanned: 0,
        minors: 0,
        flags: 0,
        _pad: 0,
    };
    let files = read_kernel_or_zero::<u64>(task + config!(offsets.task_files) as u64);
    let fdt = if files != 0 {
        read_kernel_or_zero::<u64>(files + config!(offsets.files_fdt) as u64)
    } else {
        0
    };
    if fdt == 0 {
        return s;
    }
    let max = read_kernel_or_zero::<u32>(fdt + config!(offsets.fdt_max_fds) as u64);
    s.fds = read_kernel_or_zero::<u64>(fdt + config!(offsets.fdt_fd) as u64);
    s.max = max.min(MAX_FDS_SCANNED);
    if max > MAX_FDS_SCANNED {
        s.flags |= GPU_FDS_MORE;
    }
    if s.fds == 0 {
        return s;
    }
    // SAFETY: the callback is a BPF subprogram; the context is on this stack.
    unsafe {
        bpf_loop(
            MAX_FDS_SCANNED,
            fd_cb as *mut c_void,
            &raw mut s as *mut c_void,
            0,
        )
    };
    s
}

/// What the abort-message lookup needs of the mapping holding the abort's `rip`.
#[repr(C)]
struct LibcVma {
    start: u64,
    pgoff: u64,
    /// `file_key` of the mapped file.
    ino: u64,
    size: u64,
}

/// `bpf_find_vma` callback: the mapping's start, offset and file.
#[inline(never)]
extern "C" fn copy_libc_vma(_task: *mut c_void, vma: *mut c_void, ctx: *mut c_void) -> i64 {
    let v = vma as u64;
    let out = ctx as *mut LibcVma;
    let field = |off: u32| read_kernel_or_zero::<u64>(v + off as u64);
    let file = field(config!(offsets.vma_file));
    let inode = if file != 0 {
        read_kernel_or_zero::<u64>(file + config!(offsets.file_inode) as u64)
    } else {
        0
    };
    // SAFETY: ctx is the LibcVma on the caller's stack.
    unsafe {
        (*out).start = field(config!(offsets.vma_start));
        (*out).pgoff = field(config!(offsets.vma_pgoff));
        if inode != 0 {
            (*out).ino = inode_key(inode);
            (*out).size = read_kernel_or_zero::<u64>(inode + config!(offsets.inode_size) as u64);
        }
    }
    0
}

/// glibc's `__abort_msg`. abort() raises from inside libc, so `rip` is in libc's code:
/// its mapping gives the load address, and crashtrace has told the kernel where the
/// variable is in that file (by inode, checked by size).
///
/// # Safety
/// `rec` must point at the head of a reserved CrashMemory.
#[inline(always)]
unsafe fn read_abort_msg(task: u64, rip: u64, rec: *mut CrashMemoryHead) {
    let mut vma = LibcVma {
        start: 0,
        pgoff: 0,
        ino: 0,
        size: 0,
    };
    // SAFETY: the callback is a BPF subprogram; `vma` lives on this stack. (The one
    // lookup an event allows: fault signals use theirs in faultmaps, SIGABRT is none.)
    unsafe {
        bpf_find_vma(
            task as *mut _,
            rip,
            copy_libc_vma as *mut c_void,
            &raw mut vma as *mut c_void,
            0,
        )
    };
    if vma.ino == 0 {
        return;
    }
    let Some(at) = LIBC_FILES.get_ptr(vma.ino) else {
        return;
    };
    // SAFETY: map value pointer from a successful lookup.
    let (offset, size) = unsafe { ((*at).abort_msg_offset, (*at).file_size) };
    if size != vma.size {
        return;
    }
    let var = vma
        .start
        .wrapping_sub(vma.pgoff * PAGE)
        .wrapping_add(offset);
    let Some(msg) = read_user::<u64>(var) else {
        return;
    };
    if msg == 0 {
        return;
    }
    // SAFETY: bounded copy into the record; the helper NUL-terminates.
    let n = unsafe {
        bpf_probe_read_user_str(
            (*rec).abort_msg.as_mut_ptr() as *mut c_void,
            ABORT_MSG_BYTES as u32,
            (msg + ABORT_MSG_TEXT) as *const c_void,
        )
    };
    if n > 0 {
        // SAFETY: as above.
        unsafe { (*rec).abort_len = n as u32 };
    }
}

fn read_user<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_user tolerates any address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(addr as *const T).ok() }
}

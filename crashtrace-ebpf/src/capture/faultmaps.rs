//! The mapping at a fault address, looked up in the crashing task's own address space
//! while it still exists: /proc/PID/maps can no longer tell once the process is gone.

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_find_vma, bpf_probe_read_kernel_str},
    },
};
use crashtrace_common::{FaultMaps, RecordHeader, RecordKind, TMPFS_MAGIC, VmaInfo};

use crate::{
    helpers::{read_kernel_or_zero, reserve},
    maps::config,
};

/// `bpf_find_vma` callback: copies what the report needs out of the vm_area_struct.
/// Runs as its own BPF subprogram, under the mmap read lock the helper holds.
#[inline(never)]
extern "C" fn copy_vma(_task: *mut c_void, vma: *mut c_void, ctx: *mut c_void) -> i64 {
    let v = vma as u64;
    let out = ctx as *mut VmaInfo;
    let field = |off: u32| read_kernel_or_zero::<u64>(v + off as u64);
    // SAFETY: ctx is the VmaInfo on the caller's stack.
    unsafe {
        (*out).start = field(config!(offsets.vma_start));
        (*out).end = field(config!(offsets.vma_end));
        (*out).flags = field(config!(offsets.vma_flags));
        (*out).pgoff = field(config!(offsets.vma_pgoff));
        (*out).found = 1;
        let file = field(config!(offsets.vma_file));
        if file != 0 {
            let inode = read_kernel_or_zero::<u64>(file + config!(offsets.file_inode) as u64);
            (*out).has_file = 1;
            (*out).file_size =
                read_kernel_or_zero::<u64>(inode + config!(offsets.inode_size) as u64);
            let sb = read_kernel_or_zero::<u64>(inode + config!(offsets.inode_sb) as u64);
            let magic = read_kernel_or_zero::<u64>(sb + config!(offsets.sb_magic) as u64);
            (*out).fs_magic = magic;
            // A full tmpfs cannot give the page a shared mapping faults in: SIGBUS.
            if magic == TMPFS_MAGIC && config!(offsets.shmem_known) != 0 {
                let info = read_kernel_or_zero::<u64>(sb + config!(offsets.sb_fs_info) as u64);
                (*out).fs_blocks =
                    read_kernel_or_zero::<u64>(info + config!(offsets.shmem_max_blocks) as u64);
                (*out).fs_blocks_used =
                    read_kernel_or_zero::<i64>(info + config!(offsets.shmem_used_blocks) as u64)
                        .max(0) as u64;
            }
            let dentry = read_kernel_or_zero::<u64>(file + config!(offsets.file_dentry) as u64);
            let name = read_kernel_or_zero::<u64>(dentry + config!(offsets.dentry_name) as u64);
            bpf_probe_read_kernel_str(
                (*out).name.as_mut_ptr() as *mut c_void,
                (*out).name.len() as u32,
                name as *const c_void,
            );
        }
    }
    0
}

fn lookup(task: u64, addr: u64, out: &mut VmaInfo) {
    *out = VmaInfo::default();
    // SAFETY: the callback is a BPF subprogram; `out` lives on this stack, as the helper
    // requires of its context argument. -EBUSY/-ENOENT leave `found` at 0.
    unsafe {
        bpf_find_vma(
            task as *mut _,
            addr,
            copy_vma as *mut c_void,
            out as *mut VmaInfo as *mut c_void,
            0,
        )
    };
}

/// Emits the FaultMaps record for a crash: the mapping at `fault_addr`, if any.
#[inline(never)]
pub fn emit(task: u64, pid: u32, tid: u32, fault_addr: u64) {
    let mut vma = VmaInfo::default();
    let Some(mut entry) = reserve::<FaultMaps>() else {
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved FaultMaps; every field is written.
    unsafe {
        (*rec).header =
            RecordHeader::of::<FaultMaps>(RecordKind::FaultMaps, bpf_ktime_get_ns(), pid, tid);
        lookup(task, fault_addr, &mut vma);
        (*rec).fault = vma;
    }
    entry.submit(0);
}

/// `bpf_find_vma` callback that keeps only the mapping's end.
#[inline(never)]
extern "C" fn vma_end(_task: *mut c_void, vma: *mut c_void, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the u64 on the caller's stack.
    unsafe {
        *(ctx as *mut u64) =
            read_kernel_or_zero::<u64>(vma as u64 + config!(offsets.vma_end) as u64)
    };
    0
}

/// The end (top) of the mapping holding `addr`, 0 if none.
pub fn mapping_end(task: u64, addr: u64) -> u64 {
    let mut end = 0u64;
    // SAFETY: as in `lookup`; the context is a u64 on this stack.
    unsafe {
        bpf_find_vma(
            task as *mut _,
            addr,
            vma_end as *mut c_void,
            &raw mut end as *mut c_void,
            0,
        )
    };
    end
}

//! What a task is: its names, ids and usage, read from kernel structures at offsets the
//! loader found in the kernel's BTF.

use aya_ebpf::{cty::c_void, helpers::generated::bpf_probe_read_kernel_str};
use crashtrace_common::{EXE_NAME_LEN, TASK_COMM_LEN, Usage, file_key};

use crate::{
    helpers::{read_kernel, read_kernel_or_zero},
    maps::config,
};

/// The process name: the comm of the thread-group leader (a thread's own comm may have
/// been renamed with PR_SET_NAME).
pub fn process_comm(task: u64) -> [u8; TASK_COMM_LEN] {
    // SAFETY: plain bytes either way.
    unsafe { core::mem::transmute::<[u64; 2], [u8; TASK_COMM_LEN]>(process_comm_words(task)) }
}

/// The same as two words, for the filter's aligned loads (see `CommPattern`).
pub fn process_comm_words(task: u64) -> [u64; 2] {
    let leader =
        read_kernel::<u64>(task + config!(offsets.task_group_leader) as u64).unwrap_or(task);
    read_kernel_or_zero::<[u64; 2]>(leader + config!(offsets.task_comm) as u64)
}

/// When the process started (its leader's `start_time`): with the pid, names one process.
pub fn process_start(task: u64) -> u64 {
    let leader =
        read_kernel::<u64>(task + config!(offsets.task_group_leader) as u64).unwrap_or(task);
    read_kernel_or_zero::<u64>(leader + config!(offsets.task_start_time) as u64)
}

/// Base name of the executable: `task->mm->exe_file->f_path.dentry->d_name.name`.
/// Empty for tasks without an mm (kernel threads, late in exit). Every byte of `out` is
/// written (the string, or zeros where unreadable), so it may start uninitialized.
pub fn read_exe_name(task: u64, out: *mut [u8; EXE_NAME_LEN]) {
    // A null pointer anywhere down the chain reads as 0, and the last read then fails.
    let mm = read_kernel_or_zero::<u64>(task + config!(offsets.task_mm) as u64);
    let file = pointer_at(mm, config!(offsets.mm_exe_file));
    let dentry = pointer_at(file, config!(offsets.file_dentry));
    let name = pointer_at(dentry, config!(offsets.dentry_name));
    // SAFETY: bounded copy into `out`; the helper NUL-terminates, and zeroes `out` when
    // the read fails (name 0 included).
    unsafe {
        bpf_probe_read_kernel_str(
            out as *mut c_void,
            EXE_NAME_LEN as u32,
            name as *const c_void,
        )
    };
}

/// The pointer at `base + off`, or 0 for a null `base`.
fn pointer_at(base: u64, off: u32) -> u64 {
    if base == 0 {
        0
    } else {
        read_kernel_or_zero::<u64>(base + off as u64)
    }
}

/// The task's id in its own (innermost) pid namespace: `thread_pid->numbers[level].nr`.
pub fn ns_nr(task: u64) -> u32 {
    let pid = read_kernel_or_zero::<u64>(task + config!(offsets.task_thread_pid) as u64);
    if pid == 0 {
        return 0;
    }
    // Nesting is at most 32 levels (MAX_PID_NS_LEVEL); the mask keeps the verifier sure.
    let level = read_kernel_or_zero::<u32>(pid + config!(offsets.pid_level) as u64) & 31;
    let off =
        config!(offsets.pid_numbers_nr) as u64 + level as u64 * config!(offsets.upid_size) as u64;
    read_kernel_or_zero::<u32>(pid + off)
}

/// The task's real uid.
pub fn task_uid(task: u64) -> u32 {
    let cred = read_kernel_or_zero::<u64>(task + config!(offsets.task_cred) as u64);
    if cred == 0 {
        return 0;
    }
    read_kernel_or_zero::<u32>(cred + config!(offsets.cred_uid) as u64)
}

/// Usage totals in signal_struct: the threads of the process that are already gone.
pub fn usage_of_signal(task: u64) -> Usage {
    let Some(sig) = read_kernel::<u64>(task + config!(offsets.task_signal) as u64) else {
        return Usage::default();
    };
    let f = |off: u32| read_kernel_or_zero::<u64>(sig + off as u64);
    Usage {
        utime_ns: f(config!(offsets.signal_utime)),
        stime_ns: f(config!(offsets.signal_stime)),
        runtime_ns: f(config!(offsets.signal_runtime)),
        min_flt: f(config!(offsets.signal_min_flt)),
        maj_flt: f(config!(offsets.signal_maj_flt)),
        nvcsw: f(config!(offsets.signal_nvcsw)),
        nivcsw: f(config!(offsets.signal_nivcsw)),
    }
}

/// The `file_key` (device and inode) of the file behind `struct inode *inode`; 0 for none.
pub fn inode_key(inode: u64) -> u64 {
    if inode == 0 {
        return 0;
    }
    let ino = read_kernel_or_zero::<u64>(inode + config!(offsets.inode_ino) as u64);
    let sb = read_kernel_or_zero::<u64>(inode + config!(offsets.inode_sb) as u64);
    let dev = read_kernel_or_zero::<u32>(sb + config!(offsets.sb_dev) as u64);
    // The kernel's dev_t: major above bit 20.
    file_key(dev >> 20, dev & 0xfffff, ino)
}

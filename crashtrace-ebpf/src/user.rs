//! Reads of user memory. A tracepoint runs in the thread it captures and reads the
//! current task's memory; the dump iterator runs in crashtrace and reads another task's.
//! The const parameter picks one at compile time: the verifier refuses
//! bpf_copy_from_user_task in a program that cannot sleep, even on a branch never taken.

use aya_ebpf::{
    bindings::task_struct,
    cty::c_void,
    helpers::generated::{bpf_copy_from_user_task, bpf_probe_read_user},
};

/// `len` bytes at user address `src` into `dst`; 0 on success, as the helpers return.
///
/// # Safety
/// `dst` must have room for `len` bytes. With `OTHER`, `task` must be the trusted task
/// pointer the iterator was given.
#[inline(always)]
pub unsafe fn read_raw<const OTHER: bool>(dst: *mut u8, len: u32, src: u64, task: u64) -> i64 {
    // SAFETY: both helpers tolerate any user address; the caller vouches for dst.
    unsafe {
        if OTHER {
            bpf_copy_from_user_task(
                dst as *mut c_void,
                len,
                src as *const c_void,
                task as *mut task_struct,
                0,
            )
        } else {
            bpf_probe_read_user(dst as *mut c_void, len, src as *const c_void)
        }
    }
}

/// One value of type `T` at user address `addr`.
#[inline(always)]
pub fn read<T, const OTHER: bool>(addr: u64, task: u64) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the destination is a local of the right size.
    let rc =
        unsafe { read_raw::<OTHER>(v.as_mut_ptr() as *mut u8, size_of::<T>() as u32, addr, task) };
    // SAFETY: a successful read filled it.
    (rc == 0).then(|| unsafe { v.assume_init() })
}

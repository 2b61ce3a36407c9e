//! Helpers every program uses: kernel reads, counters, atomics, ring reservations.

use core::intrinsics::AtomicOrdering;

use aya_ebpf::maps::ring_buf::RingBufEntry;
use crashtrace_common::Stat;

use crate::maps::{EVENTS, STATS};

pub fn count(stat: Stat) {
    if let Some(v) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += 1 };
    }
}

/// A ring-buffer record of type `T`, or None with the loss counted: every record is
/// reserved through here, so no drop goes uncounted.
pub fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(Stat::RingFull);
    }
    entry
}

/// Sends a value built elsewhere (a per-CPU scratch record) with one copy; a full ring
/// is counted as for `reserve`.
pub fn output<T: 'static>(value: &T) {
    if EVENTS.output::<T>(value, 0).is_err() {
        count(Stat::RingFull);
    }
}

/// The plain-data `T` at `addr`, all zeros where unreadable: the helper zeroes its
/// destination when the read fails, so no branch and no zeroing loop follow it. Verifier
/// workaround: 6.1's walks both on every path, and ran out of budget on them.
pub fn read_kernel_or_zero<T: Copy>(addr: u64) -> T {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper tolerates any address and writes all size_of::<T>() bytes,
    // read or zero; T is plain data.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            v.as_mut_ptr() as *mut aya_ebpf::cty::c_void,
            size_of::<T>() as u32,
            addr as *const aya_ebpf::cty::c_void,
        );
        v.assume_init()
    }
}

/// The field at `off` of `ptr`, a BTF-typed kernel pointer (a `tp_btf` argument, the
/// current task, or a pointer field read from one), by a plain load: the verifier checks
/// it against BTF and makes it a load that yields zero where it faults, with no helper
/// call. The rejected events' tests use it: a helper call is most of their cost.
/// `off` must be a load-time constant (from `CONFIG`, which the verifier reads as one)
/// naming a field at least `size_of::<T>()` bytes long.
#[inline(always)]
pub fn btf_field<T: Copy>(ptr: u64, off: u32) -> T {
    // SAFETY: the verifier rejects the program unless this names a field of ptr's type,
    // and such a load cannot fault.
    unsafe { core::ptr::read_volatile((ptr + off as u64) as *const T) }
}

pub fn read_kernel<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const T).ok() }
}

/// Atomic add on a map value field (the result is unused: see capture_sibling).
///
/// # Safety
/// `p` must point into a map value.
pub unsafe fn atomic_add32(p: *mut u32, v: u32) {
    // The BPF target has no core::sync::atomic types; the intrinsic lowers to BPF_XADD.
    // SAFETY: the caller passes a pointer into a map value (see # Safety).
    unsafe { core::intrinsics::atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, v) };
}

/// # Safety
/// `p` must point into a map value.
pub unsafe fn atomic_add64(p: *mut u64, v: u64) {
    // SAFETY: as above.
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

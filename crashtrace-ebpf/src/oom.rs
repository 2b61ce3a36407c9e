//! The OOM killer's choice (`mark_victim`), with the victim's memory at that moment and
//! its memory cgroup's limit: what dmesg would say, kept for the victim's report.

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_get_current_task_btf, bpf_probe_read_kernel_str},
    },
};
use crashtrace_common::{OomVictim, RecordHeader, RecordKind, Stat};

use crate::{
    filter::pid_wanted,
    helpers::{count, read_kernel, read_kernel_or_zero, reserve},
    maps::{OOMED, config},
    task::process_comm,
};

const KB_PER_PAGE: u64 = 4;
/// mm_struct.rss_stat indices (enum in include/linux/mm_types_task.h).
const MM_FILEPAGES: u64 = 0;
const MM_ANONPAGES: u64 = 1;
const MM_SWAPENTS: u64 = 2;
const MM_SHMEMPAGES: u64 = 3;

/// `mark_victim(struct task_struct *task, uid_t uid)`, in the allocating task.
pub fn on_mark_victim(task: u64, uid: u32) {
    let Some(pid) = read_kernel::<u32>(task + config!(offsets.task_tgid) as u64) else {
        return;
    };
    count(Stat::OomVictims);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // The SIGKILL that follows reaches the victim's threads as a group exit: this marks
    // it as an OOM kill there.
    let _ = OOMED.insert(pid, now, 0);
    if !pid_wanted(pid) {
        return;
    }
    let Some(mut entry) = reserve::<OomVictim>() else {
        return;
    };
    let rec = entry.as_mut_ptr();
    let mm = read_kernel_or_zero::<u64>(task + config!(offsets.task_mm) as u64);
    let rss = |i: u64| -> u64 {
        if mm == 0 {
            return 0;
        }
        let off = config!(offsets.mm_rss_count) as u64 + i * config!(offsets.mm_rss_stride) as u64;
        read_kernel_or_zero::<i64>(mm + off).max(0) as u64 * KB_PER_PAGE
    };
    let killer = bpf_get_current_pid_tgid();
    // SAFETY: `rec` points at a reserved OomVictim; every field is written below.
    unsafe {
        (*rec).header = RecordHeader::of::<OomVictim>(
            RecordKind::OomVictim,
            now,
            pid,
            read_kernel_or_zero::<u32>(task + config!(offsets.task_pid) as u64),
        );
        (*rec).killer_pid = (killer >> 32) as u32;
        (*rec).uid = uid;
        let current = bpf_get_current_task_btf() as u64;
        (*rec).killer_comm = process_comm(current);
        (*rec).total_vm_kb = if mm != 0 {
            read_kernel_or_zero::<u64>(mm + config!(offsets.mm_total_vm) as u64) * KB_PER_PAGE
        } else {
            0
        };
        (*rec).anon_rss_kb = rss(MM_ANONPAGES);
        (*rec).file_rss_kb = rss(MM_FILEPAGES);
        (*rec).shmem_rss_kb = rss(MM_SHMEMPAGES);
        (*rec).swap_kb = rss(MM_SWAPENTS);
        // task->cgroups->subsys[memory_cgrp_id]: the css is mem_cgroup's first member.
        let cset = read_kernel_or_zero::<u64>(task + config!(offsets.task_cgroups) as u64);
        let css = if cset != 0 {
            read_kernel_or_zero::<u64>(cset + config!(offsets.css_set_memory) as u64)
        } else {
            0
        };
        (*rec).memcg_name = [0; 64];
        if css != 0 {
            (*rec).memcg_limit_kb =
                read_kernel_or_zero::<u64>(css + config!(offsets.memcg_max) as u64) * KB_PER_PAGE;
            (*rec).memcg_usage_kb =
                read_kernel_or_zero::<u64>(css + config!(offsets.memcg_usage) as u64) * KB_PER_PAGE;
            let cgrp = read_kernel_or_zero::<u64>(css + config!(offsets.css_cgroup) as u64);
            let kn = read_kernel_or_zero::<u64>(cgrp + config!(offsets.cgroup_kn) as u64);
            let name = read_kernel_or_zero::<u64>(kn + config!(offsets.kn_name) as u64);
            bpf_probe_read_kernel_str(
                (*rec).memcg_name.as_mut_ptr() as *mut c_void,
                64,
                name as *const c_void,
            );
        } else {
            (*rec).memcg_limit_kb = 0;
            (*rec).memcg_usage_kb = 0;
        }
    }
    entry.submit(0);
}

//! Kernel structure offsets from the running kernel's BTF.
//!
//! Rust eBPF programs carry no CO-RE relocations, so the few kernel fields they read
//! are located here, at load time, and handed to them as globals.

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use crashtrace_common::KernelOffsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub fn load_vmlinux() -> Result<Btf> {
    if !std::path::Path::new(VMLINUX_BTF).exists() {
        bail!(
            "this kernel exposes no BTF ({VMLINUX_BTF} is missing): crashtrace needs a kernel built \
             with CONFIG_DEBUG_INFO_BTF=y (every major distribution kernel since 2021 has it)"
        );
    }
    // Read whole first: parsing straight from the file seeks once per type (over 100 000
    // system calls; about twice the parse time).
    let bytes = std::fs::read(VMLINUX_BTF).with_context(|| format!("reading {VMLINUX_BTF}"))?;
    Btf::from_bytes(&bytes).map_err(|e| anyhow!("cannot parse {VMLINUX_BTF}: {e}"))
}

pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets> {
    let shmem = member_offset(btf, "shmem_sb_info", "max_blocks")
        .and_then(|max| {
            let used = member_offset(btf, "shmem_sb_info", "used_blocks")?
                + member_offset(btf, "percpu_counter", "count")?;
            Ok((max, used))
        })
        .ok();
    let rss = rss_layout(btf)?;
    Ok(KernelOffsets {
        task_group_leader: member_offset(btf, "task_struct", "group_leader")?,
        task_comm: member_offset(btf, "task_struct", "comm")?,
        task_real_parent: member_offset(btf, "task_struct", "real_parent")?,
        task_tgid: member_offset(btf, "task_struct", "tgid")?,
        task_mm: member_offset(btf, "task_struct", "mm")?,
        task_signal: member_offset(btf, "task_struct", "signal")?,
        task_exit_code: member_offset(btf, "task_struct", "exit_code")?,
        task_start_time: member_offset(btf, "task_struct", "start_time")?,
        task_utime: member_offset(btf, "task_struct", "utime")?,
        task_stime: member_offset(btf, "task_struct", "stime")?,
        task_runtime: member_offset(btf, "task_struct", "se.sum_exec_runtime")?,
        task_min_flt: member_offset(btf, "task_struct", "min_flt")?,
        task_maj_flt: member_offset(btf, "task_struct", "maj_flt")?,
        task_nvcsw: member_offset(btf, "task_struct", "nvcsw")?,
        task_nivcsw: member_offset(btf, "task_struct", "nivcsw")?,
        signal_live: member_offset(btf, "signal_struct", "live")?,
        signal_maxrss: member_offset(btf, "signal_struct", "maxrss")?,
        signal_utime: member_offset(btf, "signal_struct", "utime")?,
        signal_stime: member_offset(btf, "signal_struct", "stime")?,
        signal_runtime: member_offset(btf, "signal_struct", "sum_sched_runtime")?,
        signal_min_flt: member_offset(btf, "signal_struct", "min_flt")?,
        signal_maj_flt: member_offset(btf, "signal_struct", "maj_flt")?,
        signal_nvcsw: member_offset(btf, "signal_struct", "nvcsw")?,
        signal_nivcsw: member_offset(btf, "signal_struct", "nivcsw")?,
        mm_exe_file: member_offset(btf, "mm_struct", "exe_file")?,
        mm_env_start: member_offset(btf, "mm_struct", "env_start")?,
        mm_env_end: member_offset(btf, "mm_struct", "env_end")?,
        file_dentry: member_offset(btf, "file", "f_path.dentry")?,
        dentry_name: member_offset(btf, "dentry", "d_name.name")?,
        task_cred: member_offset(btf, "task_struct", "cred")?,
        cred_uid: member_offset(btf, "cred", "uid")?,
        signal_group_exit_code: member_offset(btf, "signal_struct", "group_exit_code")?,
        vma_start: member_offset(btf, "vm_area_struct", "vm_start")?,
        vma_end: member_offset(btf, "vm_area_struct", "vm_end")?,
        vma_flags: member_offset(btf, "vm_area_struct", "vm_flags")?,
        vma_pgoff: member_offset(btf, "vm_area_struct", "vm_pgoff")?,
        vma_file: member_offset(btf, "vm_area_struct", "vm_file")?,
        task_cgroups: member_offset(btf, "task_struct", "cgroups")?,
        css_set_memory: member_offset(btf, "css_set", "subsys")?
            + 8 * enum_value(btf, "cgroup_subsys_id", "memory_cgrp_id")?,
        css_cgroup: member_offset(btf, "cgroup_subsys_state", "cgroup")?,
        cgroup_kn: member_offset(btf, "cgroup", "kn")?,
        kn_name: member_offset(btf, "kernfs_node", "name")?,
        memcg_max: member_offset(btf, "mem_cgroup", "memory")?
            + member_offset(btf, "page_counter", "max")?,
        memcg_usage: member_offset(btf, "mem_cgroup", "memory")?
            + member_offset(btf, "page_counter", "usage")?,
        mm_total_vm: member_offset(btf, "mm_struct", "total_vm")?,
        mm_rss_count: rss.0,
        mm_rss_stride: rss.1,
        task_pid: member_offset(btf, "task_struct", "pid")?,
        task_thread_pid: member_offset(btf, "task_struct", "thread_pid")?,
        pid_level: member_offset(btf, "pid", "level")?,
        pid_numbers_nr: member_offset(btf, "pid", "numbers")? + member_offset(btf, "upid", "nr")?,
        upid_size: struct_size(btf, "upid")?,
        task_fsbase: member_offset(btf, "task_struct", "thread.fsbase")?,
        file_inode: member_offset(btf, "file", "f_inode")?,
        inode_ino: member_offset(btf, "inode", "i_ino")?,
        inode_size: member_offset(btf, "inode", "i_size")?,
        inode_sb: member_offset(btf, "inode", "i_sb")?,
        sb_magic: member_offset(btf, "super_block", "s_magic")?,
        sb_dev: member_offset(btf, "super_block", "s_dev")?,
        sb_fs_info: member_offset(btf, "super_block", "s_fs_info")?,
        // Only for the SIGBUS cause: a kernel without them still loads.
        shmem_max_blocks: shmem.map_or(0, |s| s.0),
        shmem_used_blocks: shmem.map_or(0, |s| s.1),
        shmem_known: shmem.is_some() as u32,
        task_files: member_offset(btf, "task_struct", "files")?,
        files_fdt: member_offset(btf, "files_struct", "fdt")?,
        task_state: member_offset(btf, "task_struct", "__state")?,
        task_on_cpu: member_offset(btf, "task_struct", "on_cpu")?,
        fdt_max_fds: member_offset(btf, "fdtable", "max_fds")?,
        fdt_fd: member_offset(btf, "fdtable", "fd")?,
        inode_mode: member_offset(btf, "inode", "i_mode")?,
        inode_rdev: member_offset(btf, "inode", "i_rdev")?,
        _pad: 0,
    })
}

/// Where `mm_struct`'s page counters are: (offset of the first count, distance to the
/// next). Before 6.2 `rss_stat` is a struct holding an array of atomic longs; since, an
/// array of per-CPU counters, whose `count` is the sum as of the last fold.
fn rss_layout(btf: &Btf) -> Result<(u32, u32)> {
    if let Ok(off) = member_offset(btf, "mm_struct", "rss_stat.count") {
        return Ok((off, 8));
    }
    Ok((
        member_offset(btf, "mm_struct", "rss_stat")?
            + member_offset(btf, "percpu_counter", "count")?,
        struct_size(btf, "percpu_counter")?,
    ))
}

/// Size in bytes of `struct name`.
pub fn struct_size(btf: &Btf, name: &str) -> Result<u32> {
    btf.resolve_types_by_name(name)
        .map_err(|e| anyhow!("BTF has no type {name}: {e}"))?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s.size() as u32),
            _ => None,
        })
        .with_context(|| format!("BTF has no struct {name}"))
}

/// The value of enumerator `member` of `enum name`.
pub fn enum_value(btf: &Btf, name: &str, member: &str) -> Result<u32> {
    for t in btf
        .resolve_types_by_name(name)
        .map_err(|e| anyhow!("BTF has no type {name}: {e}"))?
    {
        if let Type::Enum(e) = t {
            for m in &e.members {
                if btf.resolve_name(m).unwrap_or_default() == member {
                    return Ok(m.val());
                }
            }
        }
    }
    bail!("enum {name} has no {member} in this kernel")
}

/// Byte offset of `path` (dot-separated, e.g. `se.sum_exec_runtime`) inside `struct name`,
/// looking through anonymous structs and unions.
pub fn member_offset(btf: &Btf, name: &str, path: &str) -> Result<u32> {
    let root = btf
        .resolve_types_by_name(name)
        .map_err(|e| anyhow!("BTF has no type {name}: {e}"))?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(_)))
        .with_context(|| format!("BTF has no struct {name}"))?;
    let mut ty = root;
    let mut bits = 0u32;
    for field in path.split('.') {
        let (off, member_ty) = find_member(btf, &ty, field)?
            .with_context(|| format!("struct {name} has no member {path} in this kernel"))?;
        bits += off;
        ty = member_ty;
    }
    if !bits.is_multiple_of(8) {
        bail!("{name}.{path} is a bitfield");
    }
    Ok(bits / 8)
}

/// Finds `field` in a struct/union type, descending into anonymous members.
/// Returns the bit offset and the member's type (typedefs and qualifiers resolved).
fn find_member(btf: &Btf, ty: &Type, field: &str) -> Result<Option<(u32, Type)>> {
    let members = match ty {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => return Ok(None),
    };
    for m in members {
        let member_name = btf.resolve_name(m).unwrap_or_default();
        let member_ty = resolve(
            btf,
            btf.resolve_chained_type(m).map_err(|e| anyhow!("{e}"))?,
        )?;
        if member_name == field {
            return Ok(Some((m.bit_offset(), member_ty)));
        }
        if member_name.is_empty()
            && let Some((off, t)) = find_member(btf, &member_ty, field)?
        {
            return Ok(Some((m.bit_offset() + off, t)));
        }
    }
    Ok(None)
}

/// Strips typedefs and qualifiers.
fn resolve(btf: &Btf, mut ty: Type) -> Result<Type> {
    for _ in 0..32 {
        match &ty {
            Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) => {
                let inner = ty
                    .as_btf_type()
                    .ok_or_else(|| anyhow!("BTF type without id"))?;
                ty = btf
                    .resolve_chained_type(inner)
                    .map_err(|e| anyhow!("{e}"))?;
            }
            _ => return Ok(ty),
        }
    }
    Err(anyhow!("BTF typedef chain too long"))
}

//! Load-time configuration of the eBPF programs and their counters.

use crate::{DEFAULT_STACK_BYTES, MAX_COMM_FILTERS, MAX_PID_FILTERS, TASK_COMM_LEN};

/// One `--comm` pattern, matched in the kernel against the first 16 bytes of the process's
/// name and of its executable's name: two masked 8-byte compares, no loop (older
/// verifiers walk every iteration of a byte loop for every pattern).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommPattern {
    /// The pattern's bytes, then a NUL where the name must end (an exact pattern).
    pub bytes: [u64; 2],
    /// All ones over the bytes compared: the pattern's, and its NUL if exact.
    pub mask: [u64; 2],
}

impl CommPattern {
    /// `name` (1 to 15 bytes, no NUL) as a prefix, or as the whole name when `exact`.
    pub fn new(name: &[u8], exact: bool) -> Self {
        let mut bytes = [0u8; TASK_COMM_LEN];
        let mut mask = [0u8; TASK_COMM_LEN];
        let n = name.len().min(TASK_COMM_LEN - 1);
        bytes[..n].copy_from_slice(&name[..n]);
        let compared = if exact { n + 1 } else { n };
        mask[..compared].fill(0xff);
        let word = |b: &[u8; TASK_COMM_LEN], i: usize| {
            u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]))
        };
        Self {
            bytes: [word(&bytes, 0), word(&bytes, 1)],
            mask: [word(&mask, 0), word(&mask, 1)],
        }
    }

    /// Whether a NUL-padded name, as its two words, matches.
    #[inline(always)]
    pub fn matches(&self, name: [u64; 2]) -> bool {
        name[0] & self.mask[0] == self.bytes[0] && name[1] & self.mask[1] == self.bytes[1]
    }
}

/// The offset `sched_process_exit` loads `task_struct.exit_code` from, as compiled: the
/// loader writes the kernel's real offset into that one instruction (see
/// `crashtrace::capture::patch`). Far beyond any `task_struct`, so a load left unpatched
/// is refused by the verifier, never run.
pub const EXIT_CODE_PLACEHOLDER: i16 = 0x7ffc;

/// Kernel structure offsets the eBPF side needs, read from the running kernel's BTF
/// at load time (Rust eBPF emits no CO-RE relocations).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_group_leader: u32,
    pub task_comm: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_exit_code: u32,
    pub task_start_time: u32,
    pub task_utime: u32,
    pub task_stime: u32,
    pub task_runtime: u32,
    pub task_min_flt: u32,
    pub task_maj_flt: u32,
    pub task_nvcsw: u32,
    pub task_nivcsw: u32,
    pub signal_live: u32,
    pub signal_maxrss: u32,
    pub signal_utime: u32,
    pub signal_stime: u32,
    pub signal_runtime: u32,
    pub signal_min_flt: u32,
    pub signal_maj_flt: u32,
    pub signal_nvcsw: u32,
    pub signal_nivcsw: u32,
    pub mm_exe_file: u32,
    /// `mm_struct.env_start` and `.env_end`: the environment block on the initial stack.
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    /// `file.f_path.dentry`
    pub file_dentry: u32,
    /// `dentry.d_name.name`
    pub dentry_name: u32,
    pub task_cred: u32,
    /// `cred.uid`
    pub cred_uid: u32,
    pub signal_group_exit_code: u32,
    pub vma_start: u32,
    pub vma_end: u32,
    pub vma_flags: u32,
    pub vma_pgoff: u32,
    pub vma_file: u32,
    pub task_cgroups: u32,
    /// `css_set.subsys[memory_cgrp_id]`
    pub css_set_memory: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kn_name: u32,
    /// `mem_cgroup.memory.max` and `.usage` (pages); `css` is mem_cgroup's first member.
    pub memcg_max: u32,
    pub memcg_usage: u32,
    pub mm_total_vm: u32,
    /// `mm_struct.rss_stat[0].count`, and the stride of that array.
    pub mm_rss_count: u32,
    pub mm_rss_stride: u32,
    pub task_pid: u32,
    pub task_thread_pid: u32,
    pub pid_level: u32,
    /// `pid.numbers[0].nr`, and the stride of that array.
    pub pid_numbers_nr: u32,
    pub upid_size: u32,
    /// `task_struct.thread.fsbase`: what pthread_self() and CPython's thread_id hold.
    pub task_fsbase: u32,
    /// `file.f_inode` and `inode.i_ino`: which executable a process runs.
    pub file_inode: u32,
    pub inode_ino: u32,
    /// `inode.i_size`: a mapped file's size at a fault.
    pub inode_size: u32,
    /// `inode.i_sb`, `super_block.s_magic` and `.s_fs_info`, and in tmpfs's
    /// `shmem_sb_info` its `max_blocks` and `used_blocks.count` (pages): how full the
    /// tmpfs (/dev/shm) behind a SIGBUS was. `shmem_known` is 0 where BTF lacks them.
    pub inode_sb: u32,
    pub sb_magic: u32,
    /// `super_block.s_dev`: the device of a mapped file, with its inode its identity.
    pub sb_dev: u32,
    pub sb_fs_info: u32,
    pub shmem_max_blocks: u32,
    pub shmem_used_blocks: u32,
    pub shmem_known: u32,
    /// `task_struct.files`, `files_struct.fdt`, `fdtable.max_fds` and `.fd`, and
    /// `inode.i_mode` and `.i_rdev`: the GPU devices a crashing process had open.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub inode_mode: u32,
    pub inode_rdev: u32,
    /// `task_struct.__state` and `.on_cpu`: how far a dumped thread's stack can be trusted.
    pub task_state: u32,
    pub task_on_cpu: u32,
    /// Keeps the size a multiple of 8 (Config holds u64s): no hidden padding.
    pub _pad: u32,
}

/// Load-time configuration of the eBPF programs, set as one global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bit n set: signal n is captured, whoever sent it (the crash signals).
    pub signal_mask: u64,
    /// Bit n set: signal n is captured when another process sent it and it ends the
    /// process (default action): kills by supervisors, `kill -9`, ...
    pub kill_mask: u64,
    /// crashtrace's own process id: never captured.
    pub self_pid: u32,
    /// Bytes of stack to copy, a multiple of STACK_CHUNK, at most MAX_STACK_BYTES.
    pub stack_bytes: u32,
    pub pid_count: u32,
    pub comm_count: u32,
    /// 1: the kernel has bpf_loop and bpf_find_vma (5.17), and the records after a
    /// capture (Python stacks, memory, faulting mapping, an overflowed stack's top) are
    /// made; 0: they are not, and the verifier never walks their code (a constant).
    pub extras: u32,
    pub _pad: u32,
    pub pids: [u32; MAX_PID_FILTERS],
    pub comms: [CommPattern; MAX_COMM_FILTERS],
    pub offsets: KernelOffsets,
}

impl Config {
    pub const fn empty() -> Self {
        Self {
            signal_mask: 0,
            kill_mask: 0,
            self_pid: 0,
            stack_bytes: DEFAULT_STACK_BYTES,
            pid_count: 0,
            comm_count: 0,
            extras: 1,
            _pad: 0,
            pids: [0; MAX_PID_FILTERS],
            comms: [CommPattern {
                bytes: [0; 2],
                mask: [0; 2],
            }; MAX_COMM_FILTERS],
            offsets: KernelOffsets {
                task_group_leader: 0,
                task_comm: 0,
                task_real_parent: 0,
                task_tgid: 0,
                task_mm: 0,
                task_signal: 0,
                task_exit_code: 0,
                task_start_time: 0,
                task_utime: 0,
                task_stime: 0,
                task_runtime: 0,
                task_min_flt: 0,
                task_maj_flt: 0,
                task_nvcsw: 0,
                task_nivcsw: 0,
                signal_live: 0,
                signal_maxrss: 0,
                signal_utime: 0,
                signal_stime: 0,
                signal_runtime: 0,
                signal_min_flt: 0,
                signal_maj_flt: 0,
                signal_nvcsw: 0,
                signal_nivcsw: 0,
                mm_exe_file: 0,
                mm_env_start: 0,
                mm_env_end: 0,
                file_dentry: 0,
                dentry_name: 0,
                task_cred: 0,
                cred_uid: 0,
                signal_group_exit_code: 0,
                vma_start: 0,
                vma_end: 0,
                vma_flags: 0,
                vma_pgoff: 0,
                vma_file: 0,
                task_cgroups: 0,
                css_set_memory: 0,
                css_cgroup: 0,
                cgroup_kn: 0,
                kn_name: 0,
                memcg_max: 0,
                memcg_usage: 0,
                mm_total_vm: 0,
                mm_rss_count: 0,
                mm_rss_stride: 0,
                task_pid: 0,
                task_thread_pid: 0,
                pid_level: 0,
                pid_numbers_nr: 0,
                upid_size: 0,
                task_fsbase: 0,
                file_inode: 0,
                inode_ino: 0,
                inode_size: 0,
                inode_sb: 0,
                sb_magic: 0,
                sb_dev: 0,
                sb_fs_info: 0,
                shmem_max_blocks: 0,
                shmem_used_blocks: 0,
                shmem_known: 0,
                task_files: 0,
                files_fdt: 0,
                fdt_max_fds: 0,
                fdt_fd: 0,
                inode_mode: 0,
                inode_rdev: 0,
                task_state: 0,
                task_on_cpu: 0,
                _pad: 0,
            },
        }
    }
}

/// Indices into the per-CPU `STATS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Signals of the configured set that passed the filters.
    Matched = 0,
    /// Captures written to the ring buffer.
    Captured = 1,
    /// Captures lost because the ring buffer was full.
    RingFull = 2,
    /// Captures whose registers could not be read.
    RegsFailed = 3,
    /// Other threads of crashing processes captured at the group exit.
    ThreadsCaptured = 4,
    /// Exit records lost because the ring buffer was full.
    ExitsLost = 5,
    /// Crashing processes not tracked to their exit (the state map was full).
    StateFull = 6,
    /// OOM victims seen.
    OomVictims = 7,
    /// Signals a process handles, not captured: over the per-process rate.
    HandledLimited = 8,
}
pub const STAT_COUNT: u32 = 9;

/// Signals whose default action is to stop or be ignored (signal(7)): SIGCHLD, SIGCONT,
/// SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU, SIGURG, SIGWINCH. They end no process, so neither
/// `--signals` nor `--kills` takes them, and the programs drop them on a constant test
/// before reading anything (SIGCHLD alone comes with every process exit).
pub const NEVER_WANTED_SIGNALS: u64 =
    1 << 17 | 1 << 18 | 1 << 19 | 1 << 20 | 1 << 21 | 1 << 22 | 1 << 23 | 1 << 28;

/// Captures of signals a process handles (a `siglongjmp` loop, a JVM's implicit null
/// checks) allowed per process per `HANDLED_WINDOW_NS`; the rest are counted only, so
/// one process cannot fill the ring buffer that everyone's crashes go through.
pub const HANDLED_PER_WINDOW: u32 = 8;
pub const HANDLED_WINDOW_NS: u64 = 1_000_000_000;
/// A handler that ends its process another way than re-raising (Go's runtime exits with
/// status 2, a crash reporter calls `_exit` or `abort`) does so this soon after the fault;
/// a later exit or signal is the process's own business, not the fault's outcome.
pub const HANDLED_END_NS: u64 = 3_000_000_000;

/// The rate state of one process's handled signals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HandledRate {
    pub window_start_ns: u64,
    pub count: u32,
    pub _pad: u32,
    /// When the last handled signal was captured.
    pub last_ns: u64,
    /// The process's start time: an entry left by a process that exited normally (its
    /// exit does no lookup) must not count for a later process given the same pid.
    pub start_ns: u64,
}

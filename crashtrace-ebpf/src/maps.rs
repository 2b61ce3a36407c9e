//! Every map and the load-time configuration, in one place: the programs share them.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use crashtrace_common::{Config, CrashState, HandledRate, LibcFile, PyProc, STAT_COUNT, Sender};

/// Load-time configuration; the loader overwrites it with `EbpfLoader::set_global`.
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config::empty();

/// Kernel-to-user records. The loader may resize it (`--ring-buffer-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Per-CPU counters, indexed by `Stat`: drops are counted here, never silent.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Processes that received a fatal signal, by process id, until their exit. LRU so a
/// lost exit can never leak an entry for good.
#[map]
pub static CRASHED: LruHashMap<u32, CrashState> = LruHashMap::with_max_entries(4096, 0);

/// The last signal of interest another process sent to a process, by target process id.
#[map]
pub static SENDERS: LruHashMap<u32, Sender> = LruHashMap::with_max_entries(4096, 0);

/// Processes the OOM killer chose, by process id: their SIGKILL is an OOM kill.
#[map]
pub static OOMED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);

/// Python processes, by process id: where their runtime is and its layout. Written by
/// crashtrace when it sees the interpreter mapped; removed when the process exits. LRU
/// so entries registered for a process that had already exited cannot fill it.
#[map]
pub static PYPROCS: LruHashMap<u32, PyProc> = LruHashMap::with_max_entries(16384, 0);

/// glibc files by `file_key` (device and inode): where `__abort_msg` is in each. Written by crashtrace for the
/// installed libc at start and for each other one (a container's) when it is mapped.
#[map]
pub static LIBC_FILES: HashMap<u64, LibcFile> = HashMap::with_max_entries(256, 0);

/// Handled-signal captures per process in the current window (see HANDLED_PER_WINDOW).
#[map]
pub static HANDLED: LruHashMap<u32, HandledRate> = LruHashMap::with_max_entries(4096, 0);

/// Non-PIE interpreters (Debian's /usr/bin/python3.x), by the executable's `file_key`:
/// their runtime has the same address in every process, so a process that crashes
/// before crashtrace has registered it is still read.
#[map]
pub static PYFILES: HashMap<u64, PyProc> = HashMap::with_max_entries(256, 0);

/// The Python thread record being assembled (too big for the BPF stack, and written
/// from loop callbacks), sent with one copy.
#[map]
pub static PY_SCRATCH: PerCpuArray<crashtrace_common::PyThread> =
    PerCpuArray::with_max_entries(1, 0);

/// Code objects already sent, by (process id, address): each is sent once.
#[map]
pub static PY_CODES_SEEN: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// The processes `crashtrace dump` reads, by process id; the value turns 1 once their
/// Python threads have been read (once per process, from whichever thread comes first).
#[map]
pub static DUMP_TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Reads a field of the `CONFIG` global. Volatile so the compiler cannot fold the
/// compiled-in defaults: the loader rewrites them.
macro_rules! config {
    ($($field:tt)+) => {{
        // SAFETY: CONFIG is a plain static; the loader only writes it before load.
        // (Also used inside unsafe blocks, where this one is redundant.)
        #[allow(unused_unsafe)]
        let v = unsafe { ::core::ptr::read_volatile(::core::ptr::addr_of!($crate::maps::CONFIG.$($field)+)) };
        v
    }};
}
pub(crate) use config;

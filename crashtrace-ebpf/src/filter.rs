//! In-kernel filters, applied before anything is copied.

use crashtrace_common::{
    EXE_NAME_LEN, MAX_COMM_FILTERS, MAX_PID_FILTERS, NEVER_WANTED_SIGNALS, TASK_COMM_LEN,
};

use crate::maps::config;

/// The test before all others: a constant, so it touches no memory (the programs' data
/// is cache-cold in a process that has just forked or is exiting).
#[inline(always)]
pub fn never_wanted(sig: i32) -> bool {
    !(1..64).contains(&sig) || NEVER_WANTED_SIGNALS & (1u64 << sig) != 0
}

pub fn signal_wanted(sig: i32) -> bool {
    if !(1..64).contains(&sig) {
        return false;
    }
    config!(signal_mask) & (1u64 << sig) != 0
}

/// A signal that ends the process when another process sends it.
pub fn kill_wanted(sig: i32) -> bool {
    if !(1..64).contains(&sig) {
        return false;
    }
    config!(kill_mask) & (1u64 << sig) != 0
}

pub fn pid_wanted(pid: u32) -> bool {
    if pid == config!(self_pid) {
        return false;
    }
    let n = config!(pid_count);
    if n == 0 {
        return true;
    }
    for i in 0..MAX_PID_FILTERS {
        if i as u32 >= n {
            break;
        }
        if config!(pids[i]) == pid {
            return true;
        }
    }
    false
}

/// `--comm`: the process name or the executable's base name matches one pattern, by
/// prefix or exactly. (A renamed process, like a PyTorch worker, keeps its executable.)
pub fn comm_wanted(name: &[u8; TASK_COMM_LEN], exe: &[u8; EXE_NAME_LEN]) -> bool {
    let n = config!(comm_count);
    if n == 0 {
        return true;
    }
    for i in 0..MAX_COMM_FILTERS {
        if i as u32 >= n {
            break;
        }
        if comm_matches(i, name) || comm_matches(i, exe) {
            return true;
        }
    }
    false
}

fn comm_matches<const N: usize>(i: usize, name: &[u8; N]) -> bool {
    let len = config!(comms[i].len) as usize;
    for (j, &c) in name.iter().take(TASK_COMM_LEN).enumerate() {
        if j >= len {
            break;
        }
        if c != config!(comms[i].bytes[j]) {
            return false;
        }
    }
    if config!(comms[i].exact) != 0 {
        // The loader guarantees len < TASK_COMM_LEN; the mask keeps the verifier sure.
        return name[len & (TASK_COMM_LEN - 1)] == 0;
    }
    true
}

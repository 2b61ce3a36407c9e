//! In-kernel filters, applied before anything is copied.

use crashtrace_common::{MAX_COMM_FILTERS, MAX_PID_FILTERS, NEVER_WANTED_SIGNALS};

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
/// Both names come as their first 16 bytes in two words (see `CommPattern`).
pub fn comm_wanted(name: [u64; 2], exe: [u64; 2]) -> bool {
    let n = config!(comm_count);
    if n == 0 {
        return true;
    }
    for i in 0..MAX_COMM_FILTERS {
        if i as u32 >= n {
            break;
        }
        // Field by field: a copy of the whole pattern would take stack.
        let p = crashtrace_common::CommPattern {
            bytes: [config!(comms[i].bytes[0]), config!(comms[i].bytes[1])],
            mask: [config!(comms[i].mask[0]), config!(comms[i].mask[1])],
        };
        if p.matches(name) || p.matches(exe) {
            return true;
        }
    }
    false
}

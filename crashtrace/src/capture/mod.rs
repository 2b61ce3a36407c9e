//! The capture stage: the kernel side and what user space keeps current beside it.
//!
//! The eBPF programs (crashtrace-ebpf) are loaded here and their ring-buffer records
//! decoded; the kernel's mmap/fork/exec/exit records keep a table of every process's
//! executable mappings, and the files behind them are pinned while they still exist.

pub mod btf;
pub mod features;
pub mod iter;
pub mod loader;
mod patch;
pub mod perf;
pub mod pins;
pub mod processes;
pub mod records;
pub mod ring;
pub mod sideband;

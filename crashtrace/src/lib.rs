//! crashtrace: symbolized native stacks of crashing processes, captured with eBPF.
//!
//! The data path, top to bottom (see `monitor`):
//! kernel `signal_deliver` capture (crashtrace-ebpf) → ring buffer → [`events`] decode →
//! [`procmaps`] (mappings kept current by [`perf`]) → [`unwind`] (DWARF CFI over the copied
//! stack) → [`symbolize`] (names from the files, after the process is gone) → [`report`].

pub mod analyze;
pub mod cgroups;
pub mod cli;
pub mod debuginfod;
pub mod events;
pub mod kernel_btf;
pub mod loader;
pub mod modules;
pub mod monitor;
pub mod perf;
pub mod procmaps;
pub mod python;
pub mod report;
pub mod signals;
pub mod symbolize;
pub mod unwind;

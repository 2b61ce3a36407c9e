//! The lowest layer: facts about the system that every stage may need (signal names,
//! `/proc`, build-ID paths, cgroups, wait statuses). No module here imports another
//! layer of crashtrace.

pub mod buildid;
pub mod cgroups;
pub mod escape;
pub mod files;
pub mod kmsg;
pub mod notify;
pub mod procfs;
pub mod signals;
pub mod wait;

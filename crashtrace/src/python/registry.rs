//! Which processes run CPython, told to the eBPF program before they can crash: an
//! interpreter's runtime address is found when its file is mapped, and forks inherit it.

use std::{collections::HashSet, fs::File, sync::Arc};

use crashtrace_common::file_key;

use super::{layouts, runtime};
use crate::{
    capture::{
        loader::{PyFiles, PyProcs},
        perf::Lifecycle,
    },
    symbolize::elf::ModuleCache,
    sys::procfs::Mapping,
};

/// Where non-PIE interpreters are installed (Debian's `/usr/bin/python3.x`).
const INTERPRETER_DIRS: [&str; 3] = ["/usr/bin", "/usr/local/bin", "/bin"];

/// Python processes tracked at most (the kernel map's size).
const MAX_TRACKED: usize = 16384;

pub struct PythonRegistry {
    /// Python processes known to the eBPF program.
    procs: PyProcs,
    /// Non-PIE interpreters by `file_key` (device and inode).
    files: PyFiles,
    /// The keys of `procs`, so that forks and exits of other processes cost no syscall.
    pids: HashSet<u32>,
}

impl PythonRegistry {
    pub fn new(procs: PyProcs, files: PyFiles) -> Self {
        Self {
            procs,
            files,
            pids: HashSet::new(),
        }
    }

    /// Non-PIE interpreters installed on the machine: known by inode before any of them
    /// runs, so even one that crashes within milliseconds of its start is read.
    pub fn register_installed(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        for dir in INTERPRETER_DIRS {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let name = path.to_string_lossy().into_owned();
                let Some(version) = runtime::version_from_name(&name) else {
                    continue;
                };
                let (Ok(md), Ok(module)) = (
                    std::fs::metadata(&path),
                    crate::symbolize::elf::ElfModule::open(&path),
                ) else {
                    continue;
                };
                if runtime::fixed_address(&module)
                    && let Some(p) = runtime::proc_for(&module, version, 0)
                {
                    log::info!("python {version:?} at {name} (inode {})", md.ino());
                    let key = file_key(libc::major(md.dev()), libc::minor(md.dev()), md.ino());
                    let _ = self.files.insert(key, p, 0);
                }
            }
        }
    }

    /// A process forked, exec'd or exited: a Python parent's fork is Python too; an
    /// exec or exit ends what was known.
    pub fn on_lifecycle(&mut self, e: &Lifecycle) {
        match *e {
            Lifecycle::Exec(pid) | Lifecycle::Exit(pid) => {
                if self.pids.remove(&pid) {
                    let _ = self.procs.remove(&pid);
                }
            }
            Lifecycle::Fork(child, parent) => {
                if self.pids.contains(&parent)
                    && let Ok(p) = self.procs.get(&parent, 0)
                    && self.procs.insert(child, p, 0).is_ok()
                {
                    self.pids.insert(child);
                }
            }
        }
    }

    /// A new mapping of process `pid`: if it is an interpreter, tell the eBPF program
    /// where its runtime is.
    pub fn on_mapping(
        &mut self,
        pid: u32,
        m: &Mapping,
        modules: &mut ModuleCache,
        pinned: Option<Arc<File>>,
    ) {
        let Some(version) = runtime::version_from_name(&m.path) else {
            return;
        };
        if layouts::offsets(version).is_none() {
            log::info!(
                "{} of pid {pid}: CPython {version:?} is not supported",
                m.path
            );
            return;
        }
        let Ok(module) = modules.get_pinned(m, pinned) else {
            return;
        };
        let Some(proc_) = module
            .bias(m)
            .and_then(|bias| runtime::proc_for(&module, version, bias))
        else {
            return;
        };
        if runtime::fixed_address(&module) {
            let key = file_key(m.dev_major, m.dev_minor, m.inode);
            let _ = self.files.insert(key, proc_, 0);
        }
        log::info!(
            "python {version:?} in pid {pid}: runtime at 0x{:x}",
            proc_.runtime
        );
        match self.procs.insert(pid, proc_, 0) {
            // Registered after the process exited: its exit record, which removes
            // entries, has passed, so remove it here.
            Ok(()) if !alive(pid) => {
                let _ = self.procs.remove(&pid);
            }
            Ok(()) => self.track(pid),
            Err(e) => log::warn!("cannot track Python process {pid}: {e}"),
        }
    }

    /// A signal of process `pid` was captured: the eBPF side registers a non-PIE
    /// interpreter's process itself then. Track it so that its exit removes the entry
    /// (the kernel's exit program leaves that to crashtrace).
    pub fn on_capture(&mut self, pid: u32) {
        if self.pids.contains(&pid) || self.procs.get(&pid, 0).is_err() {
            return;
        }
        if alive(pid) {
            self.track(pid);
        } else {
            // Its exit record has been applied already.
            let _ = self.procs.remove(&pid);
        }
    }

    fn track(&mut self, pid: u32) {
        if self.pids.len() >= MAX_TRACKED {
            // Exits missed (lost records): keep the live ones.
            self.pids.retain(|&p| alive(p));
        }
        self.pids.insert(pid);
    }
}

/// Whether process `pid` still exists.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

//! Where glibc keeps its last fatal message, told to the eBPF program by file before any
//! process can abort: `__abort_msg` is a pointer in libc's data, set by `assert`,
//! `malloc`'s checks and `__libc_fatal` just before they call `abort()`. The kernel side
//! finds libc's load address from the mapping of the abort's own instruction, so nothing
//! is registered per process: a process that aborts a millisecond after its start is
//! read too.

use std::{collections::HashSet, fs::File, os::unix::fs::MetadataExt as _, path::Path, sync::Arc};

use crashtrace_common::{LibcFile, file_key};
use object::{Object as _, ObjectSymbol as _};

use crate::{
    capture::loader::LibcFiles,
    symbolize::elf::{ElfModule, ModuleCache},
    sys::procfs::Mapping,
};

/// Where distributions install glibc: registered at start.
const INSTALLED: [&str; 4] = [
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/lib64/libc.so.6",
    "/usr/lib64/libc.so.6",
];

/// libc files registered at most (the kernel map's size).
const MAX_FILES: usize = 256;

pub struct AbortMessages {
    map: LibcFiles,
    /// Files already looked at (registered or not a glibc with the symbol), by key.
    seen: HashSet<u64>,
}

/// glibc's shared library, by the names distributions install it under.
pub fn is_glibc(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "libc.so.6" || (name.starts_with("libc-2.") && name.ends_with(".so"))
}

/// Where `__abort_msg` is relative to the load address of file offset 0 of the file's
/// executable segment (the mapping an abort's `rip` is in).
pub fn abort_msg_offset(module: &ElfModule) -> Option<u64> {
    let obj = object::File::parse(&**module.map).ok()?;
    let sym = obj
        .dynamic_symbols()
        .find(|s| s.name() == Ok("__abort_msg") && s.is_definition())?
        .address();
    let exec = module.segments.iter().find(|s| s.executable)?;
    Some(sym.wrapping_sub(exec.svma).wrapping_add(exec.file_offset))
}

impl AbortMessages {
    pub fn new(map: LibcFiles) -> Self {
        Self {
            map,
            seen: HashSet::new(),
        }
    }

    /// The machine's own glibc, before any process could abort.
    pub fn register_installed(&mut self) {
        for path in INSTALLED {
            let (Ok(md), Ok(module)) = (std::fs::metadata(path), ElfModule::open(Path::new(path)))
            else {
                continue;
            };
            let (major, minor) = (libc::major(md.dev()), libc::minor(md.dev()));
            self.register(file_key(major, minor, md.ino()), md.len(), &module);
        }
    }

    /// A new mapping: a glibc not seen yet (a container's) is registered.
    pub fn on_mapping(
        &mut self,
        m: &Mapping,
        modules: &mut ModuleCache,
        pinned: Option<Arc<File>>,
    ) {
        if !is_glibc(&m.path)
            || self
                .seen
                .contains(&file_key(m.dev_major, m.dev_minor, m.inode))
        {
            return;
        }
        let pinned_size = pinned
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|md| md.len());
        let Ok(module) = modules.get_pinned(m, pinned) else {
            return;
        };
        let size = pinned_size.unwrap_or_else(|| module.file.metadata().map_or(0, |md| md.len()));
        self.register(file_key(m.dev_major, m.dev_minor, m.inode), size, &module);
    }

    fn register(&mut self, key: u64, size: u64, module: &ElfModule) {
        if !self.seen.insert(key) || self.seen.len() > MAX_FILES {
            return;
        }
        let Some(offset) = abort_msg_offset(module) else {
            return;
        };
        let f = LibcFile {
            abort_msg_offset: offset,
            file_size: size,
        };
        match self.map.insert(key, f, 0) {
            Ok(()) => log::info!("glibc file {key:x}: __abort_msg at file offset 0x{offset:x}"),
            Err(e) => log::warn!("cannot register glibc file {key:x}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_is_known_by_its_installed_names() {
        for (path, want) in [
            ("/usr/lib/x86_64-linux-gnu/libc.so.6", true),
            ("/lib64/libc-2.17.so", true),
            ("libc.so.6", true),
            ("/usr/lib/libc.so.6.bak", false),
            ("/usr/lib/libcrypto.so.3", false),
            ("/usr/lib/musl/libc.so", false),
        ] {
            assert_eq!(is_glibc(path), want, "{path}");
        }
    }

    #[test]
    fn the_installed_glibc_has_its_abort_message_variable() {
        let path = INSTALLED
            .iter()
            .find(|p| Path::new(p).exists())
            .expect("glibc where Debian installs it");
        let module = ElfModule::open(Path::new(path)).unwrap();
        let offset = abort_msg_offset(&module).expect("__abort_msg in glibc's dynamic symbols");
        // In the file's data, past its code.
        let exec = module.segments.iter().find(|s| s.executable).unwrap();
        assert!(offset > exec.file_offset + exec.file_size, "0x{offset:x}");
    }
}

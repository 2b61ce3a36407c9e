//! glibc read before any crash, its debug file from a plain copy where one can be kept.

use std::{os::unix::fs::DirBuilderExt as _, path::PathBuf, sync::Arc};

use super::{ElfModule, FilePins, Ready, Symbolizer, guard, libc, plain, unwind::RawFrame};
use crate::sys::{buildid, files};

impl Symbolizer {
    /// Plain copies of compressed debug files are kept in `dir` (see `plain`), when it
    /// and the directories above it can be changed by root only.
    pub fn with_plain_dir(mut self, dir: PathBuf) -> Self {
        self.plain_dir = Some(dir);
        self
    }

    /// Reads the installed glibc and its debug file before any crash: nearly every stack
    /// has frames in it, and parsing them was most of the first report's time.
    pub fn warm_libc(&mut self) {
        // A function of this process's glibc, which is the installed one.
        let at = ::libc::abort as *const () as u64;
        let maps = crate::sys::procfs::read_maps("self").unwrap_or_default();
        let Some(m) = maps
            .into_iter()
            .find(|m| m.contains(at) && libc::is_glibc(&m.path))
        else {
            return;
        };
        let pins = FilePins::new();
        let loaded = self.load(std::slice::from_ref(&m), &pins);
        if let Some(module) = loaded.first().and_then(|l| l.module.clone()) {
            self.use_plain_copy(&module);
        }
        let raw = RawFrame {
            address: at,
            lookup: at,
            is_return: false,
        };
        self.symbolize(&[raw], &loaded, &pins);
    }

    /// The plain copy of `module`'s debug file, if `warm_libc` made one for it.
    pub(super) fn plain_copy_of(&self, module: &Arc<ElfModule>) -> Option<Arc<Ready>> {
        let (libc, ready) = self.plain_libc.as_ref()?;
        Arc::ptr_eq(libc, module).then(|| ready.clone())
    }

    /// Reads `module`'s debug file from its plain copy from now on, made if missing;
    /// leaves it as it is where that cannot be done, saying why at debug level (the cost
    /// is memory only).
    fn use_plain_copy(&mut self, module: &Arc<ElfModule>) {
        let (Some(dir), Some(id)) = (self.plain_dir.clone(), module.build_id.clone()) else {
            return;
        };
        // The system's debug file, read in place; into a directory only root can change,
        // nor any above it (a sealed copy in memory would cost more than it saves).
        let Some(original) = self
            .debug_dirs
            .iter()
            .filter_map(|d| buildid::debug_path(d, &id))
            .find_map(|p| {
                let f = files::open_plain(&p).ok()?;
                guard::ready(Arc::new(f), &p.display().to_string()).ok()
            })
            .filter(|r| r.debuglink.is_none())
        else {
            return;
        };
        let made_dir = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
        if made_dir.is_err() || !guard::root_only_dirs(&dir) {
            log::debug!("no plain copy of glibc's debug file in {}", dir.display());
            // Made just now, and empty: not left behind where it is not used.
            let _ = std::fs::remove_dir(&dir);
            return;
        }
        // SAFETY: root's file in a root-only directory (`ready` checked), read once here.
        let made = unsafe { memmap2::Mmap::map(&*original.file) }
            .map_err(anyhow::Error::from)
            .and_then(|data| plain::plain_copy(&data, &buildid::hex(&id), &dir));
        let path = match made {
            Ok(Some(path)) => path,
            Ok(None) => return,
            Err(e) => {
                log::debug!("plain copy of glibc's debug file: {e:#}");
                return;
            }
        };
        let origin = path.display().to_string();
        match files::open_plain(&path)
            .map_err(anyhow::Error::from)
            .and_then(|f| guard::ready(Arc::new(f), &origin))
        {
            Ok(plain) if plain.debuglink.is_none() => {
                self.plain_libc = Some((module.clone(), Arc::new(plain)));
            }
            Ok(_) => log::debug!("{origin} is not in a root-only directory"),
            Err(e) => log::debug!("{origin}: {e:#}"),
        }
    }
}

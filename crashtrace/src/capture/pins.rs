//! Descriptors on the files processes map, taken while the process exists.

use std::{collections::HashMap, fs::File, os::unix::fs::MetadataExt as _, sync::Arc};

use crate::sys::{buildid::BuildId, procfs::Mapping};

/// A file's identity: device and inode, as the kernel reports them for a mapping.
pub type FileKey = (u32, u32, u64);

pub fn key_of(m: &Mapping) -> FileKey {
    (m.dev_major, m.dev_minor, m.inode)
}

/// Most files held open at once; the oldest are let go beyond this.
const MAX_PINNED: usize = 4096;
/// Most files of one owner held: a user who maps thousands of their own files lets go
/// of their own oldest pins, not of other users' or the system's.
const MAX_PINNED_PER_OWNER: usize = 1024;

/// Open descriptors on every file mapped executable, taken while the process that maps
/// it still exists, through /proc/PID/map_files: that reaches the very file that was
/// mapped even once it is deleted, replaced on disk, or only visible in another mount
/// namespace (a container). One descriptor per file, however many processes map it.
#[derive(Default)]
pub struct FilePins {
    files: HashMap<FileKey, Pinned>,
    order: std::collections::VecDeque<FileKey>,
    /// Pinned files by the build ID the kernel gave for their mapping: a copy of a file
    /// that is gone (the same image in another container, an earlier run of a
    /// crash-looping program) stands in for it.
    by_build_id: HashMap<BuildId, FileKey>,
}

/// A pinned file, and whose mapping of which path it was taken from.
#[derive(Clone)]
pub struct Pinned {
    pub file: Arc<File>,
    pub pid: u32,
    pub path: Arc<str>,
    /// The file's owner (uid).
    pub owner: u32,
}

impl FilePins {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Pins the file behind a new mapping of process `pid`.
    pub fn pin(&mut self, pid: u32, m: &Mapping) {
        if !m.is_file() || self.files.contains_key(&key_of(m)) {
            return;
        }
        let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
        match File::open(&link) {
            Ok(f) => {
                // The file behind the link is the mapped one; check it is what the kernel
                // reported (device and inode), in case the range was remapped meanwhile.
                let Ok(md) = f.metadata() else { return };
                let dev = (libc::major(md.dev()), libc::minor(md.dev()));
                if md.ino() == m.inode && dev == (m.dev_major, m.dev_minor) {
                    log::info!("pinned {} for pid {pid}", m.path);
                    let owner = md.uid();
                    let pinned = Pinned {
                        file: Arc::new(f),
                        pid,
                        path: m.path.clone(),
                        owner,
                    };
                    self.files.insert(key_of(m), pinned);
                    self.order.push_back(key_of(m));
                    if let Some(id) = m.build_id {
                        self.by_build_id.insert(id, key_of(m));
                    }
                    let owned = self.files.values().filter(|p| p.owner == owner).count();
                    if owned > MAX_PINNED_PER_OWNER
                        && let Some(i) = self
                            .order
                            .iter()
                            .position(|k| self.files.get(k).is_some_and(|p| p.owner == owner))
                        && let Some(old) = self.order.remove(i)
                    {
                        self.unpin(old);
                    }
                    while self.order.len() > MAX_PINNED {
                        if let Some(old) = self.order.pop_front() {
                            self.unpin(old);
                        }
                    }
                }
            }
            Err(e) => log::debug!("cannot pin {} of pid {pid}: {e}", m.path),
        }
    }

    fn unpin(&mut self, key: FileKey) {
        self.files.remove(&key);
        self.by_build_id.retain(|_, k| *k != key);
    }

    pub fn get(&self, m: &Mapping) -> Option<Arc<File>> {
        self.files.get(&key_of(m)).map(|p| p.file.clone())
    }

    /// Whether the file behind `m` is pinned.
    pub fn has(&self, m: &Mapping) -> bool {
        self.files.contains_key(&key_of(m))
    }

    /// Records the build ID of a pinned file, learnt after its pin.
    pub fn index(&mut self, m: &Mapping, id: BuildId) {
        if self.files.contains_key(&key_of(m)) {
            self.by_build_id.insert(id, key_of(m));
        }
    }

    /// The pins a report of a process with these mappings may read: its files', and
    /// for each build ID one file that carries it. Cheap: descriptors are shared.
    pub fn subset(&self, maps: &[Mapping]) -> FilePins {
        let mut out = FilePins::new();
        for m in maps {
            if let Some(p) = self.files.get(&key_of(m)) {
                out.files.insert(key_of(m), p.clone());
            }
            if let Some(id) = m.build_id
                && let Some(k) = self.by_build_id.get(&id)
                && let Some(p) = self.files.get(k)
            {
                out.files.insert(*k, p.clone());
                out.by_build_id.insert(id, *k);
            }
        }
        out
    }

    /// A pinned file with this build ID.
    pub fn by_build_id(&self, id: &BuildId) -> Option<Pinned> {
        self.by_build_id
            .get(id)
            .and_then(|k| self.files.get(k))
            .cloned()
    }
}

//! Which cgroup (and so which container) a process ran in, from the cgroup v2 id the
//! kernel gave at the crash: the id is the inode number of the cgroup's directory.

use std::{collections::HashMap, os::unix::fs::MetadataExt as _, path::Path};

/// Cgroup names remembered at most; past it the cache starts over.
const MAX_CACHED: usize = 4096;

#[derive(Default)]
pub struct CgroupNames {
    mount: Option<String>,
    cache: HashMap<u64, Option<String>>,
}

impl CgroupNames {
    pub fn new() -> Self {
        let mount = std::fs::read_to_string("/proc/mounts").ok().and_then(|m| {
            m.lines()
                .find(|l| l.split(' ').nth(2) == Some("cgroup2"))
                .and_then(|l| l.split(' ').nth(1).map(str::to_string))
        });
        Self {
            mount,
            cache: HashMap::new(),
        }
    }

    /// The cgroup's path below the cgroup2 mount (`/` for the root), if it still exists.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.cache.get(&id) {
            return p.clone();
        }
        let mount = self.mount.clone()?;
        let mut budget = 100_000usize;
        let found = find(Path::new(&mount), id, 0, &mut budget).map(|p| {
            let rel = p
                .strip_prefix(&mount)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if rel.is_empty() {
                "/".into()
            } else {
                format!("/{rel}")
            }
        });
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(id, found.clone());
        found
    }
}

/// Depth-first search for the directory whose inode is `id`, bounded in depth and size.
fn find(dir: &Path, id: u64, depth: usize, budget: &mut usize) -> Option<std::path::PathBuf> {
    if std::fs::metadata(dir).is_ok_and(|m| m.ino() == id) {
        return Some(dir.to_path_buf());
    }
    if depth >= 16 {
        return None;
    }
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        if e.file_type().is_ok_and(|t| t.is_dir())
            && let Some(p) = find(&e.path(), id, depth + 1, budget)
        {
            return Some(p);
        }
    }
    None
}

/// A container id in a cgroup path: the 64-hex-digit id Docker, containerd, CRI-O and
/// Podman put in their cgroup names (`docker-<id>.scope`, `cri-containerd-<id>.scope`, ...).
pub fn container_id(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut run = 0;
    for (i, c) in b.iter().enumerate() {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run += 1;
            let ends = i + 1 == b.len() || !b[i + 1].is_ascii_hexdigit();
            if run == 64 && ends {
                return Some(path[i + 1 - 64..=i].to_string());
            }
        } else {
            run = 0;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        let id = "3f2c1b0a".repeat(8);
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")).as_deref(),
            Some(id.as_str())
        );
        assert_eq!(
            container_id(&format!(
                "/kubepods/burstable/pod1234/cri-containerd-{id}.scope"
            ))
            .as_deref(),
            Some(id.as_str())
        );
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        // Longer hex runs are not ids.
        assert_eq!(container_id(&format!("/x/{id}ab")), None);
    }

    #[test]
    fn finds_this_process_cgroup() {
        let mut names = CgroupNames::new();
        let Some(mount) = names.mount.clone() else {
            say!("skipped: no cgroup2 mount on this machine");
            return;
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_string();
        let dir = Path::new(&mount).join(rel.trim_start_matches('/'));
        let ino = std::fs::metadata(&dir).unwrap().ino();
        assert_eq!(names.path(ino).as_deref(), Some(rel.as_str()));
        assert_eq!(names.path(0), None);
    }
}

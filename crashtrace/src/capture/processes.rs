//! What each address of each process belonged to, kept from before the crash.
//!
//! A crashed process is gone before user space sees its record (its /proc/PID/maps is
//! usually empty by then), so the executable mappings of every process are tracked as
//! they are made: seeded from /proc at start, then kept current from the kernel's
//! mmap/fork/exec/exit records (see `perf.rs`).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use crate::sys::{
    buildid::BuildId,
    procfs::{self, Mapping},
};

#[derive(Clone, Debug, Default)]
struct Process {
    /// Shared with the processes forked from it until one of them maps something: a fork
    /// costs no copy.
    maps: Arc<BTreeMap<u64, Mapping>>,
    /// The executable's path: the first file mapped after exec (the kernel maps the
    /// program before its interpreter), or /proc/PID/exe for processes seen at start.
    exe: Option<Arc<str>>,
    /// CLOCK_MONOTONIC ns of the fork/exec that created this image; 0 if seen at start.
    since_ns: u64,
    /// The process it was forked from, where the fork was seen.
    parent: Option<u32>,
    exited_ns: Option<u64>,
}

/// Executable mappings kept per process at most: beyond it the table is reread from
/// /proc (a JIT that maps and unmaps code would otherwise grow it without end).
const MAX_MAPS_PER_PROCESS: usize = 16384;

/// How long an exited process's mappings are kept for reports still in flight.
const KEEP_EXITED_NS: u64 = 30_000_000_000;
/// Exited processes kept at most (a fork storm exits thousands a second); the oldest go
/// first, except those a crash still waits on.
const MAX_EXITED: usize = 4096;

#[derive(Default)]
pub struct ProcessTable {
    live: HashMap<u32, Process>,
    /// Processes whose pid was reused while their mappings might still be needed.
    replaced: VecDeque<(u32, Process)>,
}

impl ProcessTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn process_count(&self) -> usize {
        self.live.len()
    }

    pub fn on_mmap(&mut self, pid: u32, m: Mapping) {
        let p = self.live.entry(pid).or_default();
        if p.exe.is_none() && m.is_file() {
            p.exe = Some(m.path.clone());
        }
        // A new mapping replaces whatever it overlaps (munmap is not reported).
        let overlapping: Vec<u64> = p
            .maps
            .range(..m.end)
            .rev()
            .take_while(|(_, old)| old.end > m.start)
            .map(|(k, _)| *k)
            .collect();
        let maps = Arc::make_mut(&mut p.maps);
        for k in overlapping {
            maps.remove(&k);
        }
        maps.insert(m.start, m);
        if maps.len() > MAX_MAPS_PER_PROCESS {
            // Unmapped regions (munmap is not reported) piled up: what the process maps
            // now is in /proc; if it cannot be read, the lowest ones go.
            match procfs::read_maps(pid) {
                Some(now) => *maps = now.into_iter().map(|m| (m.start, m)).collect(),
                None => {
                    while maps.len() > MAX_MAPS_PER_PROCESS {
                        maps.pop_first();
                    }
                }
            }
        }
    }

    /// A new process (not a new thread) forked from `parent`: it starts with a copy of
    /// the parent's mappings.
    pub fn on_fork(&mut self, pid: u32, parent: u32, time_ns: u64) {
        let (maps, exe) = self
            .live
            .get(&parent)
            .map(|p| (p.maps.clone(), p.exe.clone()))
            .unwrap_or_default();
        self.replace(
            pid,
            Process {
                maps,
                exe,
                since_ns: time_ns,
                parent: Some(parent),
                exited_ns: None,
            },
        );
    }

    /// The build ID the kernel gave for the mapping of `pid` that starts at `start`; the
    /// mapping, updated, if it is known.
    pub fn set_build_id(&mut self, pid: u32, start: u64, id: BuildId) -> Option<Mapping> {
        let p = self.live.get_mut(&pid)?;
        if !p.maps.contains_key(&start) {
            return None;
        }
        let m = Arc::make_mut(&mut p.maps).get_mut(&start)?;
        m.build_id = Some(id);
        Some(m.clone())
    }

    /// A live process other than `except` that maps a file with this build ID, and that
    /// mapping: a way to the same file while that process runs.
    pub fn live_with_build_id(&self, id: &BuildId, except: u32) -> Option<(u32, Mapping)> {
        self.live
            .iter()
            .filter(|(pid, p)| **pid != except && p.exited_ns.is_none())
            .find_map(|(pid, p)| {
                p.maps
                    .values()
                    .find(|m| m.build_id.as_ref() == Some(id))
                    .map(|m| (*pid, m.clone()))
            })
    }

    /// `execve` replaced the image: the mappings that follow are the new program's.
    pub fn on_exec(&mut self, pid: u32, time_ns: u64) {
        let parent = self.live.get(&pid).and_then(|p| p.parent);
        self.replace(
            pid,
            Process {
                maps: Default::default(),
                exe: None,
                since_ns: time_ns,
                parent,
                exited_ns: None,
            },
        );
    }

    pub fn on_exit(&mut self, pid: u32, time_ns: u64) {
        if let Some(p) = self.live.get_mut(&pid) {
            p.exited_ns = Some(time_ns);
        }
    }

    fn replace(&mut self, pid: u32, new: Process) {
        if let Some(old) = self.live.insert(pid, new)
            && !old.maps.is_empty()
        {
            self.replaced.push_back((pid, old));
        }
    }

    fn process_at(&self, pid: u32, time_ns: u64) -> Option<&Process> {
        if let Some(p) = self.live.get(&pid)
            && p.since_ns <= time_ns
        {
            return Some(p);
        }
        // The pid was reused, or the image replaced, after the event: look further back.
        self.replaced
            .iter()
            .rev()
            .find(|(p, proc_)| *p == pid && proc_.since_ns <= time_ns)
            .map(|(_, p)| p)
    }

    /// The mappings process `pid` had at `time_ns` (CLOCK_MONOTONIC).
    pub fn mappings_at(&self, pid: u32, time_ns: u64) -> Vec<Mapping> {
        self.process_at(pid, time_ns)
            .map(|p| p.maps.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `pid` is `root` or was forked, directly or not, from it.
    pub fn is_descendant(&self, pid: u32, root: u32) -> bool {
        let mut p = pid;
        // Bounded: a corrupt chain must not loop.
        for _ in 0..64 {
            if p == root {
                return true;
            }
            match self.live.get(&p).and_then(|x| x.parent) {
                Some(parent) if parent != p => p = parent,
                _ => return false,
            }
        }
        false
    }

    /// The executable process `pid` ran at `time_ns`.
    pub fn exe_at(&self, pid: u32, time_ns: u64) -> Option<Arc<str>> {
        self.process_at(pid, time_ns).and_then(|p| p.exe.clone())
    }

    /// Every live process and its mappings.
    pub fn processes(&self) -> Vec<(u32, Vec<Mapping>)> {
        self.live
            .iter()
            .map(|(pid, p)| (*pid, p.maps.values().cloned().collect()))
            .collect()
    }

    /// Forgets processes that exited (or were replaced) long enough ago, and the oldest
    /// exited ones beyond `MAX_EXITED` unless `wanted` (a crash of theirs is pending).
    pub fn expire(&mut self, now_ns: u64, wanted: impl Fn(u32) -> bool) {
        self.live.retain(|_, p| match p.exited_ns {
            Some(t) => now_ns.saturating_sub(t) < KEEP_EXITED_NS,
            None => true,
        });
        let mut exited: Vec<(u64, u32)> = self
            .live
            .iter()
            .filter_map(|(pid, p)| p.exited_ns.map(|t| (t, *pid)))
            .filter(|(_, pid)| !wanted(*pid))
            .collect();
        if exited.len() > MAX_EXITED {
            let excess = exited.len() - MAX_EXITED;
            exited.select_nth_unstable(excess - 1);
            for (_, pid) in &exited[..excess] {
                self.live.remove(pid);
            }
        }
        while let Some((_, p)) = self.replaced.front() {
            let done = p.exited_ns.unwrap_or(p.since_ns);
            if now_ns.saturating_sub(done) < KEEP_EXITED_NS && self.replaced.len() < 4096 {
                break;
            }
            self.replaced.pop_front();
        }
    }

    /// Seeds the table from /proc for processes that started before crashtrace; `seen`
    /// is called for each mapping while its process still exists (to pin its file).
    pub fn scan_proc(&mut self, mut seen: impl FnMut(u32, &Mapping)) {
        for pid in procfs::pids() {
            // A process may exit mid-scan: then it simply has nothing to add.
            let Some(maps) = procfs::read_maps(pid) else {
                continue;
            };
            if let Some(exe) = procfs::read_exe(pid) {
                self.live.entry(pid).or_default().exe = Some(exe);
            }
            for m in maps {
                seen(pid, &m);
                self.on_mmap(pid, m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(start: u64, end: u64, path: &str) -> Mapping {
        Mapping {
            start,
            end,
            offset: 0,
            dev_major: 8,
            dev_minor: 1,
            inode: 42,
            path: path.into(),
            build_id: None,
        }
    }

    #[test]
    fn fork_exec_exit_and_reuse() {
        let mut t = ProcessTable::new();
        t.on_mmap(1, m(0x1000, 0x2000, "/bin/parent"));
        t.on_fork(2, 1, 100);
        assert_eq!(t.mappings_at(2, 150).len(), 1);
        assert_eq!(t.exe_at(2, 150).as_deref(), Some("/bin/parent"));
        t.on_exec(2, 200);
        t.on_mmap(2, m(0x5000, 0x6000, "/bin/child"));
        t.on_mmap(2, m(0x7000, 0x8000, "/lib/ld.so"));
        assert_eq!(t.exe_at(2, 250).as_deref(), Some("/bin/child"));
        assert_eq!(&*t.mappings_at(2, 250)[0].path, "/bin/child");
        // Before the exec, the child still ran the parent's image.
        assert_eq!(&*t.mappings_at(2, 150)[0].path, "/bin/parent");
        assert!(t.is_descendant(2, 1) && t.is_descendant(1, 1) && !t.is_descendant(1, 2));
        t.on_fork(3, 2, 260);
        assert!(t.is_descendant(3, 1));
        t.on_exit(2, 300);
        // Reused pid: the old process's mappings stay reachable by time.
        t.on_fork(2, 1, 400);
        assert_eq!(&*t.mappings_at(2, 250)[0].path, "/bin/child");
        assert_eq!(&*t.mappings_at(2, 450)[0].path, "/bin/parent");
        t.expire(300 + KEEP_EXITED_NS + 1, |_| false);
        assert_eq!(t.mappings_at(2, 250).len(), 0);
    }

    #[test]
    fn exited_processes_are_bounded_oldest_first_except_wanted() {
        let mut t = ProcessTable::new();
        let n = MAX_EXITED as u32 + 10;
        for pid in 1..=n {
            t.on_mmap(pid, m(0x1000, 0x2000, "/bin/x"));
            t.on_exit(pid, pid as u64);
        }
        t.on_mmap(n + 1, m(0x1000, 0x2000, "/bin/alive"));
        // pid 3 has a crash waiting for its exit: kept although among the oldest, and
        // not counted against the bound.
        t.expire(n as u64 + 1, |pid| pid == 3);
        assert_eq!(t.process_count(), MAX_EXITED + 2);
        assert_eq!(t.mappings_at(3, 3).len(), 1);
        assert_eq!(t.mappings_at(1, 1).len(), 0);
        assert_eq!(t.mappings_at(10, 10).len(), 0);
        assert_eq!(t.mappings_at(11, 11).len(), 1);
        assert_eq!(t.mappings_at(n + 1, 0).len(), 1);
    }

    #[test]
    fn new_mapping_replaces_overlaps() {
        let mut t = ProcessTable::new();
        t.on_mmap(1, m(0x1000, 0x3000, "/a"));
        t.on_mmap(1, m(0x4000, 0x5000, "/c"));
        t.on_mmap(1, m(0x2000, 0x4000, "/b"));
        let maps = t.mappings_at(1, 0);
        let names: Vec<&str> = maps.iter().map(|m| &*m.path).collect();
        assert_eq!(names, ["/b", "/c"]);
    }
}

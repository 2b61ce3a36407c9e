//! `/proc`, read in one place: a process's executable mappings, its executable, the
//! pids. The maps format is a fixed kernel text format of six space-separated fields;
//! no crate parses it with the device numbers and inode kept, so it is parsed here.

use std::sync::Arc;

use super::buildid::BuildId;

/// One executable mapping of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`, in bytes.
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// The path as the kernel printed it: a file path, `[vdso]`, `//anon`, ...
    pub path: Arc<str>,
    /// The mapped file's build ID, as the kernel read it when the mapping was made: it
    /// names the file even once the file itself is gone.
    pub build_id: Option<BuildId>,
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }
    /// Backed by a regular file (as opposed to anonymous memory or a kernel image).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/') && self.inode != 0
    }
}

/// The pids of every process now.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// The executable mappings of `pid` ("self" for this process), or None once it is gone.
pub fn read_maps(pid: impl std::fmt::Display) -> Option<Vec<Mapping>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(parse_proc_maps(&text))
}

/// The path of `pid`'s executable, as the kernel prints it.
pub fn read_exe(pid: u32) -> Option<Arc<str>> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(Arc::from(exe.to_string_lossy().as_ref()))
}

/// Parses the executable mappings of a /proc/PID/maps text.
pub fn parse_proc_maps(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    // 7f1c2a000000-7f1c2a022000 r-xp 00028000 fd:01 1054   /usr/lib/x86_64-linux-gnu/libc.so.6
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?;
    let offset = it.next()?;
    let dev = it.next()?;
    let inode = it.next()?;
    let path = it.next().unwrap_or("").trim_start();
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev_major: u32::from_str_radix(major, 16).ok()?,
        dev_minor: u32::from_str_radix(minor, 16).ok()?,
        inode: inode.parse().ok()?,
        path: Arc::from(if path.is_empty() { "//anon" } else { path }),
        build_id: None,
    })
}

/// The thread ids of process `pid` now (empty once it is gone).
pub fn threads(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    tids.sort_unstable();
    tids
}

/// The name (`comm`) of process or thread `id`, as the kernel keeps it (at most 15 bytes).
pub fn comm(id: u32) -> Option<String> {
    let c = std::fs::read(format!("/proc/{id}/comm")).ok()?;
    let c = c.strip_suffix(b"\n").unwrap_or(&c);
    Some(String::from_utf8_lossy(c).into_owned())
}

/// The thread-group id of task `id`: equal to `id` for a process, another pid for a
/// thread (`/proc` also answers for thread ids not listed in it).
pub fn tgid(id: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{id}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The cgroup v2 path of process `pid` (the `0::` line of `/proc/PID/cgroup`).
pub fn cgroup(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// This host's name (the UTS namespace's), for reports collected from many hosts.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_maps() {
        let text = "\
55d0c0000000-55d0c0001000 r--p 00000000 fd:01 131 /usr/bin/victim
55d0c0001000-55d0c0002000 r-xp 00001000 fd:01 131 /usr/bin/victim
7f00aa000000-7f00aa100000 r-xp 00028000 fd:01 1054                       /usr/lib/lib with space.so
7ffc1e5f0000-7ffc1e5f2000 r-xp 00000000 00:00 0                          [vdso]
7f00bb000000-7f00bb001000 rwxp 00000000 00:00 0 
";
        let maps = parse_proc_maps(text);
        assert_eq!(maps.len(), 4);
        assert_eq!(maps[0].start, 0x55d0c0001000);
        assert_eq!(maps[0].offset, 0x1000);
        assert_eq!(
            (maps[0].dev_major, maps[0].dev_minor, maps[0].inode),
            (0xfd, 1, 131)
        );
        assert_eq!(&*maps[1].path, "/usr/lib/lib with space.so");
        assert_eq!(maps[1].file_offset(0x7f00aa000010), 0x28010);
        assert!(maps[1].is_file());
        assert_eq!(&*maps[2].path, "[vdso]");
        assert!(!maps[2].is_file());
        assert_eq!(&*maps[3].path, "//anon");
    }
}

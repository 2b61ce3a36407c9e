//! The crashing process's environment and abort message, from the kernel's copy of its
//! memory: only allowlisted variables are kept (tokens live in environments), and the
//! copy is dropped as soon as they are picked out.

use crashtrace_common::{CrashMemoryHead, MEMORY_ENV_UNREADABLE, STACK_CHUNK};

/// Variables kept by default: who a process is in a job, and which devices it had.
pub const DEFAULT_ENV_ALLOW: [&str; 18] = [
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_NAME",
    "TORCHELASTIC_RUN_ID",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NTASKS",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_ENABLE_COREDUMP_ON_EXCEPTION",
    "CUDA_COREDUMP_FILE",
];

/// Bytes kept of one value; a longer one is cut and marked.
const MAX_VALUE: usize = 256;
/// Variables kept at most, whatever the allowlist matches.
const MAX_KEPT: usize = 64;

/// Which variables are kept: exact names, or prefixes written `NAME*`.
#[derive(Clone, Debug)]
pub struct EnvAllow {
    names: Vec<String>,
}

impl Default for EnvAllow {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl EnvAllow {
    /// The default names plus `extra`.
    pub fn new(extra: &[String]) -> Self {
        let mut names: Vec<String> = DEFAULT_ENV_ALLOW.iter().map(|s| s.to_string()).collect();
        names.extend(extra.iter().cloned());
        Self { names }
    }

    pub fn allows(&self, name: &[u8]) -> bool {
        self.names.iter().any(|n| match n.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix.as_bytes()),
            None => name == n.as_bytes(),
        })
    }
}

/// What was kept of a CrashMemory record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// Allowlisted variables, in the block's order.
    pub env: Vec<(String, String)>,
    /// Bytes of the block that were not read (the middle of a long one, or pages that
    /// could not be read); 0 when all of it was.
    pub env_unread: u64,
    /// glibc's last fatal message, if one was set.
    pub abort_message: Option<String>,
    /// NVIDIA devices open at the crash: /dev/nvidiaN minors, `GPU_*` flags.
    pub gpu_minors: u64,
    pub gpu_flags: u32,
}

/// Picks the allowlisted variables and the abort message out of a record: its head and
/// the environment pages that came with it.
pub fn reduce(rec: &CrashMemoryHead, area: &[u8], allow: &EnvAllow) -> ProcessMemory {
    let (start, end) = (rec.env_start, rec.env_end.max(rec.env_start));
    let room = area.len() / STACK_CHUNK;
    let pages = |n: u32| (n as usize).min(room);
    let head_len = pages(rec.head_pages) * STACK_CHUNK;
    let tail_pages = pages(rec.tail_pages).min(room - pages(rec.head_pages));
    let head = window(area, 0, head_len, rec.head_addr, start, end);
    let tail = window(
        area,
        head_len,
        tail_pages * STACK_CHUNK,
        rec.tail_addr,
        start,
        end,
    );
    let mut env = Vec::new();
    let mut read = 0u64;
    for (part, bytes) in [head, tail].into_iter().flatten() {
        read += bytes.len() as u64;
        collect(bytes, part, allow, &mut env);
    }
    let total = end - start;
    let mut unread = total.saturating_sub(read);
    if rec.flags & MEMORY_ENV_UNREADABLE != 0 && unread == 0 {
        unread = 1;
    }
    let n = (rec.abort_len as usize).min(rec.abort_msg.len());
    let msg = &rec.abort_msg[..n];
    let msg = msg.strip_suffix(&[0]).unwrap_or(msg);
    let msg = msg.strip_suffix(b"\n").unwrap_or(msg);
    ProcessMemory {
        ktime_ns: rec.header.ktime_ns,
        pid: rec.header.pid,
        tid: rec.header.tid,
        env,
        env_unread: unread,
        abort_message: (!msg.is_empty()).then(|| String::from_utf8_lossy(msg).into_owned()),
        gpu_minors: rec.gpu_minors,
        gpu_flags: rec.gpu_flags,
    }
}

/// Where a run of copied bytes starts and ends relative to the block.
#[derive(Clone, Copy)]
struct Part {
    /// The run starts at the block's start: its first entry is whole.
    whole_start: bool,
    /// The run ends at the block's end: its last entry is whole.
    whole_end: bool,
}

/// The bytes of `area[off..off+len]` (copied from user address `addr`) that lie inside
/// the block `[start, end)`.
fn window(
    area: &[u8],
    off: usize,
    len: usize,
    addr: u64,
    start: u64,
    end: u64,
) -> Option<(Part, &[u8])> {
    if len == 0 {
        return None;
    }
    let from = addr.max(start);
    let to = (addr + len as u64).min(end);
    if from >= to {
        return None;
    }
    let a = off + (from - addr) as usize;
    let b = off + (to - addr) as usize;
    let bytes = area.get(a..b)?;
    Some((
        Part {
            whole_start: from == start,
            whole_end: to == end,
        },
        bytes,
    ))
}

/// Adds the allowed `NAME=value` entries of `bytes` (NUL-separated) to `out`; entries cut
/// by the run's edges are skipped.
fn collect(bytes: &[u8], part: Part, allow: &EnvAllow, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
    if !part.whole_start && !entries.is_empty() {
        entries.remove(0);
    }
    // Without a final NUL the last piece is cut, unless the block itself ends there.
    if !(part.whole_end || bytes.ends_with(&[0])) {
        entries.pop();
    }
    for e in entries {
        if out.len() >= MAX_KEPT {
            return;
        }
        let Some(eq) = e.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (name, value) = (&e[..eq], &e[eq + 1..]);
        if name.is_empty() || !allow.allows(name) || out.iter().any(|(n, _)| n.as_bytes() == name) {
            continue;
        }
        let mut v = String::from_utf8_lossy(&value[..value.len().min(MAX_VALUE)]).into_owned();
        if value.len() > MAX_VALUE {
            v.push('…');
        }
        out.push((String::from_utf8_lossy(name).into_owned(), v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crashtrace_common::{CrashMemory, ENV_PAGES, RecordHeader, RecordKind};

    /// A record the kernel filled: its head and its environment pages.
    struct Rec {
        head: CrashMemoryHead,
        env: Vec<u8>,
    }

    impl std::ops::Deref for Rec {
        type Target = CrashMemoryHead;
        fn deref(&self) -> &CrashMemoryHead {
            &self.head
        }
    }

    impl std::ops::DerefMut for Rec {
        fn deref_mut(&mut self) -> &mut CrashMemoryHead {
            &mut self.head
        }
    }

    fn reduce(r: &Rec, allow: &EnvAllow) -> ProcessMemory {
        super::reduce(&r.head, &r.env, allow)
    }

    const BASE: u64 = 0x7ffd_0000_0000;

    /// A record as the kernel fills it for `block` placed `lead` bytes into a page, with
    /// at most ENV_PAGES pages copied (head and tail when longer).
    fn record(block: &[u8], lead: usize) -> Rec {
        let mut r = Rec {
            // SAFETY: the head is plain old data; all zeroes is a valid value.
            head: unsafe { std::mem::zeroed() },
            env: vec![0; ENV_PAGES * STACK_CHUNK],
        };
        r.header = RecordHeader::of::<CrashMemory>(RecordKind::CrashMemory, 5, 10, 11);
        let mut mem = vec![0xeeu8; lead];
        mem.extend_from_slice(block);
        mem.resize(mem.len().div_ceil(STACK_CHUNK) * STACK_CHUNK, 0xee);
        r.env_start = BASE + lead as u64;
        r.env_end = r.env_start + block.len() as u64;
        let pages = mem.len() / STACK_CHUNK;
        let (h, t) = if pages <= ENV_PAGES {
            (pages, 0)
        } else {
            (ENV_PAGES / 2, ENV_PAGES / 2)
        };
        r.head_addr = BASE;
        r.tail_addr = BASE + ((pages - t) * STACK_CHUNK) as u64;
        r.head_pages = h as u32;
        r.tail_pages = t as u32;
        let area = &mut r.env;
        area[..h * STACK_CHUNK].copy_from_slice(&mem[..h * STACK_CHUNK]);
        area[h * STACK_CHUNK..(h + t) * STACK_CHUNK]
            .copy_from_slice(&mem[(pages - t) * STACK_CHUNK..]);
        r
    }

    fn block(vars: &[String]) -> Vec<u8> {
        vars.iter()
            .flat_map(|v| [v.as_bytes(), b"\0"].concat())
            .collect()
    }

    #[test]
    fn only_allowlisted_variables_are_kept() {
        let b = block(&[
            "HF_TOKEN=hf_secret".into(),
            "RANK=1".into(),
            "WORLD_SIZE=2".into(),
            "AWS_SECRET_ACCESS_KEY=x".into(),
            "MY_TAG=blue".into(),
            "TORCHELASTIC_RUN_ID=run-7".into(),
        ]);
        let allow = EnvAllow::new(&["MY_*".to_string()]);
        let m = reduce(&record(&b, 100), &allow);
        let names: Vec<&str> = m.env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["RANK", "WORLD_SIZE", "MY_TAG", "TORCHELASTIC_RUN_ID"]
        );
        assert_eq!(m.env[3].1, "run-7");
        assert_eq!(m.env_unread, 0);
        assert!(!format!("{m:?}").contains("secret"));
    }

    #[test]
    fn a_long_block_keeps_its_first_and_last_variables() {
        // 64 KiB of service variables between the first entries and the launcher's.
        let mut vars = vec!["SLURM_JOB_ID=42".to_string()];
        vars.extend((0..2000).map(|i| format!("SERVICE_{i}_PORT=tcp://10.0.0.{}:80", i % 250)));
        vars.push("LOCAL_RANK=3".into());
        vars.push("RANK=7".into());
        let b = block(&vars);
        assert!(b.len() > ENV_PAGES * STACK_CHUNK);
        let m = reduce(&record(&b, 4000), &EnvAllow::default());
        assert_eq!(
            m.env,
            [
                ("SLURM_JOB_ID".to_string(), "42".to_string()),
                ("LOCAL_RANK".to_string(), "3".to_string()),
                ("RANK".to_string(), "7".to_string()),
            ]
        );
        assert!(m.env_unread > 0);
    }

    #[test]
    fn cut_entries_and_hostile_values_are_handled() {
        // Entries cut by a run's edges are dropped, not read as shorter values.
        let mut out = Vec::new();
        let cut_end = Part {
            whole_start: true,
            whole_end: false,
        };
        collect(
            b"RANK=1\0LOCAL_RANK=12",
            cut_end,
            &EnvAllow::default(),
            &mut out,
        );
        let cut_start = Part {
            whole_start: false,
            whole_end: true,
        };
        collect(
            b"LD_RANK=5\0WORLD_SIZE=2",
            cut_start,
            &EnvAllow::default(),
            &mut out,
        );
        let want: [(String, String); 2] = [
            ("RANK".into(), "1".into()),
            ("WORLD_SIZE".into(), "2".into()),
        ];
        assert_eq!(out, want);
        let long = format!("ROLE_NAME={}", "x".repeat(1000));
        let m = reduce(
            &record(&block(&[long, "RANK=\x1b[2J".into()]), 7),
            &EnvAllow::default(),
        );
        assert_eq!(m.env[0].1.chars().count(), MAX_VALUE + 1);
        assert_eq!(m.env[1].1, "\x1b[2J", "kept as is; every output escapes it");
        // Nothing readable: no variables, the whole block unread.
        let mut r = record(&block(&["RANK=1".into()]), 0);
        r.head_pages = 0;
        r.flags = MEMORY_ENV_UNREADABLE;
        let m = reduce(&r, &EnvAllow::default());
        assert!(m.env.is_empty());
        assert_eq!(m.env_unread, 7);
    }

    #[test]
    fn the_abort_message_is_kept_without_its_newline() {
        let mut r = record(&block(&[]), 0);
        let msg = b"double free or corruption (out)\n\0";
        r.abort_msg[..msg.len()].copy_from_slice(msg);
        r.abort_len = msg.len() as u32;
        let m = reduce(&r, &EnvAllow::default());
        assert_eq!(
            m.abort_message.as_deref(),
            Some("double free or corruption (out)")
        );
        r.abort_len = 0;
        assert_eq!(reduce(&r, &EnvAllow::default()).abort_message, None);
    }
}

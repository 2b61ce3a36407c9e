//! The kernel's side-band records (perf_event_open(2): PERF_RECORD_MMAP2, COMM, FORK,
//! EXIT, LOST), read by their layout.
//!
//! Why not perf-event-data's parser: it was a tenth of the event loop's CPU in a
//! fork+exec storm (every record parsed into a general enum, to keep a pid or two), and
//! the kernel leaves the build-ID flag set in the header of records it writes for other
//! events after a build-ID event, which that parser believes. Each field read here is
//! bounds-checked: a short record gives nothing.

use std::sync::Arc;

use crate::sys::{buildid::BuildId, procfs::Mapping};

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_EXIT: u32 = 4;
const PERF_RECORD_FORK: u32 = 7;
pub const PERF_RECORD_MMAP2: u32 = 10;
/// PERF_RECORD_MISC_COMM_EXEC: the comm change comes from execve.
const MISC_COMM_EXEC: u16 = 1 << 13;
/// PERF_RECORD_MISC_MMAP_BUILD_ID: the mmap record holds a build ID, not device and inode.
const MISC_MMAP_BUILD_ID: u16 = 1 << 14;

/// What one record says that crashtrace keeps.
#[derive(Debug, PartialEq)]
pub enum Change {
    Mmap(u32, Mapping),
    /// (pid, start of the mapping, the mapped file's build ID)
    BuildId(u32, u64, BuildId),
    Exec(u32),
    /// (child, parent)
    Fork(u32, u32),
    Exit(u32),
    /// Records the kernel dropped (its buffer was full).
    Lost(u64),
}

fn u32_at(raw: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(raw.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(raw: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(raw.get(o..o + 8)?.try_into().ok()?))
}

/// The record's body (after its 8-byte header) of type `ty`: what it changes, if
/// anything crashtrace keeps. `ids`: the body comes from the build-ID stream, whose
/// mmap records give the build ID (the plain stream's give device and inode).
pub fn parse(ty: u32, misc: u16, raw: &[u8], ids: bool) -> Option<Change> {
    match ty {
        PERF_RECORD_MMAP2 if ids => {
            if misc & MISC_MMAP_BUILD_ID == 0 {
                return None;
            }
            // pid, tid, addr, len, pgoff, then build_id_size (u8), two reserved bytes
            // and up to 20 bytes of build ID.
            let size = usize::from(*raw.get(32)?).min(20);
            let id = BuildId::new(raw.get(36..36 + size)?)?;
            Some(Change::BuildId(u32_at(raw, 0)?, u64_at(raw, 8)?, id))
        }
        PERF_RECORD_MMAP2 => mmap2_with_inode(raw).map(|(pid, m)| Change::Mmap(pid, m)),
        // pid, tid, comm
        PERF_RECORD_COMM if misc & MISC_COMM_EXEC != 0 => Some(Change::Exec(u32_at(raw, 0)?)),
        // pid, ppid, tid, ptid, time: a new thread is not a new process.
        PERF_RECORD_FORK => {
            let (pid, ppid) = (u32_at(raw, 0)?, u32_at(raw, 4)?);
            (pid != ppid).then_some(Change::Fork(pid, ppid))
        }
        // The same layout: only the last thread's exit, the process's, counts.
        PERF_RECORD_EXIT => {
            let (pid, tid) = (u32_at(raw, 0)?, u32_at(raw, 8)?);
            (pid == tid).then_some(Change::Exit(pid))
        }
        // id, lost
        PERF_RECORD_LOST => Some(Change::Lost(u64_at(raw, 8)?)),
        _ => None,
    }
}

/// The body of a PERF_RECORD_MMAP2 in its device-and-inode form: pid, tid (u32), addr,
/// len, pgoff (u64), maj, min (u32), ino, ino_generation (u64), prot, flags (u32), then
/// the NUL-padded file name and the sample_id fields.
fn mmap2_with_inode(raw: &[u8]) -> Option<(u32, Mapping)> {
    let name = raw.get(64..)?;
    let name = &name[..name.iter().position(|&b| b == 0)?];
    let (addr, len) = (u64_at(raw, 8)?, u64_at(raw, 16)?);
    Some((
        u32_at(raw, 0)?,
        Mapping {
            start: addr,
            end: addr.checked_add(len)?,
            offset: u64_at(raw, 24)?,
            dev_major: u32_at(raw, 32)?,
            dev_minor: u32_at(raw, 36)?,
            inode: u64_at(raw, 40)?,
            path: Arc::from(String::from_utf8_lossy(name).as_ref()),
            build_id: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(fields: &[u32]) -> Vec<u8> {
        fields.iter().flat_map(|f| f.to_ne_bytes()).collect()
    }

    fn mmap2_inode() -> Vec<u8> {
        let mut raw = vec![0u8; 64];
        raw[0..4].copy_from_slice(&42u32.to_ne_bytes());
        raw[8..16].copy_from_slice(&0x5000u64.to_ne_bytes());
        raw[16..24].copy_from_slice(&0x2000u64.to_ne_bytes());
        raw[24..32].copy_from_slice(&0x1000u64.to_ne_bytes());
        raw[32..36].copy_from_slice(&0xfdu32.to_ne_bytes());
        raw[36..40].copy_from_slice(&1u32.to_ne_bytes());
        raw[40..48].copy_from_slice(&131u64.to_ne_bytes());
        raw.extend_from_slice(b"/usr/bin/victim\0\0");
        raw
    }

    #[test]
    fn mmap2_records_by_their_layout() {
        let raw = mmap2_inode();
        let Some(Change::Mmap(pid, m)) = parse(PERF_RECORD_MMAP2, 0, &raw, false) else {
            panic!("not an mmap");
        };
        assert_eq!(
            (pid, m.start, m.end, m.offset),
            (42, 0x5000, 0x7000, 0x1000)
        );
        assert_eq!((m.dev_major, m.dev_minor, m.inode), (0xfd, 1, 131));
        assert_eq!(&*m.path, "/usr/bin/victim");
        // The build-ID flag left over in the plain stream's header changes nothing.
        assert!(matches!(
            parse(PERF_RECORD_MMAP2, MISC_MMAP_BUILD_ID, &raw, false),
            Some(Change::Mmap(42, _))
        ));
        // Cut short, or a name without its NUL: nothing.
        assert_eq!(parse(PERF_RECORD_MMAP2, 0, &raw[..52], false), None);
        assert_eq!(parse(PERF_RECORD_MMAP2, 0, &raw[..72], false), None);
    }

    #[test]
    fn build_ids() {
        let mut raw = vec![0u8; 64];
        raw[0..4].copy_from_slice(&42u32.to_ne_bytes());
        raw[8..16].copy_from_slice(&0x5000u64.to_ne_bytes());
        raw[32] = 20;
        for (i, b) in raw[36..56].iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let want: Vec<u8> = (1..=20).collect();
        let id = BuildId::new(&want).unwrap();
        let cases: [(u16, &[u8], Option<Change>); 4] = [
            (
                MISC_MMAP_BUILD_ID,
                &raw,
                Some(Change::BuildId(42, 0x5000, id)),
            ),
            // The kernel could not read one: device and inode instead, nothing here.
            (0, &raw, None),
            (MISC_MMAP_BUILD_ID, &raw[..40], None),
            (MISC_MMAP_BUILD_ID, &raw[..30], None),
        ];
        for (misc, raw, want) in cases {
            assert_eq!(
                parse(PERF_RECORD_MMAP2, misc, raw, true),
                want,
                "misc {misc:#x}"
            );
        }
        // A size byte of 0 is no build ID.
        raw[32] = 0;
        assert_eq!(
            parse(PERF_RECORD_MMAP2, MISC_MMAP_BUILD_ID, &raw, true),
            None
        );
    }

    #[test]
    fn task_records() {
        let cases: [(u32, u16, Vec<u8>, Option<Change>); 9] = [
            (
                PERF_RECORD_FORK,
                0,
                words(&[7, 5, 7, 5]),
                Some(Change::Fork(7, 5)),
            ),
            // A thread: its pid is its parent's.
            (PERF_RECORD_FORK, 0, words(&[5, 5, 9, 5]), None),
            (
                PERF_RECORD_EXIT,
                0,
                words(&[7, 5, 7, 5]),
                Some(Change::Exit(7)),
            ),
            (PERF_RECORD_EXIT, 0, words(&[7, 7, 8, 7]), None),
            (
                PERF_RECORD_COMM,
                MISC_COMM_EXEC,
                words(&[7, 7, 0x6c6c6568]),
                Some(Change::Exec(7)),
            ),
            // A rename (prctl), not an exec.
            (PERF_RECORD_COMM, 0, words(&[7, 7, 0x6c6c6568]), None),
            (
                PERF_RECORD_LOST,
                0,
                words(&[1, 0, 12, 0]),
                Some(Change::Lost(12)),
            ),
            (PERF_RECORD_FORK, 0, words(&[7]), None),
            (99, 0, words(&[7, 5, 7, 5]), None),
        ];
        for (ty, misc, raw, want) in cases {
            assert_eq!(
                parse(ty, misc, &raw, false),
                want,
                "type {ty}, misc {misc:#x}"
            );
        }
    }
}

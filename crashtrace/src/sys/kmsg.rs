//! The kernel log (/dev/kmsg), for the NVIDIA driver's Xid lines: the GPU's own account
//! of an error (79: fallen off the bus, 13/31/43: a fault in a kernel, 48/63/64/94/95:
//! ECC) that a crash report should carry.
//!
//! Parsed by hand: a /dev/kmsg record is one line, `PRI,SEQ,USEC,FLAGS;TEXT`, and the
//! Xid text is the driver's fixed `NVRM: Xid (PCI:ADDR): CODE, pid=PID, ...`.

use std::{collections::VecDeque, fs::File, io::Read as _, os::unix::fs::OpenOptionsExt as _};

/// Xid lines kept at most; older ones go first.
const MAX_KEPT: usize = 256;
/// Bytes kept of one line.
const MAX_LINE: usize = 512;

/// One Xid line of the kernel log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xid {
    /// When the kernel logged it (CLOCK_MONOTONIC, ns).
    pub time_ns: u64,
    pub code: u32,
    pub pci: String,
    pub pid: Option<u32>,
    pub line: String,
}

/// Parses one /dev/kmsg record; None unless it is an NVRM Xid line.
pub fn parse_record(rec: &[u8]) -> Option<Xid> {
    let rec = &rec[..rec.len().min(MAX_LINE)];
    let semi = rec.iter().position(|&b| b == b';')?;
    let head = std::str::from_utf8(&rec[..semi]).ok()?;
    let usec: u64 = head.split(',').nth(2)?.parse().ok()?;
    let text = rec[semi + 1..].split(|&b| b == b'\n').next()?;
    let text = String::from_utf8_lossy(text).into_owned();
    let rest = text.split_once("NVRM: Xid (")?.1;
    let (pci, rest) = rest.split_once("): ")?;
    let code_end = rest.find(|c: char| !c.is_ascii_digit())?;
    let code = rest[..code_end].parse().ok()?;
    let pid = rest
        .split(", ")
        .find_map(|f| f.strip_prefix("pid="))
        .and_then(|p| p.trim_end_matches(',').parse().ok());
    Some(Xid {
        time_ns: usec.saturating_mul(1000),
        code,
        pci: pci.trim_start_matches("PCI:").to_string(),
        pid,
        line: text.trim_end().to_string(),
    })
}

/// Reads new kernel log records without blocking; keeps the recent Xid lines.
pub struct Kmsg {
    file: Option<File>,
    recent: VecDeque<Xid>,
}

impl Kmsg {
    /// From the log's end: what was logged before crashtrace started is not read.
    pub fn open() -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .ok();
        if let Some(f) = &file {
            use std::os::fd::AsRawFd as _;
            // SAFETY: lseek on a descriptor we own; SEEK_END on /dev/kmsg means "after
            // the last record".
            unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
        }
        Self {
            file,
            recent: VecDeque::new(),
        }
    }

    /// Takes every record logged since the last call (bounded per call).
    pub fn drain(&mut self) {
        let Some(f) = &mut self.file else { return };
        let mut buf = [0u8; 8192];
        for _ in 0..4096 {
            match f.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if let Some(x) = parse_record(&buf[..n]) {
                        if self.recent.len() >= MAX_KEPT {
                            self.recent.pop_front();
                        }
                        self.recent.push_back(x);
                    }
                }
                // EPIPE: records were overwritten before they were read; go on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => return,
            }
        }
    }

    pub fn recent(&self) -> impl Iterator<Item = &Xid> {
        self.recent.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xid_lines_from_kernel_log_records() {
        let x = parse_record(
            b"3,1234,5678901,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=4242, name=python, GPU has fallen off the bus.\n",
        )
        .unwrap();
        assert_eq!(
            (x.code, x.pci.as_str(), x.pid, x.time_ns),
            (79, "0000:3b:00", Some(4242), 5_678_901_000)
        );
        assert!(x.line.ends_with("GPU has fallen off the bus."));
        // Older drivers say no pid; a continuation line after the text is not kept.
        let x = parse_record(
            b"4,9,100,-;NVRM: Xid (PCI:0000:07:00): 13, Graphics SM Warp Exception\n SUBSYSTEM=pci\n",
        )
        .unwrap();
        assert_eq!((x.code, x.pid), (13, None));
        assert_eq!(
            x.line,
            "NVRM: Xid (PCI:0000:07:00): 13, Graphics SM Warp Exception"
        );
        for other in [
            &b"6,1,2,-;usb 1-1: new device"[..],
            b"not a record",
            b"6,1,x,-;NVRM: Xid (PCI:0000:07:00): 13, y",
            b"6,1,2,-;NVRM: Xid (PCI:0000:07:00): abc",
        ] {
            assert_eq!(parse_record(other), None);
        }
    }
}

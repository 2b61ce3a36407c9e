//! Decoding of ring-buffer records into owned values.

use anyhow::{Result, bail};
use bytes::Bytes;
use crashtrace_common::{
    CAPTURE_HAS_CODE, CAPTURE_HAS_SIGINFO, CAPTURE_NO_REGS, CAPTURE_ON_CPU,
    CAPTURE_SP_PAGE_SKIPPED, CAPTURE_STACK_TRUNCATED, CODE_BYTES, CaptureHead, FaultMaps,
    HANDLER_DEFAULT, MAX_RECORD_STACK, OomVictim, ProcessExit, PyCode, PyThread, RecordHeader,
    RecordKind, TASK_COMM_LEN, THREAD_STACK_BYTES, TOP_STACK_BYTES, UserRegs,
};
use std::mem::size_of;

/// A signal capture, decoded: what the eBPF program saw in the receiving thread.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub signo: i32,
    pub si_code: i32,
    pub si_errno: i32,
    /// Present when the kernel passed a real siginfo.
    pub has_siginfo: bool,
    pub si_addr: u64,
    pub si_pid: u32,
    pub si_uid: u32,
    /// The disposition in force: SIG_DFL (the signal kills) or a handler.
    pub default_action: bool,
    pub handler: u64,
    pub thread_name: String,
    pub process_name: String,
    /// Base name of the executable, as the kernel knows it.
    pub exe_name: String,
    pub parent_pid: u32,
    pub parent_name: String,
    /// Ids inside the process's own pid namespace, and its cgroup v2 id.
    pub ns_pid: u32,
    pub ns_tid: u32,
    pub cgroup_id: u64,
    /// The process that sent the signal, when another one did (pid 0: none recorded).
    pub sender_pid: u32,
    pub sender_uid: u32,
    pub sender_name: String,
    pub regs: Option<UserRegs>,
    /// The bytes at the instruction pointer, where they could be read.
    pub code: Option<[u8; CODE_BYTES]>,
    pub stack_start: u64,
    pub stack: Bytes,
    pub sp_page_skipped: bool,
    pub stack_truncated: bool,
    /// After a stack overflow: the top of the stack (its user address and bytes).
    pub top: Option<(u64, Bytes)>,
    /// In a dump: the task's `__state` and whether it was on a CPU.
    pub task_state: u32,
    pub on_cpu: bool,
}

#[derive(Debug)]
pub enum Event {
    /// A signal of the configured set reached a thread.
    Signal(Box<Capture>),
    /// Another thread of a crashing process, at the group exit.
    Thread(Box<Capture>),
    /// A thread of a live process, read by `crashtrace dump`.
    Dump(Box<Capture>),
    /// A crashing process's last thread exited.
    Exit(ProcessExit),
    /// The mappings around the fault of the SignalCapture just before.
    FaultMaps(FaultMaps),
    /// The OOM killer chose a process.
    Oom(OomVictim),
    /// A Python thread's frames at a crash, and the code objects they refer to.
    PyThread(Box<PyThread>),
    PyCode(Box<PyCode>),
    /// The crashing process's environment block and abort message, after its capture.
    /// Its head, and the environment pages copied (head then tail runs).
    Memory(Box<crashtrace_common::CrashMemoryHead>, Vec<u8>),
}

pub fn decode(buf: &[u8]) -> Result<Event> {
    if buf.len() < size_of::<RecordHeader>() {
        bail!("short record: {} bytes", buf.len());
    }
    // SAFETY: RecordHeader is plain old data and the buffer is long enough.
    let header: RecordHeader = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    match RecordKind::from_u32(header.kind) {
        Some(RecordKind::SignalCapture) => {
            // One record size per stack class: the header says which.
            let room = (header.size as usize).min(buf.len());
            let cap = room.saturating_sub(size_of::<CaptureHead>());
            decode_capture(buf, cap.min(MAX_RECORD_STACK), true).map(|c| Event::Signal(Box::new(c)))
        }
        Some(RecordKind::ThreadCapture) => {
            decode_capture(buf, THREAD_STACK_BYTES, false).map(|c| Event::Thread(Box::new(c)))
        }
        Some(RecordKind::DumpThread) => {
            decode_capture(buf, THREAD_STACK_BYTES, false).map(|c| Event::Dump(Box::new(c)))
        }
        Some(RecordKind::ProcessExit) => {
            if buf.len() < size_of::<ProcessExit>() {
                bail!("short exit record: {} bytes", buf.len());
            }
            // SAFETY: plain old data, length checked.
            Ok(Event::Exit(unsafe {
                std::ptr::read_unaligned(buf.as_ptr().cast())
            }))
        }
        Some(RecordKind::FaultMaps) => {
            if buf.len() < size_of::<FaultMaps>() {
                bail!("short fault-maps record: {} bytes", buf.len());
            }
            // SAFETY: plain old data, length checked.
            Ok(Event::FaultMaps(unsafe {
                std::ptr::read_unaligned(buf.as_ptr().cast())
            }))
        }
        Some(RecordKind::OomVictim) => {
            if buf.len() < size_of::<OomVictim>() {
                bail!("short OOM record: {} bytes", buf.len());
            }
            // SAFETY: plain old data, length checked.
            Ok(Event::Oom(unsafe {
                std::ptr::read_unaligned(buf.as_ptr().cast())
            }))
        }
        Some(RecordKind::PyThread) => Ok(Event::PyThread(Box::new(pod(buf, "Python thread")?))),
        Some(RecordKind::PyCode) => Ok(Event::PyCode(Box::new(pod(buf, "Python code")?))),
        Some(RecordKind::CrashMemory) => {
            let head: crashtrace_common::CrashMemoryHead = pod(buf, "crash memory")?;
            // One record size per environment class: the header says which.
            let fixed = size_of::<crashtrace_common::CrashMemoryHead>();
            let room = (header.size as usize).clamp(fixed, buf.len());
            let env = buf[fixed..room].to_vec();
            Ok(Event::Memory(Box::new(head), env))
        }
        None => bail!("unknown record kind {}", header.kind),
    }
}

/// A fixed-size record.
fn pod<T: Copy>(buf: &[u8], what: &str) -> Result<T> {
    if buf.len() < size_of::<T>() {
        bail!("short {what} record: {} bytes", buf.len());
    }
    // SAFETY: T is plain old data (a crashtrace-common record) and the length is checked.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) })
}

/// A capture record: a `CaptureHead` followed by up to `max_stack` stack bytes (and, in a
/// signal record, perhaps the top of an overflowed stack in the same area).
fn decode_capture(buf: &[u8], max_stack: usize, may_have_top: bool) -> Result<Capture> {
    let fixed = size_of::<CaptureHead>();
    if buf.len() < fixed {
        bail!("short capture record: {} bytes", buf.len());
    }
    // SAFETY: plain old data, length checked.
    let head: CaptureHead = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    let r = &head;
    let len = r.stack_len as usize;
    if len > max_stack || fixed + len > buf.len() {
        bail!(
            "capture record claims {len} stack bytes, holds {}",
            buf.len() - fixed
        );
    }
    Ok(Capture {
        ktime_ns: r.header.ktime_ns,
        pid: r.header.pid,
        tid: r.header.tid,
        signo: r.signo as i32,
        si_code: r.si_code,
        si_errno: r.si_errno,
        has_siginfo: r.flags & CAPTURE_HAS_SIGINFO != 0,
        si_addr: r.si_addr,
        si_pid: r.si_pid,
        si_uid: r.si_uid,
        default_action: r.handler_kind == HANDLER_DEFAULT,
        handler: r.handler,
        thread_name: comm_to_string(&r.thread_comm),
        process_name: comm_to_string(&r.process_comm),
        exe_name: c_string(&r.exe_name),
        parent_pid: r.parent_pid,
        parent_name: comm_to_string(&r.parent_comm),
        ns_pid: r.ns_pid,
        ns_tid: r.ns_tid,
        cgroup_id: r.cgroup_id,
        sender_pid: r.sender_pid,
        sender_uid: r.sender_uid,
        sender_name: comm_to_string(&r.sender_comm),
        regs: (r.flags & CAPTURE_NO_REGS == 0).then_some(r.regs),
        code: (r.flags & CAPTURE_HAS_CODE != 0).then_some(r.code),
        stack_start: r.stack_start,
        stack: Bytes::copy_from_slice(&buf[fixed..fixed + len]),
        sp_page_skipped: r.flags & CAPTURE_SP_PAGE_SKIPPED != 0,
        stack_truncated: r.flags & CAPTURE_STACK_TRUNCATED != 0,
        task_state: r.task_state,
        on_cpu: r.flags & CAPTURE_ON_CPU != 0,
        top: {
            // Only signal records have it: after the innermost copy, inside the area.
            let (at, n) = (r.top_offset as usize, r.top_len as usize);
            (may_have_top && n > 0 && n <= TOP_STACK_BYTES && len <= at && at + n <= max_stack)
                .then(|| {
                    (
                        r.top_start,
                        Bytes::copy_from_slice(&buf[fixed + at..fixed + at + n]),
                    )
                })
        },
    })
}

pub fn comm_to_string(c: &[u8; TASK_COMM_LEN]) -> String {
    c_string(c)
}

/// A NUL-terminated byte string.
pub fn name_to_string(c: &[u8]) -> String {
    c_string(c)
}

fn c_string(c: &[u8]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crashtrace_common::{HANDLER_CUSTOM, SignalCapture};

    /// Builds the bytes of a signal record the way the eBPF program lays them out.
    pub fn record_bytes(tweak: impl FnOnce(&mut CaptureHead), stack: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; size_of::<SignalCapture>()];
        // SAFETY: the buffer is exactly one SignalCapture; all-zero is a valid value.
        let full = unsafe { &mut *(buf.as_mut_ptr() as *mut SignalCapture) };
        full.stack.as_flattened_mut()[..stack.len()].copy_from_slice(stack);
        let rec = &mut full.head;
        rec.header = RecordHeader {
            kind: RecordKind::SignalCapture as u32,
            size: size_of::<SignalCapture>() as u32,
            ktime_ns: 123,
            pid: 10,
            tid: 11,
        };
        rec.signo = 11;
        rec.si_code = 1;
        rec.flags = CAPTURE_HAS_SIGINFO;
        rec.thread_comm[..6].copy_from_slice(b"worker");
        rec.process_comm[..7].copy_from_slice(b"python3");
        rec.exe_name[..10].copy_from_slice(b"python3.11");
        rec.parent_pid = 9;
        rec.parent_comm[..4].copy_from_slice(b"bash");
        rec.regs.rip = 0x401000;
        rec.regs.rsp = 0x7ffd_0000_1010;
        rec.stack_start = 0x7ffd_0000_1000;
        rec.stack_len = stack.len() as u32;
        tweak(rec);
        buf
    }

    #[test]
    fn decodes_a_signal_record() {
        let stack: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
        let buf = record_bytes(
            |r| {
                r.si_addr = 0xdead;
                r.handler_kind = HANDLER_CUSTOM;
                r.handler = 0x5555_0000;
            },
            &stack,
        );
        let Ok(Event::Signal(c)) = decode(&buf) else {
            panic!("not a signal record")
        };
        assert_eq!((c.pid, c.tid, c.signo, c.si_code), (10, 11, 11, 1));
        assert_eq!(c.si_addr, 0xdead);
        assert!(c.has_siginfo && !c.default_action);
        assert_eq!(c.handler, 0x5555_0000);
        assert_eq!(c.thread_name, "worker");
        assert_eq!(c.process_name, "python3");
        assert_eq!(c.exe_name, "python3.11");
        assert_eq!((c.parent_pid, c.parent_name.as_str()), (9, "bash"));
        assert_eq!(c.regs.unwrap().rip, 0x401000);
        assert_eq!(c.stack_start, 0x7ffd_0000_1000);
        assert_eq!(&c.stack[..], &stack[..]);
    }

    #[test]
    fn rejects_bad_records() {
        assert!(decode(&[0u8; 4]).is_err());
        let mut buf = record_bytes(|_| {}, &[]);
        buf[0] = 99;
        assert!(decode(&buf).is_err());
        let buf = record_bytes(|r| r.stack_len = (MAX_RECORD_STACK + 1) as u32, &[]);
        assert!(decode(&buf).is_err());
        let buf = record_bytes(|_| {}, &[1, 2, 3]);
        assert!(decode(&buf[..size_of::<CaptureHead>() + 2]).is_err());
        // A thread record holds less stack than a signal record.
        let buf = record_bytes(
            |r| {
                r.header.kind = RecordKind::ThreadCapture as u32;
                r.stack_len = (THREAD_STACK_BYTES + 4096) as u32;
            },
            &[],
        );
        assert!(decode(&buf).is_err());
    }

    #[test]
    fn records_of_a_smaller_class_and_the_top_of_an_overflowed_stack() {
        // A 16 KiB record: 8 KiB copied from sp, the top 8 KiB of the stack after it.
        let mut buf = record_bytes(
            |r| {
                r.stack_len = 8192;
                r.top_start = 0x7ffd_0010_0000 - 8192;
                r.top_len = 8192;
                r.top_offset = 8192;
            },
            &[7u8; 8192],
        );
        let size = size_of::<CaptureHead>() + 16384;
        buf.truncate(size);
        buf[4..8].copy_from_slice(&(size as u32).to_ne_bytes());
        buf[size_of::<CaptureHead>() + 8192..].fill(9);
        let Ok(Event::Signal(c)) = decode(&buf) else {
            panic!("not a signal record")
        };
        assert_eq!(c.stack.len(), 8192);
        let (start, top) = c.top.expect("the top of the stack");
        assert_eq!(
            (start, top.len(), top[0]),
            (0x7ffd_0010_0000 - 8192, 8192, 9)
        );
        // A top that would overlap the innermost copy, or reach past the record: none.
        let mut bad = buf.clone();
        let head_at = |b: &mut Vec<u8>| {
            // SAFETY: the buffer starts with a CaptureHead.
            unsafe { &mut *(b.as_mut_ptr() as *mut CaptureHead) }
        };
        head_at(&mut bad).top_offset = 4096;
        let Ok(Event::Signal(c)) = decode(&bad) else {
            panic!()
        };
        assert!(c.top.is_none());
        head_at(&mut bad).top_offset = 12288;
        let Ok(Event::Signal(c)) = decode(&bad) else {
            panic!()
        };
        assert!(c.top.is_none());
        // More stack than the record's class holds.
        head_at(&mut bad).stack_len = 16384 + 4096;
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn no_regs_flag() {
        let buf = record_bytes(|r| r.flags |= CAPTURE_NO_REGS, &[]);
        let Ok(Event::Signal(c)) = decode(&buf) else {
            panic!("not a signal record")
        };
        assert!(c.regs.is_none() && c.code.is_none());
    }

    #[test]
    fn decodes_an_exit_record() {
        let rec = ProcessExit {
            header: RecordHeader {
                kind: RecordKind::ProcessExit as u32,
                size: size_of::<ProcessExit>() as u32,
                ktime_ns: 5,
                pid: 7,
                tid: 8,
            },
            exit_code: 0x8b,
            maxrss_kb: 1234,
            ..Default::default()
        };
        // SAFETY: viewing plain old data as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                &rec as *const ProcessExit as *const u8,
                size_of::<ProcessExit>(),
            )
        };
        let Ok(Event::Exit(e)) = decode(bytes) else {
            panic!("not an exit record")
        };
        assert_eq!((e.header.pid, e.exit_code, e.maxrss_kb), (7, 0x8b, 1234));
        assert!(decode(&bytes[..20]).is_err());
    }
}

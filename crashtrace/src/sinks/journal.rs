//! `--journal`: each report as one journald entry, sent with journald's native protocol
//! (datagrams on its socket; a sealed memory file passed along when the entry is too big
//! for one). Fields follow systemd-coredump's `COREDUMP_*` as `CRASHTRACE_*`, under a
//! MESSAGE_ID of crashtrace's own, so `journalctl MESSAGE_ID=…` and every journald-based
//! log pipeline pick crashes up.

use std::{
    io,
    os::{fd::AsRawFd as _, unix::net::UnixDatagram},
    path::{Path, PathBuf},
};

use super::Sink;
use crate::{model::CrashReport, report::text, sys::files};

/// Identifies crashtrace's crash entries (`journalctl MESSAGE_ID=…`).
pub const MESSAGE_ID: &str = "c4e113546e8c4e9380917d2dedf3ba26";
/// journald's native socket.
pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";
/// `LOG_CRIT`, as systemd-coredump logs crashes.
const PRIORITY: &str = "2";

pub struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
    name: String,
}

impl Journal {
    pub fn new(path: &Path) -> io::Result<Self> {
        if !path.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no journald socket at {}", path.display()),
            ));
        }
        Ok(Self {
            socket: UnixDatagram::unbound()?,
            path: path.to_path_buf(),
            name: format!("journal ({})", path.display()),
        })
    }
}

/// One field in the protocol's binary-safe form: name, newline, little-endian 64-bit
/// length, value, newline. Used for every field, so no value can end one early.
fn field(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    buf.extend_from_slice(value.as_bytes());
    buf.push(b'\n');
}

/// The entry for one report. Names and paths come from the neutralized report (control
/// and bidi characters escaped), as in the text output.
pub fn entry(report: &CrashReport) -> Vec<u8> {
    let r = text::neutral(report);
    let mut b = Vec::with_capacity(16 * 1024);
    let kind = r.kind();
    let top = r.top_function().map(str::to_string);
    let message = format!(
        "Process {} ({}) crashed: {}{}",
        r.pid,
        r.process_name,
        r.signal.name,
        top.as_deref()
            .map(|f| format!(" in {f}"))
            .unwrap_or_default()
    );
    field(&mut b, "MESSAGE", &message);
    field(&mut b, "MESSAGE_ID", MESSAGE_ID);
    field(&mut b, "PRIORITY", PRIORITY);
    field(&mut b, "SYSLOG_IDENTIFIER", "crashtrace");
    let mut f = |name: &str, value: String| field(&mut b, name, &value);
    f("CRASHTRACE_SCHEMA_VERSION", r.schema_version.to_string());
    f("CRASHTRACE_PID", r.pid.to_string());
    f("CRASHTRACE_TID", r.tid.to_string());
    f("CRASHTRACE_COMM", r.process_name.clone());
    f("CRASHTRACE_THREAD_NAME", r.thread_name.clone());
    f("CRASHTRACE_PARENT_PID", r.parent_pid.to_string());
    f("CRASHTRACE_SIGNAL", r.signal.number.to_string());
    f("CRASHTRACE_SIGNAL_NAME", r.signal.name.clone());
    f("CRASHTRACE_KIND", kind.to_string());
    f("CRASHTRACE_TIMESTAMP", r.time.clone());
    if let Some(c) = &r.signal.code_name {
        f("CRASHTRACE_SIGNAL_CODE", c.clone());
    }
    if let Some(a) = r.signal.fault_address {
        f("CRASHTRACE_FAULT_ADDRESS", format!("0x{a:x}"));
    }
    if let Some(p) = r.signal.sender_pid {
        f("CRASHTRACE_SENDER_PID", p.to_string());
    }
    if let Some(e) = &r.executable {
        f("CRASHTRACE_EXE", e.clone());
    }
    if let Some(c) = &r.cgroup {
        f("CRASHTRACE_CGROUP", c.clone());
    }
    if let Some(c) = &r.container_id {
        f("CRASHTRACE_CONTAINER_ID", c.clone());
    }
    if let Some(o) = &r.outcome {
        f("CRASHTRACE_OUTCOME", o.status.clone());
    }
    for (k, v) in r.attribution() {
        f(&format!("CRASHTRACE_{}", k.to_ascii_uppercase()), v);
    }
    if let Some(t) = top {
        f("CRASHTRACE_FUNCTION", t);
    }
    // The whole report, as the text output shows it and as the JSON line has it.
    f("CRASHTRACE_REPORT", text::render(report));
    f("CRASHTRACE_JSON", report.to_json_line());
    b
}

impl Journal {
    /// An entry too big for one datagram goes in a sealed memory file whose descriptor
    /// travels with an empty datagram, as the protocol provides.
    fn send_in_file(&self, entry: &[u8]) -> io::Result<()> {
        let file = files::sealed_bytes(entry)?;
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: plain old data; zeroes are valid for every field.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_bytes_with_nul();
        if bytes.len() > addr.sun_path.len() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let fd = file.as_raw_fd();
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as usize;
        let mut control = vec![0u8; space];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw mut addr).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_un>() as u32;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg points at a control buffer of CMSG_SPACE(int) bytes; the first
        // header fits in it and carries one descriptor.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd);
        }
        // SAFETY: a valid socket and a fully set-up msghdr.
        let n = unsafe { libc::sendmsg(self.socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Sink for Journal {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "journal"
    }

    fn write(&mut self, report: &CrashReport) -> io::Result<()> {
        let e = entry(report);
        match self.socket.send_to(&e, &self.path) {
            Ok(_) => Ok(()),
            Err(err) if matches!(err.raw_os_error(), Some(libc::EMSGSIZE | libc::ENOBUFS)) => {
                self.send_in_file(&e)
            }
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the fields back as the protocol defines them.
    fn parse(mut b: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let nl = b.iter().position(|c| *c == b'\n').unwrap();
            let name = String::from_utf8(b[..nl].to_vec()).unwrap();
            b = &b[nl + 1..];
            assert!(
                !name.contains('='),
                "every field is in the binary-safe form"
            );
            let len = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            let value = String::from_utf8(b[8..8 + len].to_vec()).unwrap();
            assert_eq!(b[8 + len], b'\n');
            b = &b[9 + len..];
            out.push((name, value));
        }
        out
    }

    #[test]
    fn entries_follow_the_native_protocol_and_neutralize_names() {
        let mut r: CrashReport = serde_json::from_str(crate::report::text::tests::MINIMAL).unwrap();
        r.process_name = "evil\nMESSAGE_ID=forged\u{1b}]0;x\u{7}".into();
        let fields = parse(&entry(&r));
        let get = |n: &str| {
            fields
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("MESSAGE_ID"), [MESSAGE_ID]);
        assert_eq!(get("PRIORITY"), ["2"]);
        assert_eq!(get("CRASHTRACE_PID"), ["4242"]);
        assert_eq!(get("CRASHTRACE_SIGNAL_NAME"), ["SIGSEGV"]);
        assert_eq!(get("CRASHTRACE_FUNCTION"), ["crash_here"]);
        assert_eq!(get("CRASHTRACE_KIND"), ["fault"]);
        let comm = get("CRASHTRACE_COMM")[0];
        assert!(!comm.contains('\n') && !comm.contains('\u{1b}'), "{comm:?}");
        assert!(
            get("MESSAGE")[0].starts_with("Process 4242 (evil\\x0a"),
            "{:?}",
            get("MESSAGE")
        );
        let json: CrashReport = serde_json::from_str(get("CRASHTRACE_JSON")[0]).unwrap();
        assert_eq!(json.pid, 4242);
        assert!(get("CRASHTRACE_REPORT")[0].contains("crash_here"));
    }
}

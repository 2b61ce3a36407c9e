//! Signal names and `si_code` decoding, as `siginfo(3type)` and the kernel define them.

use std::fmt;

pub const SIGNALS: &[(i32, &str)] = &[
    (1, "SIGHUP"),
    (2, "SIGINT"),
    (3, "SIGQUIT"),
    (4, "SIGILL"),
    (5, "SIGTRAP"),
    (6, "SIGABRT"),
    (7, "SIGBUS"),
    (8, "SIGFPE"),
    (9, "SIGKILL"),
    (10, "SIGUSR1"),
    (11, "SIGSEGV"),
    (12, "SIGUSR2"),
    (13, "SIGPIPE"),
    (14, "SIGALRM"),
    (15, "SIGTERM"),
    (16, "SIGSTKFLT"),
    (17, "SIGCHLD"),
    (18, "SIGCONT"),
    (19, "SIGSTOP"),
    (20, "SIGTSTP"),
    (21, "SIGTTIN"),
    (22, "SIGTTOU"),
    (23, "SIGURG"),
    (24, "SIGXCPU"),
    (25, "SIGXFSZ"),
    (26, "SIGVTALRM"),
    (27, "SIGPROF"),
    (28, "SIGWINCH"),
    (29, "SIGIO"),
    (30, "SIGPWR"),
    (31, "SIGSYS"),
];

/// The crash signals crashtrace watches by default.
pub const DEFAULT_SIGNALS: &[i32] = &[
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGABRT,
    libc::SIGTRAP,
    libc::SIGSYS,
];

pub fn signal_name(sig: i32) -> String {
    SIGNALS
        .iter()
        .find(|(n, _)| *n == sig)
        .map(|(_, name)| (*name).to_string())
        .unwrap_or_else(|| {
            if (34..=64).contains(&sig) {
                format!("SIGRTMIN+{}", sig - 34)
            } else {
                format!("signal {sig}")
            }
        })
}

/// Parses `SEGV`, `SIGSEGV`, `segv` or `11`.
pub fn parse_signal(s: &str) -> Option<i32> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return (1..64).contains(&n).then_some(n);
    }
    let upper = t.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    SIGNALS
        .iter()
        .find(|(_, name)| *name == full)
        .map(|(n, _)| *n)
}

/// A decoded `si_code`: its symbolic name and what it means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiCode {
    pub name: &'static str,
    pub description: &'static str,
}

impl fmt::Display for SiCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.description)
    }
}

pub fn decode_si_code(sig: i32, code: i32) -> Option<SiCode> {
    let c = |name, description| Some(SiCode { name, description });
    // Codes <= 0 are generic and say who sent the signal.
    match code {
        0 => return c("SI_USER", "sent by kill() or raise()"),
        0x80 => return c("SI_KERNEL", "sent by the kernel"),
        -1 => return c("SI_QUEUE", "sent by sigqueue()"),
        -2 => return c("SI_TIMER", "POSIX timer expired"),
        -3 => return c("SI_MESGQ", "POSIX message queue state changed"),
        -4 => return c("SI_ASYNCIO", "AIO completed"),
        -5 => return c("SI_SIGIO", "queued SIGIO"),
        -6 => {
            return c(
                "SI_TKILL",
                "sent by tkill() or tgkill() (raise, abort, pthread_kill)",
            );
        }
        _ => {}
    }
    match (sig, code) {
        (libc::SIGSEGV, 1) => c("SEGV_MAPERR", "address not mapped to object"),
        (libc::SIGSEGV, 2) => c("SEGV_ACCERR", "invalid permissions for mapped object"),
        (libc::SIGSEGV, 3) => c("SEGV_BNDERR", "failed address bound checks"),
        (libc::SIGSEGV, 4) => c("SEGV_PKUERR", "access denied by memory protection keys"),
        (libc::SIGSEGV, 5) => c("SEGV_ACCADI", "ADI not enabled for mapped object"),
        (libc::SIGSEGV, 6) => c("SEGV_ADIDERR", "disrupting MCD error"),
        (libc::SIGSEGV, 7) => c("SEGV_ADIPERR", "precise MCD exception"),
        (libc::SIGSEGV, 8) => c("SEGV_MTEAERR", "asynchronous ARM MTE error"),
        (libc::SIGSEGV, 9) => c("SEGV_MTESERR", "synchronous ARM MTE exception"),
        (libc::SIGSEGV, 10) => c("SEGV_CPERR", "control protection fault (shadow stack)"),
        (libc::SIGBUS, 1) => c("BUS_ADRALN", "invalid address alignment"),
        (libc::SIGBUS, 2) => c(
            "BUS_ADRERR",
            "nonexistent physical address (e.g. beyond the end of a mapped file)",
        ),
        (libc::SIGBUS, 3) => c("BUS_OBJERR", "object-specific hardware error"),
        (libc::SIGBUS, 4) => c(
            "BUS_MCEERR_AR",
            "hardware memory error consumed on a machine check",
        ),
        (libc::SIGBUS, 5) => c(
            "BUS_MCEERR_AO",
            "hardware memory error detected, action optional",
        ),
        (libc::SIGFPE, 1) => c("FPE_INTDIV", "integer divide by zero"),
        (libc::SIGFPE, 2) => c("FPE_INTOVF", "integer overflow"),
        (libc::SIGFPE, 3) => c("FPE_FLTDIV", "floating-point divide by zero"),
        (libc::SIGFPE, 4) => c("FPE_FLTOVF", "floating-point overflow"),
        (libc::SIGFPE, 5) => c("FPE_FLTUND", "floating-point underflow"),
        (libc::SIGFPE, 6) => c("FPE_FLTRES", "floating-point inexact result"),
        (libc::SIGFPE, 7) => c("FPE_FLTINV", "floating-point invalid operation"),
        (libc::SIGFPE, 8) => c("FPE_FLTSUB", "subscript out of range"),
        (libc::SIGILL, 1) => c("ILL_ILLOPC", "illegal opcode"),
        (libc::SIGILL, 2) => c("ILL_ILLOPN", "illegal operand"),
        (libc::SIGILL, 3) => c("ILL_ILLADR", "illegal addressing mode"),
        (libc::SIGILL, 4) => c("ILL_ILLTRP", "illegal trap"),
        (libc::SIGILL, 5) => c("ILL_PRVOPC", "privileged opcode"),
        (libc::SIGILL, 6) => c("ILL_PRVREG", "privileged register"),
        (libc::SIGILL, 7) => c("ILL_COPROC", "coprocessor error"),
        (libc::SIGILL, 8) => c("ILL_BADSTK", "internal stack error"),
        (libc::SIGTRAP, 1) => c("TRAP_BRKPT", "process breakpoint"),
        (libc::SIGTRAP, 2) => c("TRAP_TRACE", "process trace trap"),
        (libc::SIGTRAP, 3) => c("TRAP_BRANCH", "process taken branch trap"),
        (libc::SIGTRAP, 4) => c("TRAP_HWBKPT", "hardware breakpoint/watchpoint"),
        (libc::SIGTRAP, 5) => c("TRAP_UNK", "undiagnosed trap"),
        (libc::SIGSYS, 1) => c("SYS_SECCOMP", "system call blocked by a seccomp filter"),
        (libc::SIGCHLD, 1) => c("CLD_EXITED", "child has exited"),
        (libc::SIGCHLD, 2) => c("CLD_KILLED", "child was killed"),
        (libc::SIGCHLD, 3) => c("CLD_DUMPED", "child terminated abnormally"),
        _ => None,
    }
}

/// Whether `si_addr` holds a fault address for this signal and code.
pub fn has_fault_address(sig: i32, code: i32) -> bool {
    code > 0
        && code != 0x80
        && matches!(
            sig,
            libc::SIGSEGV | libc::SIGBUS | libc::SIGFPE | libc::SIGILL | libc::SIGTRAP
        )
}

/// Whether the signal was sent by a process (kill, tgkill, sigqueue): si_pid/si_uid are set.
pub fn has_sender(code: i32) -> bool {
    code <= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &(n, name) in SIGNALS {
            assert_eq!(signal_name(n), name);
            assert_eq!(parse_signal(name), Some(n));
            assert_eq!(parse_signal(&name[3..].to_lowercase()), Some(n));
        }
        assert_eq!(parse_signal("11"), Some(11));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
        assert_eq!(signal_name(40), "SIGRTMIN+6");
    }

    #[test]
    fn si_codes() {
        assert_eq!(
            decode_si_code(libc::SIGSEGV, 1).unwrap().name,
            "SEGV_MAPERR"
        );
        assert_eq!(
            decode_si_code(libc::SIGSEGV, 2).unwrap().name,
            "SEGV_ACCERR"
        );
        assert_eq!(decode_si_code(libc::SIGBUS, 2).unwrap().name, "BUS_ADRERR");
        assert_eq!(decode_si_code(libc::SIGFPE, 1).unwrap().name, "FPE_INTDIV");
        assert_eq!(decode_si_code(libc::SIGABRT, -6).unwrap().name, "SI_TKILL");
        assert_eq!(decode_si_code(libc::SIGSEGV, 0).unwrap().name, "SI_USER");
        assert_eq!(
            decode_si_code(libc::SIGSEGV, 0x80).unwrap().name,
            "SI_KERNEL"
        );
        assert_eq!(decode_si_code(libc::SIGSEGV, 99), None);
        assert_eq!(
            decode_si_code(libc::SIGSEGV, 1).unwrap().to_string(),
            "SEGV_MAPERR: address not mapped to object"
        );
        assert!(has_fault_address(libc::SIGSEGV, 1));
        assert!(!has_fault_address(libc::SIGSEGV, 0x80));
        assert!(!has_fault_address(libc::SIGABRT, -6));
        assert!(has_sender(-6));
    }
}

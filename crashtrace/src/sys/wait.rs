//! A wait status (as wait4() returns it and the kernel keeps it in `exit_code`), in words.

use super::signals::signal_name;

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// `killed by SIGSEGV (core dumped)`, `exited with status 3`.
    pub words: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

impl Ended {
    /// The status a shell gives such a process: the exit code, or 128 + the signal.
    pub fn shell_status(&self) -> i32 {
        self.exit_code
            .unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

pub fn decode(status: i32) -> Ended {
    let sig = status & 0x7f;
    let core_dumped = status & 0x80 != 0;
    if sig == 0 {
        let code = (status >> 8) & 0xff;
        Ended {
            words: format!("exited with status {code}"),
            exit_code: Some(code),
            signal: None,
            core_dumped: false,
        }
    } else {
        Ended {
            words: format!(
                "killed by {}{}",
                signal_name(sig),
                if core_dumped { " (core dumped)" } else { "" }
            ),
            exit_code: None,
            signal: Some(sig),
            core_dumped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_wait_statuses() {
        let cases = [
            (0x8b, "killed by SIGSEGV (core dumped)", None, Some(11), 139),
            (0x09, "killed by SIGKILL", None, Some(9), 137),
            (7 << 8, "exited with status 7", Some(7), None, 7),
            (0, "exited with status 0", Some(0), None, 0),
        ];
        for (status, words, code, sig, shell) in cases {
            let e = decode(status);
            assert_eq!(
                (e.words.as_str(), e.exit_code, e.signal),
                (words, code, sig),
                "{status:#x}"
            );
            assert_eq!(e.shell_status(), shell);
        }
    }
}

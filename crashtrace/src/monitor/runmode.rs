//! Run mode (`crashtrace -- CMD`): the command is started once everything is attached,
//! and its end is summarized as `/usr/bin/time -v` does.

use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::sys::wait;

/// How the command of run mode ended, from wait4().
pub struct Finished {
    pub status: i32,
    pub usage: libc::rusage,
    pub wall: Duration,
}

/// Starts the command of run mode and waits for it on a thread of its own.
pub fn spawn_command(
    command: &[String],
) -> Result<(u32, tokio::sync::oneshot::Receiver<Finished>)> {
    let start = std::time::Instant::now();
    let child = std::process::Command::new(&command[0])
        .args(&command[1..])
        .spawn()
        .with_context(|| format!("cannot run {}", command[0]))?;
    let pid = child.id();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: all-zero is a valid rusage.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child, with valid out-pointers.
        unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
        let _ = tx.send(Finished {
            status,
            usage,
            wall: start.elapsed(),
        });
        drop(child);
    });
    Ok((pid, rx))
}

/// `/usr/bin/time -v`'s summary of the command, and the exit code a shell would give.
pub fn summarize(command: &[String], f: &Finished) -> (String, i32) {
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let ended = wait::decode(f.status);
    let code = ended.shell_status();
    let how = ended.words.replace("killed by", "was killed by");
    let w = f.wall.as_secs_f64();
    let u = &f.usage;
    let text = format!(
        "crashtrace: command {how}\n\
         \tCommand being timed: \"{}\"\n\
         \tUser time (seconds): {:.2}\n\
         \tSystem time (seconds): {:.2}\n\
         \tElapsed (wall clock) time (h:mm:ss or m:ss): {}:{:05.2}\n\
         \tMaximum resident set size (kbytes): {}\n\
         \tMajor (requiring I/O) page faults: {}\n\
         \tMinor (reclaiming a frame) page faults: {}\n\
         \tVoluntary context switches: {}\n\
         \tInvoluntary context switches: {}\n\
         \tExit status: {code}",
        command.join(" "),
        tv(u.ru_utime),
        tv(u.ru_stime),
        (w / 60.0) as u64,
        w % 60.0,
        u.ru_maxrss,
        u.ru_majflt,
        u.ru_minflt,
        u.ru_nvcsw,
        u.ru_nivcsw,
    );
    (text, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_status_of_a_crashed_command() {
        // SAFETY: zeroed rusage is valid.
        let usage: libc::rusage = unsafe { std::mem::zeroed() };
        let f = Finished {
            status: 0x8b,
            usage,
            wall: Duration::from_millis(1500),
        };
        let (text, code) = summarize(&["./crash".into(), "segv".into()], &f);
        assert_eq!(code, 139);
        assert!(text.starts_with("crashtrace: command was killed by SIGSEGV (core dumped)\n"));
        assert!(text.contains("\tCommand being timed: \"./crash segv\"\n"));
        assert!(text.contains("Elapsed (wall clock) time (h:mm:ss or m:ss): 0:01.50"));
        let f = Finished {
            status: 7 << 8,
            usage,
            wall: Duration::ZERO,
        };
        let (text, code) = summarize(&["sh".into()], &f);
        assert_eq!(code, 7);
        assert!(text.starts_with("crashtrace: command exited with status 7\n"));
    }
}

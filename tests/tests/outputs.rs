//! The outputs a service writes to: `--output FILE` (JSON lines), its rotation and a
//! full disk. crashtrace watches only the victims' names here: a file holds every
//! report, and other processes on the machine may crash meanwhile.

use std::{path::Path, process::Command};

use crashtrace_tests::{Crashtrace, Shared, crash_and_report, reports_in_file, victim, wait_until};

const SIGSEGV: i32 = libc::SIGSEGV;

fn pids_in(path: &Path) -> Vec<u32> {
    reports_in_file(path).iter().map(|r| r.pid).collect()
}

#[test]
fn output_file_gets_each_report_and_is_reopened_on_sighup() {
    let dir = Shared::new("output-file");
    let path = dir.0.join("crashes.jsonl");
    let ct = Crashtrace::start(&[
        "--output",
        path.to_str().unwrap(),
        "--stdout",
        "--comm",
        "=crash_nofp",
    ]);
    let a = crash_and_report(&ct, &mut Command::new(victim("crash_nofp")), SIGSEGV);
    wait_until("the first report in the file", || {
        pids_in(&path).contains(&a.pid)
    });
    // logrotate: move the file away, then signal.
    let rotated = dir.0.join("crashes.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(ct.pid() as i32, libc::SIGHUP) };
    wait_until("the file reopened after SIGHUP", || path.exists());
    let b = crash_and_report(&ct, &mut Command::new(victim("crash_nofp")), SIGSEGV);
    wait_until("the second report in the new file", || {
        pids_in(&path).contains(&b.pid)
    });
    // Each report in one file only, whatever else crashed under that name meanwhile.
    assert!(pids_in(&rotated).contains(&a.pid) && !pids_in(&rotated).contains(&b.pid));
    assert!(!pids_in(&path).contains(&a.pid));
    let mode = std::os::unix::fs::PermissionsExt::mode(&path.metadata().unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "reports hold process memory: root only"
    );
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs");
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_drops_the_whole_record_and_says_so() {
    let dir = Shared::new("output-full");
    let fs = Tmpfs::mount(&dir.0, "256k");
    let path = fs.0.join("crashes.jsonl");
    let ct = Crashtrace::start(&[
        "--output",
        path.to_str().unwrap(),
        "--stdout",
        "--comm",
        "=threads",
    ]);
    // Fill the file system, then free one page: less than a report needs, so the write
    // starts and cannot finish.
    let filler = fs.0.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096", "status=none"])
        .arg(format!("of={}", filler.display()))
        // It ends with "No space left on device", as it should.
        .stderr(std::process::Stdio::null())
        .status();
    let full = filler.metadata().unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(full - 4096)
        .unwrap();
    let threads = || {
        let mut c = Command::new(victim("threads"));
        c.arg("crash");
        c
    };
    let a = crash_and_report(&ct, &mut threads(), SIGSEGV);
    let line_len = ct.json_line_where(|r| r.pid == a.pid).unwrap().len();
    assert!(
        line_len > 4096,
        "the report must be larger than the space left: {line_len}"
    );
    ct.stderr_line("the record dropped", |l| {
        l.contains("crashes.jsonl") && l.contains("dropped whole")
    });
    assert_eq!(
        std::fs::read(&path).unwrap().len(),
        0,
        "nothing of the record stays"
    );
    std::fs::remove_file(&filler).unwrap();
    let b = crash_and_report(&ct, &mut threads(), SIGSEGV);
    wait_until("the next report in the file", || {
        pids_in(&path).contains(&b.pid)
    });
    assert_eq!(pids_in(&path), [b.pid]);
    let said = ct.stop();
    assert!(
        said.iter()
            .any(|l| l.contains("1 not written (output errors)")),
        "{said:?}"
    );
}

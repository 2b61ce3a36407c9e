//! An unprivileged user (`nobody`) tries to fool the report with the names it controls.

use std::{os::unix::fs::PermissionsExt as _, process::Command};

use crashtrace_tests::{Crashtrace, Shared, Victim, crash_and_report};

/// A Python script whose file name forges a report header and sets the terminal's
/// title, that names its thread with control characters, and crashes; run as nobody.
fn hostile_crash(dir: &Shared) -> Victim {
    let name = "x\u{1b}]0;pwned\u{7}\u{9b}2J\n=== crashtrace: SIGSEGV in process 1 (systemd) ===\u{202e}.py";
    let script = dir.0.join(name);
    std::fs::write(
        &script,
        "import ctypes\n\
         ctypes.CDLL(None).prctl(15, b'\\x1b[2J\\nforged', 0, 0, 0)\n\
         def crash():\n    ctypes.string_at(0)\n\
         crash()\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    Victim::spawn(
        Command::new("runuser")
            .args(["-u", "nobody", "--", "python3"])
            .arg(&script),
    )
}

#[test]
fn names_a_user_controls_cannot_forge_text_or_reach_the_terminal() {
    let dir = Shared::new("hostile-text");
    let ct = Crashtrace::start_text(&["--comm", "python"]);
    let mut v = hostile_crash(&dir);
    v.wait_exit();
    let text = ct.text_containing("in crash");
    // Neither the controls nor the forged header came out raw.
    for c in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
        assert!(!text.contains(c), "{c:?} raw in the report:\n{text}");
    }
    let headers = text
        .lines()
        .filter(|l| l.starts_with("=== crashtrace:"))
        .count();
    assert_eq!(headers, 1, "{text}");
    assert!(
        text.contains("x\\x1b]0;pwned\\x07\\x9b2J\\x0a=== crashtrace"),
        "{text}"
    );
    assert!(text.contains("(\\x1b[2J\\x0aforged)"), "{text}");
    // crashtrace still runs and reports the next ordinary crash.
    let mut plain =
        Victim::spawn(Command::new("python3").args(["-c", "import ctypes; ctypes.string_at(0)"]));
    plain.wait_exit();
    ct.text_containing(&format!("process {} (python3)", plain.pid()));
}

#[test]
fn json_escapes_c1_controls_and_bidi_overrides() {
    let dir = Shared::new("hostile-json");
    let ct = Crashtrace::start(&["--comm", "python"]);
    let mut v = hostile_crash(&dir);
    v.wait_exit();
    // The python is runuser's child: find its report by the parent.
    let parent = v.pid();
    let r = ct.report_where("the hostile script's report", |r| r.parent_pid == parent);
    // The typed report holds the characters themselves (the JSON escapes decode back).
    let py = r.python.as_ref().expect("Python frames");
    let file = &py.threads[0]
        .frames
        .iter()
        .find(|f| f.function == "crash")
        .unwrap_or_else(|| panic!("no frame in crash(): {py:?}"))
        .file;
    assert!(
        file.contains('\u{9b}') && file.contains('\u{202e}'),
        "{file:?}"
    );
    assert_eq!(r.thread_name, "\u{1b}[2J\nforged");
    // The line crashtrace wrote never carried them raw.
    let line = ct
        .json_line_where(|r| r.parent_pid == parent)
        .expect("the line");
    for c in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}', '\n'] {
        assert!(!line.contains(c), "{c:?} raw in {line}");
    }
    assert!(
        line.contains("\\u009b") && line.contains("\\u202e"),
        "{line}"
    );
    // crashtrace still runs and reports the next ordinary crash.
    crash_and_report(
        &ct,
        Command::new("python3").args(["-c", "import ctypes; ctypes.string_at(0)"]),
        libc::SIGSEGV,
    );
}

#[test]
fn a_flood_of_handled_faults_neither_fills_the_ring_nor_hides_other_crashes() {
    let ct = Crashtrace::start(&["--comm", "=handlers", "--comm", "=crash_nofp"]);
    // As nobody: 200 000 faults, each caught and jumped out of.
    let started = std::time::Instant::now();
    let mut storm = Victim::spawn(
        crashtrace_tests::as_nobody(crashtrace_tests::victim("handlers").to_str().unwrap())
            .args(["storm", "200000"]),
    );
    // Meanwhile, an ordinary crash is reported.
    let r = crash_and_report(
        &ct,
        Command::new(crashtrace_tests::victim("crash_nofp")).arg("segv"),
        libc::SIGSEGV,
    );
    assert!(!r.frames.is_empty());
    assert!(storm.wait_exit().success());
    let secs = started.elapsed().as_secs() + 1;
    let said = ct.stop();
    let detached = said
        .iter()
        .find(|l| l.contains("detached;"))
        .unwrap_or_else(|| panic!("{said:?}"));
    let number_before = |l: &str, word: &str| -> u64 {
        let i = l.find(word).unwrap_or_else(|| panic!("{word} in {l}"));
        l[..i].split_whitespace().last().unwrap().parse().unwrap()
    };
    let matched = number_before(detached, " signals matched");
    let captured = number_before(detached, " captured");
    assert!(matched >= 200_000, "{detached}");
    // HANDLED_PER_WINDOW (8) a second for the storm, one for the ordinary crash.
    assert!(captured <= 8 * (secs + 1) + 1, "{secs} s: {detached}");
    let kernel = said
        .iter()
        .find(|l| l.contains("handled signals not captured"))
        .unwrap_or_else(|| panic!("{said:?}"));
    assert!(
        number_before(kernel, " handled signals not captured") >= 200_000 - captured,
        "{kernel}"
    );
}

#[test]
fn a_closed_stderr_loses_status_lines_not_crashtrace() {
    // `crashtrace 2>&1 | head -1`: after the first line nobody reads stderr.
    let mut ct = Crashtrace::start_then_close_stderr(&["--comm", "=crash_nofp"]);
    for _ in 0..2 {
        crash_and_report(
            &ct,
            Command::new(crashtrace_tests::victim("crash_nofp")).arg("segv"),
            libc::SIGSEGV,
        );
    }
    assert!(ct.is_running());
    // Its closing lines go nowhere; it still exits as asked, not by a panic.
    let st = ct.stop_status();
    assert_eq!(st.code(), Some(0), "{st:?}");
}

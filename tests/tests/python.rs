//! Python tracebacks read from outside the process, per CPython version: the pyenv
//! builds (shared libpython) and Debian's static, non-PIE /usr/bin/python3.11.

use std::process::Command;

use crashtrace_tests::{CrashReport, Crashtrace, PyThreadReport, crash_and_report, source};

fn interpreters() -> Vec<String> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mut found = vec![];
    for v in ["3.10", "3.11", "3.12", "3.13"] {
        if let Ok(dir) = std::fs::read_dir(format!("{home}/.pyenv/versions")) {
            let mut names: Vec<String> = dir
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{v}.")))
                .collect();
            names.sort();
            if let Some(n) = names.last() {
                found.push(format!("{home}/.pyenv/versions/{n}/bin/python{v}"));
            }
        }
    }
    found.push("/usr/bin/python3.11".into());
    // The machines this project runs on have them all: none may be silently left out.
    for p in &found {
        assert!(std::path::Path::new(p).exists(), "{p} is missing");
    }
    assert_eq!(
        found.len(),
        5,
        "pyenv 3.10-3.13 and Debian's python3.11: {found:?}"
    );
    found
}

/// (function, line) of a Python thread's frames, innermost first.
fn frames(t: &PyThreadReport) -> Vec<(String, i64)> {
    t.frames
        .iter()
        .map(|f| (f.function.clone(), f.line.map_or(-1, i64::from)))
        .collect()
}

fn crashing(r: &CrashReport) -> &PyThreadReport {
    let py = r
        .python
        .as_ref()
        .unwrap_or_else(|| panic!("no Python frames: {r:?}"));
    py.threads
        .iter()
        .find(|t| t.crashing)
        .expect("no crashing Python thread")
}

fn deep_chain(py: &str, r: &CrashReport) {
    let f = frames(crashing(r));
    let user: Vec<(String, i64)> = f
        .iter()
        .filter(|(n, _)| n != "string_at")
        .cloned()
        .collect();
    assert_eq!(
        user,
        [
            ("third".to_string(), 6),
            ("second".into(), 10),
            ("first".into(), 14),
            ("<module>".into(), 17)
        ],
        "{py}: {f:?}"
    );
    assert_eq!(f[0].0, "string_at", "{py}: {f:?}");
    let file = &crashing(r).frames[1].file;
    assert!(file.ends_with("victims/ctypes_deep.py"), "{py}: {file}");
    // The merged view: the eval-loop frames of the native stack carry the Python frames
    // they ran, in order.
    let merged: Vec<String> = r
        .frames
        .iter()
        .flat_map(|f| f.python.iter())
        .map(|p| p.function.clone())
        .collect();
    assert_eq!(
        merged,
        ["string_at", "third", "second", "first", "<module>"],
        "{py}"
    );
}

#[test]
fn python_tracebacks_for_every_version() {
    let pythons = interpreters();
    let ct = Crashtrace::start(&["--comm", "python"]);
    for py in &pythons {
        eprintln!("{py}");
        // Three Python calls deep, through ctypes.
        let r = crash_and_report(
            &ct,
            Command::new(py).arg(source("ctypes_deep.py")),
            libc::SIGSEGV,
        );
        deep_chain(py, &r);

        // A worker thread crashes while two others sleep in functions of their own.
        let r = crash_and_report(
            &ct,
            Command::new(py).arg(source("py_threads.py")),
            libc::SIGSEGV,
        );
        let f = frames(crashing(&r));
        assert!(
            f.iter().any(|(n, l)| n == "crash_in_worker" && *l == 22),
            "{py}: {f:?}"
        );
        let threads = &r.python.as_ref().expect("Python frames").threads;
        let all: Vec<Vec<(String, i64)>> = threads.iter().map(frames).collect();
        for (name, line) in [("sleeping_reader", 11), ("sleeping_writer", 16)] {
            assert!(
                all.iter()
                    .any(|t| t.first().is_some_and(|(n, l)| n == name && *l == line)),
                "{py}: no thread sleeping in {name}: {all:?}"
            );
        }
        assert_eq!(threads.len(), 4, "{py}");

        // os.abort() two calls deep.
        let r = crash_and_report(
            &ct,
            Command::new(py).arg(source("py_abort.py")),
            libc::SIGABRT,
        );
        let f = frames(crashing(&r));
        assert_eq!(
            f,
            [
                ("inner".to_string(), 6),
                ("outer".into(), 10),
                ("<module>".into(), 13)
            ],
            "{py}"
        );

        // faulthandler enabled: it runs and re-raises; the frames are the fault's.
        let r = crash_and_report(
            &ct,
            Command::new(py)
                .args(["-X", "faulthandler"])
                .arg(source("ctypes_deep.py")),
            libc::SIGSEGV,
        );
        assert!(r.handler.is_some(), "{py}: {r:?}");
        deep_chain(py, &r);
        let version = &r.python.as_ref().unwrap().version;
        assert!(version.starts_with("3.1"), "{py}: {version}");
    }
}

#[test]
fn text_report_reads_like_faulthandler() {
    let ct = Crashtrace::start_text(&["--comm", "python"]);
    let mut v =
        crashtrace_tests::Victim::spawn(Command::new("python3").arg(source("ctypes_deep.py")));
    assert_eq!(v.wait_signal(), Some(libc::SIGSEGV));
    let text = ct.text_containing("in <module>");
    assert!(text.contains("Current thread 0x"), "{text}");
    assert!(text.contains("(most recent call first)"), "{text}");
    assert!(text.contains("ctypes_deep.py\", line 6 in third"), "{text}");
}

#[test]
fn deep_unicode_and_unknown_versions() {
    let ct = Crashtrace::start(&["--comm", "python"]);
    // 1000 frames deep, a non-ASCII function in a non-ASCII file name: bounded, marked as
    // cut, decoded.
    let dir = std::env::temp_dir().join(format!("crashtrace-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("crash_ünïcode.py");
    std::fs::copy(source("py_deep_unicode.py"), &script).unwrap();
    let r = crash_and_report(&ct, Command::new("python3").arg(&script), libc::SIGSEGV);
    let t = crashing(&r);
    assert!(t.truncated, "{t:?}");
    let f = frames(t);
    assert_eq!(f.len(), 64, "{f:?}");
    assert_eq!(f[1], ("深い".to_string(), 10), "{f:?}");
    assert_eq!(f[2], ("深い".to_string(), 11), "{f:?}");
    assert!(t.frames[1].file.ends_with("crash_ünïcode.py"), "{t:?}");
    let _ = std::fs::remove_dir_all(&dir);

    // A version crashtrace does not read: native frames, and one line saying why.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let old = std::fs::read_dir(format!("{home}/.pyenv/versions"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("3.9."))
        .expect("pyenv's CPython 3.9 (the version crashtrace does not read) is missing");
    {
        let v = old;
        let py = format!("{home}/.pyenv/versions/{v}/bin/python3.9");
        let r = crash_and_report(
            &ct,
            Command::new(&py).arg(source("ctypes_deep.py")),
            libc::SIGSEGV,
        );
        assert!(r.python.is_none(), "{r:?}");
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("Python 3.9: not a version crashtrace reads")),
            "{:?}",
            r.notes
        );
        assert!(!r.frames.is_empty());
    }
}

#[test]
fn python_in_its_own_namespaces_and_the_gil() {
    let ct = Crashtrace::start(&["--comm", "python"]);
    // Own mount and pid namespaces: pid 1 inside, another tid on the host.
    for py in ["/usr/bin/python3.11", "python3"] {
        // unshare forks the interpreter: its report is the one whose parent is unshare.
        let mut v = crashtrace_tests::Victim::spawn(
            Command::new("unshare")
                .args(["--mount", "--pid", "--fork", py])
                .arg(source("ctypes_deep.py")),
        );
        v.wait_exit();
        let parent = v.pid();
        let r = ct.report_where(&format!("a report for {py} under unshare"), |r| {
            r.parent_pid == parent
        });
        assert_eq!(r.namespace_pid, Some(1), "{py}: {r:?}");
        deep_chain(py, &r);
        let t = crashing(&r);
        assert_eq!(
            t.native_id,
            Some(1),
            "{py}: native_thread_id is the namespace's: {t:?}"
        );
        assert_ne!(r.tid, 1);
    }
    // 3.10 and 3.11 keep one GIL in the runtime: its holder is marked. The crashing
    // worker is inside a ctypes call that keeps the GIL.
    for py in interpreters() {
        let r = crash_and_report(
            &ct,
            Command::new(&py).arg(source("py_threads.py")),
            libc::SIGSEGV,
        );
        let report = r.python.as_ref().expect("Python frames");
        let (threads, v) = (&report.threads, report.version.as_str());
        if v == "3.10" || v == "3.11" {
            let holders: Vec<&PyThreadReport> =
                threads.iter().filter(|t| t.gil == Some(true)).collect();
            assert_eq!(holders.len(), 1, "{py}: {threads:?}");
            assert!(holders[0].crashing, "{py}");
        } else {
            assert!(threads.iter().all(|t| t.gil.is_none()), "{py}");
        }
        assert!(crashing(&r).name.is_some(), "{py}");
    }
}

/// On a kernel without bpf_loop and bpf_find_vma (5.15), crashtrace runs without the
/// records that follow a capture and says so, at start and in each report. This kernel
/// has them: crashtrace is told to take them as missing, so the programs load with that
/// code switched off, as they would there.
#[test]
fn without_bpf_loop_reports_say_what_they_lack() {
    let ct = Crashtrace::start_with_env(
        &["--comm", "python"],
        &[(
            "CRASHTRACE_TEST_KERNEL_LACKS",
            "BPF_FUNC_loop,BPF_FUNC_find_vma",
        )],
    );
    let said = ct.stderr_line("what the reports will lack", |l| {
        l.contains("lacks bpf_loop")
    });
    assert!(said.contains("no Python frames"), "{said}");
    let r = crash_and_report(
        &ct,
        Command::new("python3").arg(source("ctypes_deep.py")),
        libc::SIGSEGV,
    );
    assert!(r.python.is_none(), "{:?}", r.python);
    assert_eq!(
        r.notes
            .iter()
            .filter(|n| n.contains("lacks bpf_loop (Linux 5.17), bpf_find_vma (Linux 5.17)"))
            .count(),
        1,
        "{:?}",
        r.notes
    );
    assert!(
        !r.notes.iter().any(|n| n.contains("registered")),
        "{:?}",
        r.notes
    );
    // The native stack is whole: through the interpreter to its start.
    let names = crashtrace_tests::function_names(&r);
    assert!(
        names.iter().any(|n| n.contains("_PyEval_EvalFrameDefault")),
        "{names:?}"
    );
    assert_eq!(
        names.last().map(String::as_str),
        Some("_start"),
        "{names:?}"
    );
}

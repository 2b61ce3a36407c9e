//! Python tracebacks read from outside the process, per CPython version: the pyenv
//! builds (shared libpython) and Debian's static, non-PIE /usr/bin/python3.11.

use std::process::Command;

use crashtrace_tests::{Crashtrace, crash_and_report, source};
use serde_json::Value;

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
    found.retain(|p| std::path::Path::new(p).exists());
    found
}

/// (function, line) of a Python thread's frames, innermost first.
fn frames(t: &Value) -> Vec<(String, i64)> {
    t["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap().to_string(),
                f["line"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn crashing(r: &Value) -> &Value {
    let threads = r["python"]["threads"]
        .as_array()
        .unwrap_or_else(|| panic!("no Python frames: {r}"));
    threads
        .iter()
        .find(|t| t["crashing"] == true)
        .expect("no crashing Python thread")
}

fn deep_chain(py: &str, r: &Value) {
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
    let file = crashing(r)["frames"][1]["file"].as_str().unwrap();
    assert!(file.ends_with("victims/ctypes_deep.py"), "{py}: {file}");
    // The merged view: the eval-loop frames of the native stack carry the Python frames
    // they ran, in order.
    let merged: Vec<String> = r["frames"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["python"].as_array().cloned().unwrap_or_default())
        .map(|p| p["function"].as_str().unwrap().to_string())
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
    assert!(
        pythons.len() >= 2,
        "expected the pyenv interpreters and Debian's python3.11: {pythons:?}"
    );
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
        let all: Vec<Vec<(String, i64)>> = r["python"]["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(frames)
            .collect();
        for (name, line) in [("sleeping_reader", 11), ("sleeping_writer", 16)] {
            assert!(
                all.iter()
                    .any(|t| t.first().is_some_and(|(n, l)| n == name && *l == line)),
                "{py}: no thread sleeping in {name}: {all:?}"
            );
        }
        assert_eq!(r["python"]["threads"].as_array().unwrap().len(), 4, "{py}");

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
        assert!(r["handler"].is_object(), "{py}: {r}");
        deep_chain(py, &r);
        assert!(
            r["python"]["version"].as_str().unwrap().starts_with("3.1"),
            "{py}"
        );
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
    assert_eq!(t["truncated"], true, "{t}");
    let f = frames(t);
    assert_eq!(f.len(), 64, "{f:?}");
    assert_eq!(f[1], ("深い".to_string(), 10), "{f:?}");
    assert_eq!(f[2], ("深い".to_string(), 11), "{f:?}");
    assert!(
        t["frames"][1]["file"]
            .as_str()
            .unwrap()
            .ends_with("crash_ünïcode.py"),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A version crashtrace does not read: native frames, and one line saying why.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let old = std::fs::read_dir(format!("{home}/.pyenv/versions"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("3.9."));
    if let Some(v) = old {
        let py = format!("{home}/.pyenv/versions/{v}/bin/python3.9");
        let r = crash_and_report(
            &ct,
            Command::new(&py).arg(source("ctypes_deep.py")),
            libc::SIGSEGV,
        );
        assert!(r["python"].is_null(), "{r}");
        assert!(
            r["notes"]
                .to_string()
                .contains("Python 3.9: not a version crashtrace reads"),
            "{}",
            r["notes"]
        );
        assert!(!r["frames"].as_array().unwrap().is_empty());
    } else {
        eprintln!("no pyenv 3.9 here: the unsupported-version case was not run");
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
        let deadline = std::time::Instant::now() + crashtrace_tests::WAIT;
        let r = loop {
            if let Some(r) = ct
                .all_reports()
                .into_iter()
                .find(|r| r["parent_pid"] == v.pid())
            {
                break r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no report for {py} under unshare"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(r["namespace_pid"], 1, "{py}: {r}");
        deep_chain(py, &r);
        let t = crashing(&r);
        assert_eq!(
            t["native_id"], 1,
            "{py}: native_thread_id is the namespace's: {t}"
        );
        assert_ne!(r["tid"], 1);
    }
    // 3.10 and 3.11 keep one GIL in the runtime: its holder is marked. The crashing
    // worker is inside a ctypes call that keeps the GIL.
    for py in interpreters() {
        let r = crash_and_report(
            &ct,
            Command::new(&py).arg(source("py_threads.py")),
            libc::SIGSEGV,
        );
        let threads = r["python"]["threads"].as_array().unwrap();
        let v = r["python"]["version"].as_str().unwrap().to_string();
        if v == "3.10" || v == "3.11" {
            let holders: Vec<&Value> = threads.iter().filter(|t| t["gil"] == true).collect();
            assert_eq!(holders.len(), 1, "{py}: {threads:?}");
            assert_eq!(holders[0]["crashing"], true, "{py}");
        } else {
            assert!(threads.iter().all(|t| t["gil"].is_null()), "{py}");
        }
        assert!(crashing(&r)["name"].is_string(), "{py}");
    }
}

//! Crash signatures on real crashes: one bug, one signature, whatever the run, the
//! address layout or the directory the program was installed in; and crash loops held
//! to a few full reports.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::Command,
};

use crashtrace_tests::{Crashtrace, Shared, crash_and_report, source, victim};

const SIGSEGV: i32 = libc::SIGSEGV;

fn copy_to(dir: &std::path::Path, program: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let to = dir.join(program.file_name().unwrap());
    std::fs::copy(program, &to).unwrap();
    to
}

#[test]
fn one_crash_has_one_signature_across_runs_and_install_paths() {
    let a = Shared::new("sig-a");
    let b = Shared::new("sig-b");
    let ct = Crashtrace::start(&["--comm", "=crash_nofp"]);
    let programs = [
        victim("crash_nofp"),
        copy_to(&a.0.join("opt/bin"), &victim("crash_nofp")),
        copy_to(&b.0.join("home/user/build"), &victim("crash_nofp")),
    ];
    let mut ids = Vec::new();
    for p in programs.iter().chain(&programs[..1]) {
        let r = crash_and_report(&ct, &mut Command::new(p), SIGSEGV);
        let s = r.signature.expect("a signature");
        assert_eq!(s.frames, ["crash_segv", "level3", "level2"], "{s:?}");
        assert_eq!(s.cause, "SIGSEGV SEGV_MAPERR");
        ids.push(s.id);
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    // Other crashes of the same program are other signatures.
    let mut others = Vec::new();
    for mode in ["fpe", "abort", "bus"] {
        let want = match mode {
            "fpe" => libc::SIGFPE,
            "abort" => libc::SIGABRT,
            _ => libc::SIGBUS,
        };
        let r = crash_and_report(&ct, Command::new(&programs[1]).arg(mode), want);
        others.push(r.signature.expect("a signature").id);
    }
    others.push(ids[0].clone());
    others.sort();
    others.dedup();
    assert_eq!(others.len(), 4, "{others:?}");
}

#[test]
fn python_crashes_are_grouped_by_the_users_innermost_frame() {
    let a = Shared::new("sig-py-a");
    let b = Shared::new("sig-py-b");
    let ct = Crashtrace::start(&["--comm", "python3"]);
    let mut sigs = Vec::new();
    for dir in [&a.0, &b.0] {
        let script = copy_to(&dir.join("job"), &source("py_threads.py"));
        let r = crash_and_report(&ct, Command::new("python3").arg(&script), SIGSEGV);
        sigs.push(r.signature.expect("a signature"));
    }
    assert_eq!(sigs[0], sigs[1]);
    let py = sigs[0].python.as_deref().expect("the user's Python frame");
    assert!(py.starts_with("py_threads.py:"), "{py}");
}

/// The metrics text crashtrace serves at `port`.
fn scrape(port: u16) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("the metrics endpoint");
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn a_crash_loop_gets_its_first_reports_then_a_count() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ct = Crashtrace::start(&[
        "--comm",
        "=crash_nofp",
        "--loop-reports",
        "2",
        "--loop-window",
        "10min",
        "--metrics-address",
        &format!("127.0.0.1:{port}"),
        "--stdout",
    ]);
    let mut pids = Vec::new();
    for _ in 0..5 {
        let mut v = crashtrace_tests::Victim::spawn(&mut Command::new(victim("crash_nofp")));
        assert_eq!(v.wait_signal(), Some(SIGSEGV));
        pids.push(v.pid());
    }
    // Another crash: its own signature, reported in full, and after the others in
    // the one analysis queue.
    let fpe = crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).arg("fpe"),
        libc::SIGFPE,
    );
    crashtrace_tests::wait_until("the metrics of all six crashes", || {
        let m = scrape(port);
        m.contains("crashtrace_crash_loop_reports_held_total 3")
    });
    let m = scrape(port);
    let crashes: f64 = m
        .lines()
        .filter(|l| l.starts_with("crashtrace_crashes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(crashes, 6.0, "{m}");
    let (reports, stderr) = ct.all_reports_when_stopped();
    let segv: Vec<u32> = reports
        .iter()
        .filter(|r| pids.contains(&r.pid))
        .map(|r| r.pid)
        .collect();
    assert_eq!(segv, pids[..2], "the first two in full");
    assert!(reports.iter().any(|r| r.pid == fpe.pid));
    let id = reports[0].signature.as_ref().unwrap().id.clone();
    let line = stderr
        .iter()
        .find(|l| l.contains("crash loop"))
        .unwrap_or_else(|| panic!("the summary line in {stderr:#?}"));
    assert!(
        line.contains(&format!("signature {id} (SIGSEGV SEGV_MAPERR in crash_segv < level3 < level2) crashed 5 times in 10m: 2 reported in full, 3 held back")),
        "{line}"
    );
}

/// What the independent decoder read from a pprof file.
fn read_pprof(path: &std::path::Path) -> serde_json::Value {
    let out = Command::new(crashtrace_tests::otel_python())
        .arg(source("pprof_decode.py"))
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pprof_profiles_count_crashes_by_stack_and_decode_elsewhere() {
    let dir = Shared::new("pprof");
    let path = dir.0.join("crashes.pb.gz");
    let ct = Crashtrace::start(&["--comm", "=crash_nofp", "--pprof", path.to_str().unwrap()]);
    let a = crash_and_report(&ct, &mut Command::new(victim("crash_nofp")), SIGSEGV);
    let b = crash_and_report(&ct, &mut Command::new(victim("crash_nofp")), SIGSEGV);
    assert_eq!(a.signature, b.signature);
    // SIGHUP writes what there is so far.
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    // SAFETY: a signal to the crashtrace child.
    unsafe { libc::kill(ct.pid() as i32, libc::SIGHUP) };
    crashtrace_tests::wait_until("the profile rewritten after SIGHUP", || {
        std::fs::metadata(&path).is_ok_and(|m| m.modified().unwrap() != before)
    });
    let p = read_pprof(&path);
    assert_eq!(p["samples"].as_array().unwrap().len(), 1, "{p}");
    crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).arg("fpe"),
        libc::SIGFPE,
    );
    drop(ct);
    // At the stop: every crash.
    let p = read_pprof(&path);
    assert_eq!(p["sample_type"], serde_json::json!([["crashes", "count"]]));
    let samples = p["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2, "{p}");
    let segv = samples
        .iter()
        .find(|s| s["labels"]["signal"] == "SIGSEGV")
        .unwrap();
    assert_eq!(segv["value"], serde_json::json!([2]));
    let sig = a.signature.as_ref().unwrap();
    assert_eq!(segv["labels"]["signature"], sig.id.as_str());
    assert_eq!(segv["labels"]["process"], "crash_nofp");
    let leaf = &segv["stack"][0];
    assert_eq!(leaf["functions"], serde_json::json!(["crash_segv"]));
    // Symbolizable later: the module, its build ID, the file offset.
    let top = &a.frames[0];
    assert_eq!(leaf["module"], top.module.clone().unwrap().as_str());
    assert_eq!(leaf["build_id"], top.build_id.clone().unwrap().as_str());
    assert_eq!(leaf["address"], top.module_offset.unwrap());
    let names: Vec<&str> = segv["stack"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["functions"][0].as_str())
        .collect();
    assert_eq!(names[..4], ["crash_segv", "level3", "level2", "level1"]);
}

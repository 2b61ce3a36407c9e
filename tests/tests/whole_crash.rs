//! The whole crash in one report: every thread, the fault in detail, kills from other
//! processes, and the outcome checked against /usr/bin/time -v.

use std::process::Command;

use crashtrace::model::ThreadReport;
use crashtrace_tests::{
    CrashReport, Crashtrace, Victim, assert_in_order, crash_and_report, function_names, names_of,
    victim,
};

fn thread<'a>(r: &'a CrashReport, name: &str) -> &'a ThreadReport {
    r.threads
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no thread {name} in {:?}", r.threads))
}

#[test]
fn multithreaded_crash_shows_every_thread() {
    let ct = Crashtrace::start(&["--comm", "=threads"]);
    let r = crash_and_report(
        &ct,
        Command::new(victim("threads")).arg("crash"),
        libc::SIGSEGV,
    );
    assert_eq!(r.thread_name, "crasher");
    assert_ne!(r.tid, r.pid, "the crash is in a worker thread");
    assert_in_order(
        &function_names(&r),
        &["crash_in_worker", "crasher_thread", "start_thread"],
    );
    assert_eq!(r.threads.len(), 3, "{:#?}", r.threads);
    assert_in_order(
        &names_of(&thread(&r, "io-worker").frames),
        &["wait_for_io", "io_thread"],
    );
    assert_in_order(
        &names_of(&thread(&r, "gpu-feeder").frames),
        &["wait_for_gpu", "gpu_thread"],
    );
    assert_in_order(
        &names_of(&thread(&r, "threads").frames),
        &["wait_in_main", "main"],
    );
    assert_eq!(r.threads_not_captured, 0);
    let status = &r.outcome.as_ref().expect("the outcome").status;
    assert!(status.starts_with("killed by SIGSEGV"), "{status}");
    let m = r
        .signal
        .fault_mapping
        .as_deref()
        .expect("the fault's mapping");
    assert!(m.contains("near NULL"), "{m:?}");
    // The faulting store, disassembled.
    let insn = r.instruction.as_deref().expect("the instruction");
    assert!(insn.contains("mov") && insn.contains("(%rdi)"), "{insn}");
}

#[test]
fn sigill_and_sigbus_are_decoded() {
    let ct = Crashtrace::start(&["--comm", "=crash_nofp"]);
    let r = crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).arg("ill"),
        libc::SIGILL,
    );
    assert_eq!(r.signal.code_name.as_deref(), Some("ILL_ILLOPN"));
    let insn = r.instruction.as_deref().expect("the instruction");
    assert!(insn.contains("ud2"), "{insn}");
    assert_eq!(function_names(&r)[0], "crash_ill");
    let r = crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).arg("bus"),
        libc::SIGBUS,
    );
    assert_eq!(r.signal.code_name.as_deref(), Some("BUS_ADRERR"));
    // The kernel's own view of the mapping, taken while the process still existed.
    let m = r
        .signal
        .fault_mapping
        .as_deref()
        .expect("the fault's mapping");
    assert!(
        m.starts_with("inside crashtrace-bus-") && m.contains("rw-s"),
        "{m:?}"
    );
    assert!(r.signal.fault_address.is_some_and(|a| a > 0));
    assert_in_order(&function_names(&r), &["crash_bus", "level3", "main"]);
}

#[test]
fn stack_overflow_is_reported() {
    let ct = Crashtrace::start(&["--comm", "=crash_nofp"]);
    let r = crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).arg("overflow"),
        libc::SIGSEGV,
    );
    let names = function_names(&r);
    assert_eq!(names[0], "recurse", "{names:?}");
    let m = r
        .signal
        .fault_mapping
        .as_deref()
        .expect("the fault's mapping");
    assert!(m.contains("stack overflow"), "{m:?}");
    // Innermost frames, then a marked gap, then the outermost frames from the top of the
    // stack down to _start.
    let gap = r
        .frames
        .iter()
        .position(|f| f.gap_before.is_some())
        .expect("a marked gap");
    assert!(gap > 10);
    assert_in_order(
        &names[gap..],
        &[
            "recurse",
            "crash_overflow",
            "level3",
            "level2",
            "level1",
            "main",
            "_start",
        ],
    );
    assert_eq!(names.last().unwrap(), "_start");
    assert!(names.iter().filter(|n| *n == "recurse").count() > 10);
}

#[test]
fn kill_segv_from_another_process_names_the_sender() {
    let ct = Crashtrace::start(&["--comm", "=threads"]);
    let mut v = Victim::spawn(Command::new(victim("threads")).arg("wait"));
    v.wait_ready();
    let st = Command::new("kill")
        .args(["-SEGV", &v.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(v.wait_signal(), Some(libc::SIGSEGV));
    let r = ct.report_for(v.pid());
    assert_eq!(r.signal.code_name.as_deref(), Some("SI_USER"));
    assert!(r.signal.external);
    assert_eq!(r.signal.sender_name.as_deref(), Some("kill"));
    assert!(r.signal.sender_pid.is_some_and(|p| p != v.pid()), "{r:?}");
    // The victim's own stack at that moment, not the sender's.
    assert!(
        function_names(&r)
            .iter()
            .any(|n| n == "main" || n.starts_with("wait_for"))
    );
    assert_eq!(r.threads.len(), 3);
}

#[test]
fn kill_9_is_reported_with_every_thread() {
    let ct = Crashtrace::start(&["--comm", "=threads"]);
    let mut v = Victim::spawn(Command::new(victim("threads")).arg("wait"));
    v.wait_ready();
    let st = Command::new("kill")
        .args(["-9", &v.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(v.wait_signal(), Some(libc::SIGKILL));
    let r = ct.report_for(v.pid());
    assert_eq!(r.signal.name, "SIGKILL");
    assert_eq!(r.signal.sender_name.as_deref(), Some("kill"));
    assert_eq!(r.outcome.as_ref().unwrap().status, "killed by SIGKILL");
    // One thread leads the report, the three others follow.
    assert_eq!(r.threads.len(), 3);
    let mut all: Vec<String> = r.threads.iter().map(|t| t.name.clone()).collect();
    all.push(r.thread_name.clone());
    all.sort();
    assert_eq!(all, ["crasher", "gpu-feeder", "io-worker", "threads"]);
}

#[test]
fn handled_sigterm_and_kills_none_are_not_reported() {
    // A process that handles SIGTERM and exits cleanly: a graceful stop, not a death.
    let ct = Crashtrace::start(&["--comm", "python"]);
    let mut graceful = Victim::spawn(Command::new("python3").args([
        "-c",
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\nprint('ready', flush=True)\ntime.sleep(60)",
    ]));
    graceful.wait_ready();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(graceful.pid() as i32, libc::SIGTERM) };
    let st = graceful.wait_exit();
    assert!(st.success(), "{st}");
    crash_and_report(
        &ct,
        Command::new("python3").args(["-c", "import ctypes; ctypes.string_at(0)"]),
        libc::SIGSEGV,
    );
    assert!(ct.reports_for(graceful.pid()).is_empty());
    drop(ct);

    let ct = Crashtrace::start(&["--comm", "=threads", "--kills", "none"]);
    let mut v = Victim::spawn(Command::new(victim("threads")).arg("wait"));
    v.wait_ready();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(v.pid() as i32, libc::SIGTERM) };
    assert_eq!(v.wait_signal(), Some(libc::SIGTERM));
    crash_and_report(
        &ct,
        Command::new(victim("threads")).arg("crash"),
        libc::SIGSEGV,
    );
    assert!(
        ct.reports_for(v.pid()).is_empty(),
        "--kills none reported a SIGTERM"
    );
}

/// Parses one `/usr/bin/time -v` figure, e.g. "Maximum resident set size (kbytes): 67164".
fn time_v(out: &str, label: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label} in {out}"));
    let v = line.rsplit(": ").next().unwrap().trim();
    if let Some((m, s)) = v.split_once(':') {
        return m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap();
    }
    v.parse().unwrap()
}

#[test]
fn outcome_agrees_with_usr_bin_time() {
    let ct = Crashtrace::start(&["--comm", "=crash_nofp"]);
    let out = Command::new("timeout")
        .args(["60", "/usr/bin/time", "-v"])
        .arg(victim("crash_nofp"))
        .arg("work-segv")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(text.contains("Command terminated by signal 11"), "{text}");
    // The victim is /usr/bin/time's child: find its report by the parent.
    let r = ct.report_where("the report of time's child", |r| {
        r.process_name == "crash_nofp"
    });
    let o = r.outcome.as_ref().expect("the outcome");
    eprintln!("crashtrace outcome: {o:?}\n/usr/bin/time -v:\n{text}");
    let close = |ours: f64, theirs: f64, abs: f64, rel: f64, what: &str| {
        assert!(
            (ours - theirs).abs() <= abs.max(theirs.abs() * rel),
            "{what}: crashtrace {ours}, /usr/bin/time {theirs}"
        );
    };
    close(
        o.max_rss_kb as f64,
        time_v(&text, "Maximum resident set size"),
        2048.0,
        0.05,
        "max RSS",
    );
    close(
        o.minor_faults as f64,
        time_v(&text, "Minor (reclaiming a frame) page faults"),
        50.0,
        0.05,
        "minor faults",
    );
    close(
        o.major_faults as f64,
        time_v(&text, "Major (requiring I/O) page faults"),
        5.0,
        0.0,
        "major faults",
    );
    let cpu = o.user_seconds + o.system_seconds;
    let their_cpu = time_v(&text, "User time (seconds)") + time_v(&text, "System time (seconds)");
    close(cpu, their_cpu, 0.03, 0.1, "CPU time");
    // time -v counts from fork, crashtrace from the exec'd program's start: a few ms apart.
    close(
        o.wall_seconds,
        time_v(&text, "Elapsed (wall clock) time"),
        0.05,
        0.0,
        "wall time",
    );
    close(
        o.voluntary_context_switches as f64,
        time_v(&text, "Voluntary context switches"),
        5.0,
        0.2,
        "voluntary switches",
    );
    assert_eq!(o.status, "killed by SIGSEGV");
}

#[test]
fn run_mode_reports_the_commands_crashes_and_its_usage() {
    crashtrace_tests::require_root();
    let _serial = crashtrace_tests::serial();
    // A crash elsewhere on the machine while the command runs: not the command's.
    let mut bystander = Victim::spawn(Command::new(victim("crash_fp")).arg("wait-segv"));
    bystander.wait_ready();
    let script = format!(
        "printf x > /proc/{}/fd/0; sleep 0.2; {} work-segv; exit 7",
        bystander.pid(),
        victim("crash_nofp").display()
    );
    // `timeout` bounds the whole run.
    let out = Command::new("timeout")
        .arg("60")
        .arg(crashtrace_tests::crashtrace_bin())
        .args(["--json", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(bystander.wait_signal(), Some(libc::SIGSEGV));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // crashtrace exits with the command's status.
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("crashtrace: command exited with status 7"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Maximum resident set size (kbytes):"),
        "{stderr}"
    );
    let reports: Vec<CrashReport> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The child's crash, and only that: the bystander is outside the command's tree.
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let r = &reports[0];
    assert_eq!(r.process_name, "crash_nofp");
    assert!(r.parent_name == "sh", "{}", r.parent_name);
    assert_in_order(&function_names(r), &["crash_segv", "level3", "main"]);
    let o = r.outcome.as_ref().expect("the outcome");
    assert!(o.max_rss_kb > 60_000, "{o:?}");
}

#[test]
fn oom_kill_in_a_memory_cgroup() {
    // The machines this project runs on have a memory controller (v1 or v2).
    let cg = crashtrace_tests::MemoryCgroup::new("crashtrace-oom", 64 << 20)
        .expect("a memory cgroup with a 64 MiB limit (no memory controller here?)");
    let ct = Crashtrace::start(&["--comm", "python"]);
    let mut v = Victim::spawn(
        &mut cg.enter_and_exec("python3 -c 'x = []\nwhile True: x.append(bytearray(1 << 20))'"),
    );
    assert_eq!(v.wait_signal(), Some(libc::SIGKILL));
    let r = ct.report_for(v.pid());
    let oom = r
        .oom
        .as_ref()
        .unwrap_or_else(|| panic!("not reported as an OOM kill: {r:?}"));
    assert_eq!(
        oom.memory_cgroup.as_deref(),
        cg.path.file_name().unwrap().to_str()
    );
    assert_eq!(oom.memory_cgroup_limit_kb, Some(64 * 1024));
    // Most of the limit was the victim's anonymous memory.
    assert!(oom.anon_rss_kb > 40 * 1024, "{oom:?}");
    assert_eq!(r.signal.name, "SIGKILL");
    assert_eq!(r.outcome.as_ref().unwrap().status, "killed by SIGKILL");
    assert!(!r.frames.is_empty());
}

#[test]
fn hundreds_of_threads() {
    let ct = Crashtrace::start(&["--comm", "=threads"]);
    // 300 pool threads + io, gpu, main: every one of them captured.
    let r = crash_and_report(
        &ct,
        Command::new(victim("threads")).args(["many", "300"]),
        libc::SIGSEGV,
    );
    assert_eq!(
        r.threads.len(),
        303,
        "not captured: {}, notes: {:?}",
        r.threads_not_captured,
        r.notes
    );
    let pool = r
        .threads
        .iter()
        .find(|t| t.name == "pool-299")
        .expect("pool-299");
    assert_in_order(&names_of(&pool.frames), &["sleep_in_pool", "pool_thread"]);
    // Over the per-crash limit: the rest is counted and said, never silently dropped.
    let r = crash_and_report(
        &ct,
        Command::new(victim("threads")).args(["many", "600"]),
        libc::SIGSEGV,
    );
    let captured = r.threads.len() as u64;
    let missing = r.threads_not_captured as u64;
    assert_eq!(captured + missing, 603, "{:?}", r.notes);
    assert!(missing >= 603 - 512, "{missing}");
    assert!(
        r.notes.iter().any(|n| n.contains("at most 512 threads")),
        "{:?}",
        r.notes
    );
}

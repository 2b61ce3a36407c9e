//! Crashes that go through a signal handler, renamed processes, and workers: the cases
//! where `--comm python` and one-report-per-crash are easy to get wrong.

use std::process::Command;

use crashtrace::model::HandlerEnd;
use crashtrace_tests::{
    CrashReport, Crashtrace, Victim, assert_in_order, crash_and_report, function_names, source,
    torch_python, victim,
};

const SIGSEGV: i32 = libc::SIGSEGV;

/// Crashes a victim that is certainly reported, and returns once its report is in: every
/// record from crashes before it has been handled by then.
fn sentinel(ct: &Crashtrace) {
    crash_and_report(ct, &mut Command::new(victim("crash_nofp")), SIGSEGV);
}

#[test]
fn handler_that_reraises_is_reported_once_with_the_original_fault() {
    let ct = Crashtrace::start(&[]);
    let r = crash_and_report(
        &ct,
        Command::new(victim("handlers")).arg("reraise"),
        SIGSEGV,
    );
    let names = function_names(&r);
    // The original fault's frame is on top, not the handler's raise().
    assert_eq!(names[0], "crash_segv", "{names:#?}");
    assert_in_order(&names, &["crash_segv", "level2", "level1", "main"]);
    assert_eq!(r.signal.code_name.as_deref(), Some("SEGV_MAPERR"));
    assert_eq!(r.signal.fault_address, Some(0));
    let h = r.handler.as_ref().expect("the handler");
    assert!(h.address != 0, "{h:?}");
    assert_eq!(h.reraised_with.as_deref(), Some("SIGSEGV SI_TKILL"));
    let pid = r.pid;
    sentinel(&ct);
    assert_eq!(ct.reports_for(pid).len(), 1, "reported more than once");
}

/// The original fault leads; the handler's way out is the outcome, said in words.
fn handler_ends_the_process(mode: &str, signo: i32) -> CrashReport {
    let ct = Crashtrace::start(&[]);
    let mut v = Victim::spawn(Command::new(victim("handlers")).arg(mode));
    let st = v.wait_exit();
    let r = ct.report_for(v.pid());
    let names = function_names(&r);
    assert_eq!(names[0], "crash_segv", "{names:#?}");
    assert_in_order(&names, &["crash_segv", "level2", "level1", "main"]);
    assert_eq!(r.signal.code_name.as_deref(), Some("SEGV_MAPERR"));
    assert_eq!(r.signal.fault_address, Some(0));
    let h = r.handler.as_ref().expect("the handler");
    assert!(h.address != 0, "{h:?}");
    let o = r.outcome.as_ref().expect("the outcome");
    assert_eq!(o.signal, (signo != 0).then_some(signo), "{o:?} ({st})");
    let pid = r.pid;
    sentinel(&ct);
    assert_eq!(ct.reports_for(pid).len(), 1, "reported more than once");
    r
}

#[test]
fn handler_that_exits_with_status_2_is_reported_with_the_fault() {
    let r = handler_ends_the_process("exit2", 0);
    let h = r.handler.as_ref().unwrap();
    assert_eq!(h.ended_by, HandlerEnd::Exit);
    assert_eq!(r.outcome.as_ref().unwrap().exit_code, Some(2));
    let text = crashtrace::report::text::render(&r);
    assert!(
        text.contains("SIGSEGV handled by the process")
            && text.contains("which then exited with status 2"),
        "{text}"
    );
}

#[test]
fn handler_that_aborts_is_reported_with_the_fault() {
    let r = handler_ends_the_process("abort", libc::SIGABRT);
    let h = r.handler.as_ref().unwrap();
    assert_eq!(h.ended_by, HandlerEnd::OtherSignal);
    assert_eq!(h.reraised_with.as_deref(), Some("SIGABRT SI_TKILL"));
}

#[test]
fn handler_that_recovers_is_not_a_crash() {
    let ct = Crashtrace::start(&[]);
    let mut v = Victim::spawn(Command::new(victim("handlers")).arg("recover"));
    let st = v.wait_exit();
    assert!(st.success(), "the recovering victim should exit 0: {st}");
    sentinel(&ct);
    assert!(
        ct.reports_for(v.pid()).is_empty(),
        "a recovered SIGSEGV was reported as a crash"
    );
}

#[test]
fn python_faulthandler_reraise_is_reported_once() {
    let ct = Crashtrace::start(&["--comm", "python"]);
    let r = crash_and_report(
        &ct,
        Command::new("python3").args([
            "-X",
            "faulthandler",
            "-c",
            "import ctypes; ctypes.string_at(0)",
        ]),
        SIGSEGV,
    );
    let names = function_names(&r);
    assert!(names[0].starts_with("__strlen"), "{names:#?}");
    assert_in_order(&names, &["string_at", "_PyEval_EvalFrameDefault"]);
    assert!(
        r.handler.is_some(),
        "faulthandler's re-raise not recognised: {r:?}"
    );
    let pid = r.pid;
    crash_and_report(
        &ct,
        Command::new("python3").args(["-c", "import ctypes; ctypes.string_at(0)"]),
        SIGSEGV,
    );
    assert_eq!(ct.reports_for(pid).len(), 1);
}

#[test]
fn renamed_python_process_is_caught_by_its_executable() {
    let ct = Crashtrace::start(&["--comm", "python"]);
    let r = crash_and_report(
        &ct,
        Command::new("python3").arg(source("py_rename.py")),
        SIGSEGV,
    );
    assert_eq!(r.process_name, "pt_data_worker");
    assert_eq!(r.thread_name, "pt_data_worker");
    let exe = r.executable.as_deref().expect("the executable");
    assert!(
        exe.rsplit('/').next().unwrap().starts_with("python3"),
        "{exe}"
    );
    assert_in_order(
        &function_names(&r),
        &["string_at", "_PyEval_EvalFrameDefault"],
    );
}

#[test]
fn other_programs_are_not_caught_by_comm_python() {
    let ct = Crashtrace::start(&["--comm", "python"]);
    let mut c = Victim::spawn(&mut Command::new(victim("crash_nofp")));
    assert_eq!(c.wait_signal(), Some(SIGSEGV));
    crash_and_report(
        &ct,
        Command::new("python3").args(["-c", "import ctypes; ctypes.string_at(0)"]),
        SIGSEGV,
    );
    assert!(
        ct.reports_for(c.pid()).is_empty(),
        "crash_nofp reported under --comm python"
    );
}

fn multiprocessing_worker(method: &str) {
    let ct = Crashtrace::start(&["--comm", "python"]);
    let mut parent = Victim::spawn(
        Command::new("python3")
            .arg(source("py_mp_worker.py"))
            .arg(method),
    );
    let lines = parent.lines();
    let worker = lines.next_pid("worker pid");
    let r = ct.report_for(worker);
    assert_eq!(lines.next_line("exit line").trim(), "exitcode -11");
    assert_eq!(r.parent_pid, parent.pid(), "{r:?}");
    assert!(r.parent_name.starts_with("python"), "{r:?}");
    let names = function_names(&r);
    assert!(names[0].starts_with("__strlen"), "{names:#?}");
    assert_in_order(&names, &["string_at", "_PyEval_EvalFrameDefault"]);
    parent.wait_exit();
}

#[test]
fn multiprocessing_fork_worker_names_its_parent() {
    multiprocessing_worker("fork");
}

#[test]
fn multiprocessing_spawn_worker_names_its_parent() {
    multiprocessing_worker("spawn");
}

#[test]
fn pytorch_dataloader_worker_segfault() {
    let ct = Crashtrace::start(&["--comm", "python"]);
    let mut main = Victim::spawn(Command::new(torch_python()).arg(source("torch_dataloader.py")));
    let lines = main.lines();
    let worker = lines.next_pid("worker pid");
    let r = ct.report_for(worker);
    // PyTorch renames the worker; --comm python still catches it through its executable.
    assert_eq!(r.process_name, "pt_data_worker", "{r:?}");
    assert_eq!(r.thread_role.as_deref(), Some("data-loader-worker"));
    assert_eq!(r.parent_pid, main.pid());
    // PyTorch's worker handler re-raised; the stack is the original fault's.
    assert_eq!(
        r.handler.as_ref().and_then(|h| h.reraised_with.as_deref()),
        Some("SIGSEGV SI_TKILL"),
        "{r:?}"
    );
    assert_eq!(r.signal.code_name.as_deref(), Some("SEGV_MAPERR"));
    let names = function_names(&r);
    assert!(names[0].starts_with("__strlen"), "{names:#?}");
    assert_in_order(&names, &["string_at", "_PyEval_EvalFrameDefault"]);
    assert!(
        r.outcome
            .as_ref()
            .is_some_and(|o| o.status.starts_with("killed by SIGSEGV")),
        "{r:?}"
    );
    let main_line = lines.next_line("main's error line");
    assert!(main_line.contains("DataLoader worker"), "{main_line}");
    main.wait_exit();
    // A later crash that --comm python reports: everything before it has been handled.
    crash_and_report(
        &ct,
        Command::new("python3").args(["-c", "import ctypes; ctypes.string_at(0)"]),
        SIGSEGV,
    );
    assert_eq!(ct.reports_for(worker).len(), 1);
}

#[test]
fn reraised_sigbus_names_the_truncated_file() {
    let ct = Crashtrace::start(&["--comm", "python"]);
    let dir = std::env::temp_dir().join(format!("crashtrace-bus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("dataset.bin");
    let mut main = Victim::spawn(
        Command::new(torch_python())
            .arg(source("torch_mmap_bus.py"))
            .arg(&data),
    );
    let lines = main.lines();
    let worker = lines.next_pid("worker pid");
    let r = ct.report_for(worker);
    assert_eq!(r.signal.name, "SIGBUS", "{r:?}");
    assert_eq!(r.signal.code_name.as_deref(), Some("BUS_ADRERR"));
    // PyTorch's worker handler re-raised: the fault is the original one, with its mapping.
    assert_eq!(
        r.handler.as_ref().and_then(|h| h.reraised_with.as_deref()),
        Some("SIGBUS SI_TKILL"),
        "{r:?}"
    );
    let m = r
        .signal
        .fault_mapping
        .as_deref()
        .expect("the fault's mapping");
    assert!(
        m.starts_with("inside dataset.bin ")
            && m.contains("file offset 0x3008, beyond the end of the file, which was 4096 bytes"),
        "{m}"
    );
    eprintln!("fault: {m}");
    let cause = r.signal.cause.as_deref().expect("the SIGBUS's cause");
    assert!(
        cause.starts_with(
            "a read past the end of dataset.bin: file offset 0x3008, but the file is 4096 bytes"
        ),
        "{cause}"
    );
    let main_line = lines.next_line("main's error line");
    assert!(main_line.contains("DataLoader worker"), "{main_line}");
    main.wait_exit();
    let _ = std::fs::remove_dir_all(&dir);
}

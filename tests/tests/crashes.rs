//! Root integration tests: the real eBPF programs, real crashes, real reports.

use std::process::Command;

use crashtrace_tests::{
    Crashtrace, Victim, assert_in_order, crash_and_report, function_names, source, victim,
};

const SIGSEGV: i32 = libc::SIGSEGV;
const SIGABRT: i32 = libc::SIGABRT;

fn last_frame_is_start(names: &[String]) {
    assert_eq!(
        names.last().map(String::as_str),
        Some("_start"),
        "frames: {names:#?}"
    );
}

#[test]
fn c_with_frame_pointers() {
    let ct = Crashtrace::start(&[]);
    let r = crash_and_report(&ct, &mut Command::new(victim("crash_fp")), SIGSEGV);
    let names = function_names(&r);
    assert_in_order(
        &names,
        &["crash_segv", "level3", "level2", "level1", "main"],
    );
    assert_eq!(names[0], "crash_segv");
    last_frame_is_start(&names);
    assert_eq!(r.signal.name, "SIGSEGV");
    assert_eq!(r.signal.code_name.as_deref(), Some("SEGV_MAPERR"));
    assert_eq!(r.signal.fault_address, Some(0));
    assert_eq!(r.process_name, "crash_fp");
    // file:line from the victim's own debug info.
    let f0 = &r.frames[0];
    let loc = f0.location.as_ref().expect("a source location");
    assert!(loc.file.ends_with("crash.c"), "{f0:?}");
    assert!(loc.line.is_some_and(|l| l > 0), "{f0:?}");
}

/// Each stack-size class is its own signal_deliver program: each must pass this kernel's
/// verifier and capture (the larger ones copy more pages, a longer program).
#[test]
fn every_stack_class_loads_and_captures() {
    // STACK_CLASSES: 8, 16, 32, 64 and 128 KiB.
    for kib in [8, 16, 32, 64, 128] {
        let (class, size) = (kib << 10, format!("{kib}K"));
        let ct = Crashtrace::start(&["--comm", "=crash_fp", "--stack-size", &size]);
        let r = crash_and_report(&ct, &mut Command::new(victim("crash_fp")), SIGSEGV);
        assert!(r.unwind.stack_bytes <= class, "{size}: {:?}", r.unwind);
        assert_in_order(
            &function_names(&r),
            &["crash_segv", "level3", "level2", "level1", "main"],
        );
    }
}

#[test]
fn c_without_frame_pointers() {
    let ct = Crashtrace::start(&[]);
    let r = crash_and_report(&ct, &mut Command::new(victim("crash_nofp")), SIGSEGV);
    let names = function_names(&r);
    assert_eq!(names[0], "crash_segv");
    assert_in_order(
        &names,
        &[
            "crash_segv",
            "level3",
            "level2",
            "level1",
            "main",
            "__libc_start_call_main",
        ],
    );
    last_frame_is_start(&names);
    assert_eq!(r.unwind.method, "DWARF CFI");
}

#[test]
fn abort_three_deep_through_libc() {
    let ct = Crashtrace::start(&[]);
    let r = crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).arg("abort"),
        SIGABRT,
    );
    let names = function_names(&r);
    // __pthread_kill_implementation is local to libc: named through libc6-dbg's debug file.
    assert_in_order(
        &names,
        &[
            "__pthread_kill_implementation",
            "raise|__GI_raise",
            "abort|__GI_abort",
            "crash_abort",
            "level3",
            "level2",
            "level1",
            "main",
        ],
    );
    last_frame_is_start(&names);
    assert_eq!(r.signal.name, "SIGABRT");
    assert_eq!(r.signal.code_name.as_deref(), Some("SI_TKILL"));
    assert_eq!(r.signal.sender_pid, Some(r.pid));
    assert!(r.signal.fault_address.is_none());
}

#[test]
fn sigfpe_decoded() {
    let ct = Crashtrace::start(&[]);
    let r = crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).arg("fpe"),
        libc::SIGFPE,
    );
    assert_eq!(r.signal.code_name.as_deref(), Some("FPE_INTDIV"));
    assert_in_order(
        &function_names(&r),
        &["crash_fpe", "level3", "level2", "level1", "main"],
    );
}

#[test]
fn crash_inside_shared_library() {
    let ct = Crashtrace::start(&[]);
    let r = crash_and_report(&ct, &mut Command::new(victim("use_shlib")), SIGSEGV);
    let names = function_names(&r);
    assert_in_order(&names, &["lib_crash", "lib_inner", "lib_entry", "main"]);
    assert_eq!(names[0], "lib_crash");
    assert!(
        r.frames[0]
            .module
            .as_deref()
            .is_some_and(|m| m.ends_with("libvictim.so"))
    );
    last_frame_is_start(&names);
}

#[test]
fn crash_in_library_loaded_just_before() {
    let ct = Crashtrace::start(&[]);
    let r = crash_and_report(
        &ct,
        Command::new(victim("use_dlopen")).arg(victim("libvictim.so")),
        SIGSEGV,
    );
    let names = function_names(&r);
    assert_in_order(&names, &["dl_crash", "dl_entry", "main"]);
    assert_eq!(names[0], "dl_crash");
    assert_eq!(r.signal.fault_address, Some(16));
}

#[test]
fn cpp_names_are_demangled() {
    let ct = Crashtrace::start(&[]);
    let r = crash_and_report(&ct, &mut Command::new(victim("crash_cpp")), SIGSEGV);
    let names = function_names(&r);
    assert_in_order(
        &names,
        &[
            "victim::Widget::poke(int)",
            "void victim::visit_all<victim::Widget>(std::vector<victim::Widget, std::allocator<victim::Widget> >&)",
            "main",
        ],
    );
}

#[test]
fn rust_names_are_demangled() {
    let ct = Crashtrace::start(&[]);
    let r = crash_and_report(&ct, &mut Command::new(victim("crash_rust")), SIGSEGV);
    let names = function_names(&r);
    let pos = |needle: &str| {
        names
            .iter()
            .position(|n| n.starts_with(needle))
            .unwrap_or_else(|| panic!("no frame {needle}; frames: {names:#?}"))
    };
    assert!(pos("crash_rust::write_through") < pos("crash_rust::crash_here"));
    // crash_rust::main is inlined into the `main` shim that std generates.
    assert!(pos("crash_rust::crash_here") < pos("main"));
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("_ZN") && !n.starts_with("_R")),
        "{names:#?}"
    );
}

#[test]
fn process_started_before_crashtrace() {
    // Its mappings come from the /proc scan at start, not from the mmap records.
    let mut v = Victim::spawn(Command::new(victim("crash_nofp")).arg("wait-segv"));
    v.wait_ready();
    let ct = Crashtrace::start(&[]);
    v.trigger();
    assert_eq!(v.wait_signal(), Some(SIGSEGV));
    let r = ct.report_for(v.pid());
    assert_in_order(
        &function_names(&r),
        &["crash_segv", "level3", "level2", "level1", "main"],
    );
}

#[test]
fn comm_filter_applies_in_the_kernel() {
    let ct = Crashtrace::start(&["--comm", "crash_nof"]);
    let mut other = Victim::spawn(&mut Command::new(victim("crash_fp")));
    assert_eq!(other.wait_signal(), Some(SIGSEGV));
    let r = crash_and_report(&ct, &mut Command::new(victim("crash_nofp")), SIGSEGV);
    assert_eq!(r.process_name, "crash_nofp");
    // The crash_fp crash came first; it would have been reported before this one.
    assert!(
        ct.reports_for(other.pid()).is_empty(),
        "crash_fp slipped through --comm"
    );
}

#[test]
fn exact_comm_and_signal_filters() {
    let ct = Crashtrace::start(&["--comm", "=crash_nofp", "--signals", "ABRT"]);
    let mut segv = Victim::spawn(&mut Command::new(victim("crash_nofp")));
    assert_eq!(segv.wait_signal(), Some(SIGSEGV));
    let r = crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).arg("abort"),
        SIGABRT,
    );
    assert_eq!(r.signal.name, "SIGABRT");
    assert!(
        ct.reports_for(segv.pid()).is_empty(),
        "SIGSEGV reported despite --signals ABRT"
    );
}

#[test]
fn pid_filter() {
    let mut target = Victim::spawn(Command::new(victim("crash_nofp")).arg("wait-segv"));
    target.wait_ready();
    let pid = target.pid().to_string();
    let ct = Crashtrace::start(&["--pid", &pid]);
    let mut other = Victim::spawn(&mut Command::new(victim("crash_nofp")));
    assert_eq!(other.wait_signal(), Some(SIGSEGV));
    target.trigger();
    assert_eq!(target.wait_signal(), Some(SIGSEGV));
    let r = ct.report_for(target.pid());
    assert_eq!(r.pid, target.pid());
    assert!(
        ct.reports_for(other.pid()).is_empty(),
        "--pid let another process through"
    );
}

#[test]
fn python_ctypes_crash_native_frames() {
    let ct = Crashtrace::start(&["--comm", "python"]);
    for python in ["python3", "/usr/bin/python3.11"] {
        let r = crash_and_report(
            &ct,
            Command::new(python).arg(source("ctypes_deep.py")),
            SIGSEGV,
        );
        let names = function_names(&r);
        eprintln!("{python}: {names:#?}");
        // From the faulting libc function, through the eval loop, to the interpreter's
        // entry point and _start.
        assert!(
            names[0].starts_with("__strlen"),
            "{python}: frame 0 is {}",
            names[0]
        );
        assert_in_order(
            &names,
            &[
                "_PyEval_EvalFrameDefault",
                "Py_BytesMain",
                "__libc_start_call_main",
            ],
        );
        last_frame_is_start(&names);
    }
}

#[test]
fn text_report_reads_like_gdb() {
    let ct = Crashtrace::start_text(&["--comm", "=crash_nofp"]);
    let mut v = Victim::spawn(&mut Command::new(victim("crash_nofp")));
    assert_eq!(v.wait_signal(), Some(SIGSEGV));
    let text = ct.text_containing("unwinding:");
    let pid = v.pid();
    assert!(
        text.contains(&format!("SIGSEGV in process {pid} (crash_nofp)")),
        "{text}"
    );
    assert!(
        text.contains("SEGV_MAPERR: address not mapped to object"),
        "{text}"
    );
    assert!(text.contains("#0   0x"), "{text}");
    let pos = |n: &str| text.find(n).unwrap_or_else(|| panic!("no {n} in {text}"));
    assert!(pos(" in crash_segv+") < pos(" in level3+"));
    assert!(pos(" in level1+") < pos(" in main+"));
}

#[test]
fn deep_recursion_is_collapsed_in_text() {
    let ct = Crashtrace::start_text(&["--comm", "=crash_nofp"]);
    let mut v = Victim::spawn(Command::new(victim("crash_nofp")).arg("overflow"));
    assert_eq!(v.wait_signal(), Some(SIGSEGV));
    let text = ct.text_containing("\nunwinding:");
    assert!(text.contains("more frames of recurse ..."), "{text}");
    assert!(
        text.contains("were not copied (the stack overflowed)"),
        "{text}"
    );
    assert!(text.contains(" in main+"), "{text}");
    // Not flooded: a few dozen lines, not hundreds of frames.
    let frame_lines = text.lines().filter(|l| l.starts_with('#')).count();
    assert!(frame_lines < 30, "{frame_lines} frame lines:\n{text}");
}

/// (function, line) of every frame gdb's `bt` shows for `victim` run to its crash.
fn gdb_backtrace(victim: &std::path::Path) -> Vec<(String, u32)> {
    let out = Command::new("timeout")
        .args([
            "60",
            "gdb",
            "-nx",
            "-batch",
            "-iex",
            "set debuginfod enabled off",
        ])
        .args(["-ex", "run", "-ex", "bt"])
        .arg(victim)
        .output()
        .expect("gdb (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    // "#1  middle (v=<optimized out>) at .../inline.c:9" or "#3  0x... in main (...) at ...:19"
    text.lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.split_once("  ")?.1.trim_start();
            let rest = rest.split_once(" in ").map_or(rest, |(_, r)| r);
            let func = rest.split(' ').next()?.to_string();
            let line = l.rsplit(':').next()?.trim().parse().ok()?;
            Some((func, line))
        })
        .collect()
}

#[test]
fn inlined_frames_are_listed_as_gdb_lists_them() {
    let ct = Crashtrace::start(&["--comm", "=inline"]);
    let r = crash_and_report(&ct, &mut Command::new(victim("inline")), SIGSEGV);
    // Each physical frame: its inlined functions innermost first, then the function.
    let ours: Vec<(String, u32)> = r
        .frames
        .iter()
        .flat_map(|f| {
            let inl = f
                .inlined
                .iter()
                .map(|i| (i.function.clone(), i.location.as_ref().and_then(|l| l.line)));
            inl.chain(std::iter::once((
                f.function.clone().unwrap_or_default(),
                f.location.as_ref().and_then(|l| l.line),
            )))
        })
        .map(|(f, l)| (f, l.unwrap_or(0)))
        .collect();
    let gdb = gdb_backtrace(&victim("inline"));
    eprintln!("crashtrace: {ours:?}\ngdb: {gdb:?}");
    let names: Vec<&str> = gdb.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(&names[..4], ["inner", "middle", "outer", "main"], "{gdb:?}");
    assert_eq!(&ours[..4], &gdb[..4]);
    assert!(r.frames[0].inlined.len() == 2, "{:?}", r.frames[0]);
}

#[test]
fn rust_panic_abort_keeps_the_callers() {
    let ct = Crashtrace::start(&["--comm", "=rust_panic"]);
    let r = crash_and_report(&ct, &mut Command::new(victim("rust_panic")), SIGABRT);
    let names = function_names(&r);
    // rustc and lld lay the code segment out in the file page where the read-only one
    // ends: the unwinder must place the module by its executable segment.
    assert_in_order(
        &names,
        &[
            "std::process::abort",
            "core::panicking::panic_fmt",
            "rust_panic::parse_config",
            "rust_panic::load_settings",
            "rust_panic::start_service",
            "rust_panic::main",
        ],
    );
    assert_eq!(
        r.unwind.stop_reason, "reached the outermost frame",
        "{names:#?}"
    );
    last_frame_is_start(&names);
}

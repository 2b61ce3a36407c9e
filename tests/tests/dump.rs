//! `crashtrace dump`: live processes' threads read without ptrace and without stopping
//! them, checked against py-spy on the same process and against /proc while it runs.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crashtrace_tests::{
    DumpReport, Victim, finish_dump, py_spy, require_root, run_dump, serial, source, spawn_dump,
    victim, wait_until,
};

/// Debian's python3.11: the interpreter py-spy reads too.
const PYTHON: &str = "/usr/bin/python3.11";

/// The victim of dump_threads.py, ready, with every blocking thread asleep in the kernel.
struct Threads {
    v: Victim,
    counter: std::path::PathBuf,
}

impl Threads {
    fn start(extra: u32) -> Self {
        Self::start_named(extra, None)
    }

    /// `main`: a name the main thread gives itself (and so the process's name).
    fn start_named(extra: u32, main: Option<&str>) -> Self {
        let counter = std::env::temp_dir().join(format!(
            "crashtrace-dump-counter-{}-{extra}",
            std::process::id()
        ));
        std::fs::write(&counter, [0u8; 8]).unwrap();
        let mut v = Victim::spawn(
            Command::new(PYTHON)
                .arg(source("dump_threads.py"))
                .arg(&counter)
                .arg(extra.to_string())
                .args(main),
        );
        v.wait_ready();
        let pid = v.pid();
        // Asleep ("S"), so that the stack each is read with is the one it blocks on.
        for name in ["sleeper", "waiter", "acceptor"] {
            wait_until(&format!("{name} asleep"), || {
                tid_named(pid, name).is_some_and(|t| state_of(pid, t) == Some('S'))
            });
        }
        wait_until("main thread asleep", || state_of(pid, pid) == Some('S'));
        Self { v, counter }
    }

    fn count(&self) -> u64 {
        let b = std::fs::read(&self.counter).unwrap();
        u64::from_le_bytes(b[..8].try_into().unwrap())
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.counter);
    }
}

fn tid_named(pid: u32, name: &str) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|t| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{t}/comm"))
                .is_ok_and(|c| c.trim_end() == name)
        })
}

/// The one-letter state in /proc/PID/task/TID/stat (after the parenthesized name).
fn state_of(pid: u32, tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn one_report(args: &[&str]) -> DumpReport {
    let run = run_dump(args);
    assert!(
        run.status.success(),
        "{:?}: {}\n{}",
        run.status,
        run.stderr,
        run.stdout
    );
    let mut r = run.reports();
    assert_eq!(r.len(), 1, "{}", run.stdout);
    r.remove(0)
}

fn thread<'a>(r: &'a DumpReport, name: &str) -> &'a crashtrace::model::ThreadReport {
    r.threads
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no thread {name} in {:?}", names(r)))
}

fn names(r: &DumpReport) -> Vec<&str> {
    r.threads.iter().map(|t| t.name.as_str()).collect()
}

fn functions(t: &crashtrace::model::ThreadReport) -> Vec<String> {
    t.frames
        .iter()
        .flat_map(|f| {
            f.inlined
                .iter()
                .map(|i| i.function.clone())
                .chain(f.function.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// (function, file name, line) of each Python frame, innermost first.
type PyFrames = Vec<(String, String, u32)>;

fn base(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// py-spy's view of the same process, by OS thread id.
fn py_spy_dump(pid: u32) -> HashMap<u32, (String, PyFrames)> {
    let out = Command::new(py_spy())
        .args(["dump", "--json", "--pid", &pid.to_string()])
        .output()
        .expect("running py-spy");
    assert!(
        out.status.success(),
        "py-spy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let threads: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("py-spy JSON");
    threads
        .iter()
        .map(|t| {
            let frames = t["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap().to_string(),
                        base(f["filename"].as_str().unwrap()),
                        f["line"].as_u64().unwrap() as u32,
                    )
                })
                .collect();
            (
                t["os_thread_id"].as_u64().unwrap() as u32,
                (t["thread_name"].as_str().unwrap_or("").to_string(), frames),
            )
        })
        .collect()
}

#[test]
fn names_every_thread_with_its_native_and_python_stack_as_py_spy_does() {
    require_root();
    // Beside a running monitor (which holds the suite's eBPF lock for the test): the
    // dump loads programs and maps of its own.
    let monitor = crashtrace_tests::Crashtrace::start(&["--comm", "=no-such-process"]);
    let t = Threads::start(0);
    let pid = t.v.pid();
    let r = one_report(&["--json", &pid.to_string()]);
    assert!(monitor.reports().is_empty());
    assert_eq!(r.kind, "dump");
    assert_eq!(r.pid, pid);
    assert!(!r.exited, "{:?}", r.notes);
    assert_eq!(r.threads.len(), 5, "{:?}", names(&r));
    // Native: each blocked thread in the system call it waits in, unwound by DWARF
    // through libc and libpython (neither keeps frame pointers) to the thread's start.
    let expect = [
        ("sleeper", "clock_nanosleep", "clock_nanosleep"),
        ("waiter", "futex", "PyThread_acquire_lock_timed"),
        ("acceptor", "accept4", "accept4"),
    ];
    for (name, syscall, function) in expect {
        let th = thread(&r, name);
        let st = th.state.as_ref().expect("state");
        assert_eq!(st.state, "sleeping", "{name}");
        assert_eq!(st.syscall.as_deref(), Some(syscall), "{name}");
        assert_eq!(st.consistency, "consistent", "{name}");
        let f = functions(th);
        assert!(f.iter().any(|n| n.contains(function)), "{name}: {f:?}");
        assert_eq!(
            f.last().map(String::as_str),
            Some("clone3"),
            "{name}: {f:?}"
        );
        assert_eq!(
            th.unwind.stop_reason, "reached the outermost frame",
            "{name}"
        );
    }
    let main = r
        .threads
        .iter()
        .find(|t| t.tid == pid)
        .expect("main thread");
    assert_eq!(main.role.as_deref(), Some("main"));
    assert_eq!(
        main.state.as_ref().unwrap().syscall.as_deref(),
        Some("read")
    );
    assert!(
        functions(main).iter().any(|n| n.contains("main")),
        "{:?}",
        functions(main)
    );
    let busy = thread(&r, "busy").state.as_ref().unwrap();
    assert_ne!(
        busy.consistency, "consistent",
        "the busy thread was not blocked: {busy:?}"
    );
    // Python: the same frames py-spy reads, thread by thread (py-spy runs after the dump:
    // it pauses the process, which the dump must not).
    let py = r.python.as_ref().expect("Python threads");
    let spy = py_spy_dump(pid);
    assert_eq!(py.threads.len(), spy.len(), "{spy:?}");
    for pt in &py.threads {
        let tid = pt.native_id.expect("native id");
        let (spy_name, spy_frames) = spy
            .get(&tid)
            .unwrap_or_else(|| panic!("py-spy lacks {tid}"));
        let ours: PyFrames = pt
            .frames
            .iter()
            .map(|f| {
                (
                    f.function.clone(),
                    base(&f.file),
                    f.line.unwrap_or(0) as u32,
                )
            })
            .collect();
        if spy_name == "busy" {
            // It ran on between the two reads: the same functions, the line may move.
            let fns = |v: &PyFrames| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
            assert_eq!(fns(&ours), fns(spy_frames), "busy");
        } else {
            assert_eq!(&ours, spy_frames, "thread {tid} ({spy_name})");
        }
        if spy_name != "MainThread" {
            // The OS name the thread gave itself is the one crashtrace shows.
            assert_eq!(pt.name.as_deref(), Some(spy_name.as_str()));
        }
    }
    // By name, as the monitor's --comm matches: a prefix of the process's name.
    let by_name = run_dump(&["--json", "--comm", "python3.1"]);
    assert!(
        by_name.reports().iter().any(|r| r.pid == pid),
        "{}",
        by_name.stderr
    );
    // The text form: one header, every thread with its state.
    let text = run_dump(&[&pid.to_string()]);
    assert!(text.status.success(), "{}", text.stderr);
    assert!(
        text.stdout.contains(&format!(
            "=== crashtrace dump: process {pid} (python3.11), 5 threads ==="
        )),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("(sleeper) sleeping in clock_nanosleep [consistent]")
    );
    assert!(
        text.stdout
            .contains("(waiter) sleeping in futex [consistent]")
    );
    assert!(
        text.stdout.contains("dump_threads.py\", line "),
        "{}",
        text.stdout
    );
}

#[test]
fn the_target_runs_on_while_it_is_dumped() {
    require_root();
    let _g = serial();
    // Many threads make the pass long enough to watch.
    let t = Threads::start(200);
    let pid = t.v.pid();
    let before = t.count();
    let dump = spawn_dump(&["--json", &pid.to_string()]);
    let dump_pid = dump.id();
    // Until the dump exits: nobody traces the target and no thread of it is stopped.
    let mut samples = 0;
    let mut during = Vec::new();
    let deadline = Instant::now() + *crashtrace_tests::WAIT;
    while std::path::Path::new(&format!("/proc/{dump_pid}/stat"))
        .exists()
        .then(|| std::fs::read_to_string(format!("/proc/{dump_pid}/stat")).unwrap_or_default())
        .is_some_and(|s| !s.contains(") Z "))
        && Instant::now() < deadline
    {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("TracerPid:\t0\n"), "{status}");
        for tid in crashtrace::sys::procfs::threads(pid) {
            let s = state_of(pid, tid);
            assert!(
                !matches!(s, Some('T' | 't')),
                "thread {tid} stopped ({s:?})"
            );
        }
        samples += 1;
        during.push(t.count());
        std::thread::sleep(Duration::from_millis(1));
    }
    let run = finish_dump(dump);
    assert!(run.status.success(), "{}", run.stderr);
    let after = t.count();
    assert!(samples > 1, "the dump ended before it could be watched");
    // The busy thread advanced while the dump ran, not only around it.
    assert!(
        during.last() > during.first(),
        "no progress during the dump: {during:?}"
    );
    assert!(
        after > before,
        "the busy thread did not advance: {before} -> {after}"
    );
    let r = &run.reports()[0];
    assert_eq!(r.threads.len(), 205, "{:?}", r.notes);
    let busy = thread(r, "busy").state.as_ref().unwrap();
    assert!(
        ["running", "runnable"].contains(&busy.state.as_str()),
        "{busy:?}"
    );
    // Every Python thread, not only the first sixteen a crash reads.
    assert_eq!(r.python.as_ref().unwrap().threads.len(), 205);
}

#[test]
fn processes_that_exit_during_the_dump_give_a_partial_result() {
    require_root();
    let _g = serial();
    let mut v = Victim::spawn(&mut Command::new(victim("dump_ephemeral")));
    v.wait_ready();
    // Each child lives about 2 ms; loading the iterator takes far longer, so a child
    // listed by name is gone when the pass comes. A scan can fall between two children:
    // then the dump says there is none, and is run again.
    let mut run = None;
    for _ in 0..50 {
        let r = run_dump(&["--json", "--comm", "=ct-ephemeral"]);
        if r.stderr.contains("no process named ct-ephemeral") {
            continue;
        }
        run = Some(r);
        break;
    }
    let run = run.expect("a ct-ephemeral child was never found");
    assert_eq!(run.status.code(), Some(1), "{}\n{}", run.stderr, run.stdout);
    let reports = run.reports();
    assert!(!reports.is_empty());
    let gone: Vec<&DumpReport> = reports.iter().filter(|r| r.exited).collect();
    assert!(
        !gone.is_empty(),
        "none exited: {:?}",
        reports.iter().map(|r| &r.notes).collect::<Vec<_>>()
    );
    for r in gone {
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains(&format!("process {} exited", r.pid))),
            "{:?}",
            r.notes
        );
    }
    drop(v.child.stdin.take());
}

#[test]
fn a_missing_pid_a_thread_id_and_crashtrace_itself_are_refused() {
    require_root();
    let no = run_dump(&["999999999"]);
    assert_eq!(no.status.code(), Some(2));
    assert!(no.stderr.contains("no process 999999999"), "{}", no.stderr);
    assert!(no.stdout.is_empty());
    let none = run_dump(&["--comm", "no-such-name-x"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        none.stderr.contains("no process named no-such-name-x"),
        "{}",
        none.stderr
    );
    let nothing = run_dump(&[]);
    assert_eq!(nothing.status.code(), Some(2));
    assert!(
        nothing.stderr.contains("name a process"),
        "{}",
        nothing.stderr
    );
    // The shell's pid becomes crashtrace's at exec.
    let me = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {} dump $$",
            crashtrace_tests::crashtrace_bin().display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(me.status.code(), Some(2));
    let err = String::from_utf8_lossy(&me.stderr);
    assert!(err.contains("is crashtrace itself"), "{err}");
    // A thread's id names its process.
    let t = Threads::start(0);
    let pid = t.v.pid();
    let tid = tid_named(pid, "sleeper").unwrap();
    let th = run_dump(&[&tid.to_string()]);
    assert_eq!(th.status.code(), Some(2));
    assert!(
        th.stderr
            .contains(&format!("{tid} is a thread of process {pid}")),
        "{}",
        th.stderr
    );
}

#[test]
fn names_the_process_chose_are_escaped() {
    require_root();
    let _g = serial();
    let t = Threads::start_named(0, Some("\x1b]0;x\x07\n=== y"));
    let pid = t.v.pid();
    let text = run_dump(&[&pid.to_string()]);
    assert!(text.status.success(), "{}", text.stderr);
    assert!(
        !text.stdout.contains('\x1b') && !text.stdout.contains('\x07'),
        "{:?}",
        text.stdout
    );
    assert!(
        text.stdout.contains("\\x1b]0;x\\x07\\x0a=== y"),
        "{}",
        text.stdout
    );
    assert_eq!(
        text.stdout.lines().filter(|l| l.starts_with("===")).count(),
        1,
        "{}",
        text.stdout
    );
    let json = run_dump(&["--json", &pid.to_string()]);
    assert!(!json.stdout.contains('\x1b'), "{:?}", json.stdout);
    let r = &json.reports()[0];
    // The JSON keeps the name as it is, escaped only as JSON.
    assert_eq!(r.process_name, "\x1b]0;x\x07\n=== y");
}

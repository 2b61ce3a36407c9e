//! Harness for the root integration tests: runs the real crashtrace binary (real eBPF,
//! real kernel), runs victims that really crash, and matches reports to victims by pid.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

pub use crashtrace::{
    model::{CrashReport, Frame, PyThreadReport},
    report::dump::DumpReport,
};

/// How long any single wait may take before the test fails: 30 s, or
/// CRASHTRACE_TEST_WAIT_SECS (`cargo xtask vm-test` sets it: an emulated CPU is slower).
pub static WAIT: std::sync::LazyLock<Duration> = std::sync::LazyLock::new(|| {
    let secs = std::env::var("CRASHTRACE_TEST_WAIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
});

/// Tests that load eBPF run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the lock that serializes tests loading eBPF, for tests that run crashtrace
/// themselves.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn victim(name: &str) -> PathBuf {
    Path::new(env!("VICTIMS_DIR")).join(name)
}

pub fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("victims")
        .join(name)
}

/// The crashtrace binary under test: CRASHTRACE_BIN, else the workspace's release build.
pub fn crashtrace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CRASHTRACE_BIN") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/crashtrace");
    assert!(
        p.exists(),
        "{} is missing: run the suite with `cargo xtask test` (it builds crashtrace first)",
        p.display()
    );
    p
}

pub fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests load eBPF programs: run them as root (`sudo cargo xtask test`)"
    );
}

#[derive(Default)]
struct Output {
    reports: Vec<CrashReport>,
    /// Lines that were not valid reports, with why: any fails the test.
    invalid: Vec<String>,
    /// The JSON lines as crashtrace wrote them, beside `reports`.
    json_lines: Vec<String>,
    text: String,
    stderr: Vec<String>,
    /// stdout closed: crashtrace is gone or going.
    exited: bool,
    /// stderr closed: every status line it wrote has been read.
    stderr_closed: bool,
}

/// The python of a venv `cargo xtask setup` makes (`torch-venv`, `otel-venv`), or the
/// one the variable names.
fn venv_python(var: &str, venv: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(format!(".cache/crashtrace/{venv}/bin/python"))
    });
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask setup`",
        p.display()
    );
    p
}

/// The venv python with PyTorch.
pub fn torch_python() -> PathBuf {
    venv_python("CRASHTRACE_TORCH_PYTHON", "torch-venv")
}

/// The venv python with the official OpenTelemetry protobuf packages.
pub fn otel_python() -> PathBuf {
    venv_python("CRASHTRACE_OTEL_PYTHON", "otel-venv")
}

/// py-spy, installed by `cargo xtask setup` into the venv beside opentelemetry-proto.
pub fn py_spy() -> PathBuf {
    let p = otel_python().with_file_name("py-spy");
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask setup`",
        p.display()
    );
    p
}

/// What one `crashtrace dump` printed.
pub struct DumpRun {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl DumpRun {
    /// The `--json` lines, typed.
    pub fn reports(&self) -> Vec<DumpReport> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// Starts `crashtrace dump ARGS`; `finish_dump` collects it.
pub fn spawn_dump(args: &[&str]) -> Child {
    Command::new(crashtrace_bin())
        .arg("dump")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning crashtrace dump")
}

/// Waits for a dump started by `spawn_dump`, bounded by `WAIT` (killed past it).
pub fn finish_dump(mut child: Child) -> DumpRun {
    use std::io::Read as _;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut stderr = String::new();
    let deadline = Instant::now() + *WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("crashtrace dump did not finish within {:?}", *WAIT);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = err.read_to_string(&mut stderr);
    DumpRun {
        status,
        stdout: reader.join().expect("stdout reader"),
        stderr,
    }
}

/// Runs `crashtrace dump ARGS` to its end (bounded).
pub fn run_dump(args: &[&str]) -> DumpRun {
    finish_dump(spawn_dump(args))
}

/// Waits (bounded by `WAIT`) until `cond` holds, polling: for what crashtrace does
/// outside its stdout and stderr (files it writes).
#[track_caller]
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + *WAIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {:?} waiting for {what}",
            *WAIT
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The reports in a JSON-lines file, each checked as `check_report` does; a line that is
/// not a whole valid report fails the test.
#[track_caller]
pub fn reports_in_file(path: &Path) -> Vec<CrashReport> {
    let schema = report_schema();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial line in {path:?}"
    );
    text.lines()
        .map(|l| check_report(&schema, l).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .collect()
}

/// docs/schema.json, compiled.
pub fn report_schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema.json");
    let text = std::fs::read_to_string(&path).expect("docs/schema.json");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

/// One JSON line as a report: valid against the schema, and read as the typed report.
pub fn check_report(schema: &jsonschema::Validator, line: &str) -> Result<CrashReport, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line:?}"))?;
    let errors: Vec<String> = schema
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if !errors.is_empty() {
        return Err(format!("not valid against docs/schema.json: {errors:?}"));
    }
    serde_json::from_value(value).map_err(|e| format!("not a report ({e}): {line:?}"))
}

/// A running crashtrace. Dropping it stops it (SIGINT, then SIGKILL) and reaps it.
pub struct Crashtrace {
    child: Child,
    out: Arc<(Mutex<Output>, Condvar)>,
    _serial: MutexGuard<'static, ()>,
}

impl Crashtrace {
    /// Starts crashtrace with `args` (plus `--json` unless `text` is set) and waits for
    /// its "attached" line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_mode(args, true, &[])
    }

    pub fn start_text(args: &[&str]) -> Self {
        Self::start_mode(args, false, &[])
    }

    /// Like `start`, with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_mode(args, true, env)
    }

    /// Like `start`, and then closes the reading end of crashtrace's stderr (as `2>&1 |
    /// head -1` does once head has its line).
    pub fn start_then_close_stderr(args: &[&str]) -> Self {
        Self::start_full(args, true, &[], true)
    }

    fn start_mode(args: &[&str], json: bool, env: &[(&str, &str)]) -> Self {
        Self::start_full(args, json, env, false)
    }

    fn start_full(args: &[&str], json: bool, env: &[(&str, &str)], close_stderr: bool) -> Self {
        require_root();
        let serial = serial();
        let mut cmd = Command::new(crashtrace_bin());
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting crashtrace");
        let out = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let stdout = child.stdout.take().unwrap();
        let o = out.clone();
        std::thread::spawn(move || {
            let schema = report_schema();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let (lock, cv) = &*o;
                let mut g = lock.lock().unwrap();
                if json {
                    match check_report(&schema, &line) {
                        Ok(v) => g.reports.push(v),
                        Err(e) => g.invalid.push(e),
                    }
                    g.json_lines.push(line);
                } else {
                    g.text.push_str(&line);
                    g.text.push('\n');
                }
                cv.notify_all();
            }
            let (lock, cv) = &*o;
            lock.lock().unwrap().exited = true;
            cv.notify_all();
        });
        let stderr = child.stderr.take().unwrap();
        let o = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[crashtrace] {line}");
                let attached = line.contains("attached");
                let (lock, cv) = &*o;
                lock.lock().unwrap().stderr.push(line);
                cv.notify_all();
                if close_stderr && attached {
                    break;
                }
            }
            let (lock, cv) = &*o;
            lock.lock().unwrap().stderr_closed = true;
            cv.notify_all();
        });
        let ct = Self {
            child,
            out,
            _serial: serial,
        };
        ct.wait_for(
            |o| o.stderr.iter().any(|l| l.contains("attached")) || o.exited,
            "the attached line",
        );
        let g = ct.out.0.lock().unwrap();
        assert!(
            g.stderr.iter().any(|l| l.contains("attached")),
            "crashtrace did not attach: {:?}",
            g.stderr
        );
        drop(g);
        ct
    }

    fn wait_for(&self, mut done: impl FnMut(&Output) -> bool, what: &str) {
        let (lock, cv) = &*self.out;
        let deadline = Instant::now() + *WAIT;
        let mut g = lock.lock().unwrap();
        loop {
            assert!(
                g.invalid.is_empty(),
                "crashtrace printed lines that are not valid reports: {:#?}",
                g.invalid
            );
            if done(&g) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {:?} waiting for {what}; reports for pids {:?}; stderr: {:?}",
                *WAIT,
                g.reports.iter().map(|r| r.pid).collect::<Vec<_>>(),
                g.stderr
            );
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    /// The first report that satisfies `pred`, waiting for it (bounded by `WAIT`); fails
    /// the test if crashtrace exits or the time runs out first. Every test waits for its
    /// reports through here.
    #[track_caller]
    pub fn report_where(&self, what: &str, pred: impl Fn(&CrashReport) -> bool) -> CrashReport {
        self.wait_for(|o| o.reports.iter().any(&pred) || o.exited, what);
        let g = self.out.0.lock().unwrap();
        g.reports
            .iter()
            .find(|r| pred(r))
            .cloned()
            .unwrap_or_else(|| panic!("crashtrace exited without {what}; stderr: {:?}", g.stderr))
    }

    /// The report for process `pid`.
    #[track_caller]
    pub fn report_for(&self, pid: u32) -> CrashReport {
        self.report_where(&format!("a report for pid {pid}"), |r| r.pid == pid)
    }

    /// All reports seen so far.
    pub fn reports(&self) -> Vec<CrashReport> {
        let g = self.out.0.lock().unwrap();
        assert!(g.invalid.is_empty(), "invalid reports: {:#?}", g.invalid);
        g.reports.clone()
    }

    /// All reports for `pid` seen so far.
    pub fn reports_for(&self, pid: u32) -> Vec<CrashReport> {
        let g = self.out.0.lock().unwrap();
        assert!(g.invalid.is_empty(), "invalid reports: {:#?}", g.invalid);
        g.reports.iter().filter(|r| r.pid == pid).cloned().collect()
    }

    /// Stops crashtrace (SIGINT, bounded) and returns all it said on stderr, including
    /// its closing summary.
    pub fn stop(mut self) -> Vec<String> {
        self.shutdown();
        self.wait_for(
            // Both streams closed: every report and status line has been read.
            |o| o.exited && o.stderr_closed,
            "crashtrace to exit",
        );
        self.stderr()
    }

    /// The first stderr line that satisfies `pred`, waiting for it (bounded).
    #[track_caller]
    pub fn stderr_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for(
            |o| o.stderr.iter().any(|l| pred(l)) || o.stderr_closed,
            what,
        );
        let g = self.out.0.lock().unwrap();
        g.stderr
            .iter()
            .find(|l| pred(l))
            .cloned()
            .unwrap_or_else(|| panic!("crashtrace never said {what}: {:?}", g.stderr))
    }

    /// Stops crashtrace and returns every report and stderr line it wrote.
    pub fn all_reports_when_stopped(self) -> (Vec<CrashReport>, Vec<String>) {
        let out = self.out.clone();
        let said = self.stop();
        let g = out.0.lock().unwrap();
        assert!(g.invalid.is_empty(), "invalid reports: {:#?}", g.invalid);
        (g.reports.clone(), said)
    }

    /// crashtrace's stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.out.0.lock().unwrap().stderr.clone()
    }

    /// Waits until crashtrace (started with -v) says it pinned a file whose path ends
    /// with `suffix`: from then on the file can be deleted or replaced.
    pub fn wait_pinned(&self, suffix: &str) {
        self.stderr_line(&format!("that it pinned {suffix}"), |l| {
            l.contains("pinned ")
                && l.split(" for pid")
                    .next()
                    .is_some_and(|p| p.ends_with(suffix))
        });
    }

    /// The JSON line crashtrace wrote for the first report that satisfies `pred`.
    pub fn json_line_where(&self, pred: impl Fn(&CrashReport) -> bool) -> Option<String> {
        let g = self.out.0.lock().unwrap();
        let i = g.reports.iter().position(pred)?;
        g.json_lines.get(i).cloned()
    }

    /// The whole text report of process `pid`, from its title line to its outcome's last
    /// line (text arrives a line at a time: a report is not whole when its title is).
    pub fn text_report_for(&self, pid: u32) -> String {
        let title = format!("in process {pid} (");
        let whole = |t: &str| {
            t.find(&title)
                .is_some_and(|i| t[i..].contains("\n  page faults:"))
        };
        self.wait_for(
            |o| whole(&o.text),
            &format!("the whole text report of {pid}"),
        );
        let t = self.out.0.lock().unwrap().text.clone();
        let at = t.find(&title).unwrap();
        let start = t[..at].rfind('\n').map_or(0, |i| i + 1);
        let rest = &t[start..];
        let end = rest[1..]
            .find("\n=== crashtrace")
            .map_or(rest.len(), |i| i + 2);
        rest[..end].to_string()
    }

    /// Text output seen so far, waiting until it mentions `needle`.
    pub fn text_containing(&self, needle: &str) -> String {
        self.wait_for(|o| o.text.contains(needle) || o.exited, needle);
        self.out.0.lock().unwrap().text.clone()
    }
}

impl Drop for Crashtrace {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A directory `nobody` can read and enter (and, with `writable`, own), removed on drop.
pub struct Shared(pub PathBuf);

impl Shared {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("crashtrace-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(p)
    }

    /// A directory owned by nobody, for what the attacker writes.
    pub fn writable(tag: &str) -> Self {
        let d = Self::new(tag);
        let st = Command::new("chown")
            .arg("nobody")
            .arg(&d.0)
            .status()
            .unwrap();
        assert!(st.success(), "chown nobody");
        d
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cmd` run as the unprivileged user nobody.
pub fn as_nobody(program: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "nobody", "--", program]);
    c
}

impl Crashtrace {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops crashtrace (SIGINT) and returns how it exited.
    pub fn stop_status(mut self) -> std::process::ExitStatus {
        self.shutdown();
        self.child.wait().expect("reaping crashtrace")
    }

    /// Whether crashtrace is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops crashtrace with SIGINT and says whether it exited on its own, within the
    /// bound, rather than having to be killed.
    pub fn stop_on_request(mut self) -> bool {
        let on_its_own = self.shutdown();
        self.wait_for(|o| o.exited && o.stderr_closed, "crashtrace to exit");
        on_its_own
    }

    /// SIGINT, then SIGKILL after 5 s; true if it exited before the SIGKILL.
    fn shutdown(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

/// A victim process; killed and reaped on drop if still alive.
pub struct Victim {
    pub child: Child,
    stdin: Option<ChildStdin>,
}

impl Victim {
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        Self { child, stdin }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the victim's "ready" line.
    pub fn wait_ready(&mut self) {
        let stdout = self.child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(*WAIT).expect("victim never said ready");
        assert_eq!(line.trim(), "ready");
    }

    /// The victim's stdout, a line at a time, each wait bounded by `WAIT`.
    pub fn lines(&mut self) -> Lines {
        let stdout = self.child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// Tells a waiting victim to crash now.
    pub fn trigger(&mut self) {
        self.stdin
            .take()
            .expect("stdin")
            .write_all(b"x")
            .expect("trigger");
    }

    /// Waits for exit, bounded by `WAIT`.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + *WAIT;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "victim {} did not exit",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for exit (bounded) and returns the terminating signal.
    pub fn wait_signal(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt as _;
        self.wait_exit().signal()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub struct Lines(std::sync::mpsc::Receiver<String>);

impl Lines {
    #[track_caller]
    pub fn next_line(&self, what: &str) -> String {
        self.0
            .recv_timeout(*WAIT)
            .unwrap_or_else(|e| panic!("no {what} from the victim within {:?}: {e}", *WAIT))
    }

    /// A line that holds a process id.
    #[track_caller]
    pub fn next_pid(&self, what: &str) -> u32 {
        let l = self.next_line(what);
        l.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{what}: not a pid: {l:?}"))
    }
}

/// Function names of a report's frames, in order (None where a frame has no name).
pub fn function_names(report: &CrashReport) -> Vec<String> {
    names_of(&report.frames)
}

/// Function names of frames, in order ("??" where a frame has no name).
pub fn names_of(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f.function.clone().unwrap_or_else(|| "??".into()))
        .collect()
}

/// Asserts that `expected` appear in `names` in this order (others may sit between).
/// An entry `a|b` accepts either name (exported alias or the debug file's internal name).
#[track_caller]
pub fn assert_in_order(names: &[String], expected: &[&str]) {
    let mut it = names.iter();
    for want in expected {
        assert!(
            it.any(|n| want.split('|').any(|w| n == w)),
            "expected {expected:?} in this order among the frames, missing {want:?} after the previous ones; frames: {names:#?}"
        );
    }
}

/// Runs `cmd` to a crash under an attached crashtrace and returns its report.
pub fn crash_and_report(ct: &Crashtrace, cmd: &mut Command, expect_signal: i32) -> CrashReport {
    let mut v = Victim::spawn(cmd);
    let pid = v.pid();
    assert_eq!(
        v.wait_signal(),
        Some(expect_signal),
        "victim did not die of signal {expect_signal}"
    );
    let r = ct.report_for(pid);
    eprintln!(
        "pid {pid}: {} frames, reported {:.2} ms after the signal",
        r.frames.len(),
        r.latency_ms
    );
    r
}

/// A memory cgroup with a limit, under this process's own (cgroup v1 or v2); removed on
/// drop.
pub struct MemoryCgroup {
    pub path: PathBuf,
}

impl MemoryCgroup {
    /// None where the machine has no memory controller to delegate from.
    pub fn new(name: &str, limit_bytes: u64) -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
        // cgroup v1: "4:memory:/some/path"; v2: "0::/some/path".
        let (base, rel, v1) = if let Some(l) = own.lines().find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        }) {
            let mnt = mounts
                .lines()
                .find(|m| {
                    m.contains(" cgroup ")
                        && m.split(' ')
                            .nth(3)
                            .is_some_and(|o| o.split(',').any(|o| o == "memory"))
                })?
                .split(' ')
                .nth(1)?
                .to_string();
            (mnt, l.splitn(3, ':').nth(2)?.to_string(), true)
        } else {
            let mnt = mounts
                .lines()
                .find(|m| m.contains(" cgroup2 "))?
                .split(' ')
                .nth(1)?
                .to_string();
            let l = own.lines().find(|l| l.starts_with("0::"))?;
            (mnt, l[3..].to_string(), false)
        };
        let path = Path::new(&base)
            .join(rel.trim_start_matches('/'))
            .join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).ok()?;
        let write = |f: &str, v: String| std::fs::write(path.join(f), v);
        let limited = if v1 {
            write("memory.limit_in_bytes", limit_bytes.to_string()).is_ok()
        } else {
            write("memory.max", limit_bytes.to_string()).is_ok()
                && write("memory.swap.max", "0".into()).is_ok()
        };
        if !limited {
            let _ = std::fs::remove_dir(&path);
            return None;
        }
        Some(Self { path })
    }

    /// `sh -c` prefix that moves the shell into the cgroup before exec'ing the command.
    pub fn enter_and_exec(&self, command: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!(
            "echo $$ > {}/cgroup.procs && exec {command}",
            self.path.display()
        ));
        c
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Its processes are gone by now; retry briefly while the kernel finishes with them.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A cgroup v2 group under this process's own (`name` may be a nested path, as container
/// runtimes lay theirs out), removed on drop with every level made for it; None without
/// cgroup2.
pub struct Cgroup2 {
    pub path: PathBuf,
    made: Vec<PathBuf>,
}

impl Cgroup2 {
    pub fn new(name: &str) -> Option<Self> {
        let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
        let mnt = mounts
            .lines()
            .find(|m| m.split(' ').nth(2) == Some("cgroup2"))?
            .split(' ')
            .nth(1)?
            .to_string();
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
        let mut path = Path::new(&mnt).join(rel.trim_start_matches('/'));
        let mut made = Vec::new();
        for part in name.split('/') {
            path.push(part);
            if !path.exists() {
                std::fs::create_dir(&path).ok()?;
                made.push(path.clone());
            }
        }
        Some(Self { path, made })
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

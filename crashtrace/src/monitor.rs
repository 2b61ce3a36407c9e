//! The data path: ring buffer → decode → pair handler re-raises → wait for the exit,
//! collecting the other threads → mappings → unwind → symbolize → report. One thread; the
//! ring buffer holds what arrives meanwhile.

use std::{collections::HashMap, io::Write, time::Duration};

use anyhow::{Context as _, Result};
use crashtrace_common::{Config, FaultMaps, OomVictim, ProcessExit, Stat};
use tokio::io::unix::AsyncFd;

use crate::{
    analyze::{Analyzer, CrashInput},
    cli::Args,
    events::{Capture, Event, decode},
    kernel_btf,
    loader::{Probes, explain},
    modules::FilePins,
    perf::{Lifecycle, MappingStream},
    procmaps::ProcessTable,
    report::{CrashReport, text},
    symbolize::Symbolizer,
};

/// Captures taken while a handler was installed wait this long for the process to die
/// of the same signal; if it does not, the handler recovered and nothing is reported.
const HANDLED_WAIT_NS: u64 = 10_000_000_000;
/// How long a crash waits for its process's exit (a core dump delays it) before it is
/// reported without the outcome.
const EXIT_WAIT_NS: u64 = 10_000_000_000;
/// Per-CPU buffer for mapping records: bursts of execs must fit between two drains.
const MAPPING_RING_BYTES: usize = 4 << 20;
/// How often the tables of exited processes and stale captures are pruned.
const HOUSEKEEPING_NS: u64 = 200_000_000;

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The analyzer, with debuginfod when asked for: its cache is one more debug directory.
fn make_analyzer(args: &Args) -> Analyzer {
    let mut dirs = args.debug_dirs.clone();
    let debuginfod = if args.debuginfod {
        let cache = std::env::var_os("CRASHTRACE_CACHE_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                std::path::PathBuf::from(home).join(".cache/crashtrace")
            })
            .join("debuginfod");
        let d = crate::debuginfod::Debuginfod::new(
            args.debuginfod_url.as_deref().unwrap_or(""),
            cache,
            Duration::from_secs_f64(args.debuginfod_timeout.max(0.0)),
        );
        if d.is_none() {
            eprintln!("crashtrace: --debuginfod given but no server URL (DEBUGINFOD_URLS)");
        }
        d
    } else {
        None
    };
    if let Some(d) = &debuginfod {
        dirs.push(d.cache_dir().to_path_buf());
    }
    let analyzer = Analyzer::new(Symbolizer::new(&dirs));
    match debuginfod {
        Some(d) => analyzer.with_debuginfod(d),
        None => analyzer,
    }
}

/// File pins need descriptors: take the hard limit, as perf and debuggers do.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

pub fn build_config(args: &Args) -> Result<Config> {
    let btf = kernel_btf::load_vmlinux()?;
    let mut cfg = Config::empty();
    cfg.signal_mask = args.signals.0;
    cfg.kill_mask = args.kills.0;
    cfg.self_pid = std::process::id();
    cfg.stack_bytes = args.stack_size;
    cfg.pid_count = args.pids.len() as u32;
    for (slot, pid) in cfg.pids.iter_mut().zip(&args.pids) {
        *slot = *pid;
    }
    cfg.comm_count = args.comms.len() as u32;
    for (slot, c) in cfg.comms.iter_mut().zip(&args.comms) {
        *slot = c.to_pattern();
    }
    cfg.offsets = kernel_btf::kernel_offsets(&btf)?;
    Ok(cfg)
}

/// A crash waiting for its process's exit, collecting the other threads meanwhile.
struct Pending {
    /// The capture whose stack leads the report (the original fault if a handler ran).
    subject: Capture,
    /// The fatal re-raise, when `subject` went through a handler.
    reraise: Option<Capture>,
    threads: Vec<Capture>,
    /// Report anyway at this time (CLOCK_MONOTONIC ns) if the exit never shows up.
    deadline_ns: u64,
}

struct Pipeline<W: Write> {
    table: ProcessTable,
    pins: FilePins,
    cgroups: crate::cgroups::CgroupNames,
    stream: MappingStream,
    analyzer: Analyzer,
    /// Captures taken under a handler, by thread id, waiting for a fatal re-raise.
    handled: HashMap<u32, Capture>,
    /// Crashes by process id, until the process has exited.
    pending: HashMap<u32, Pending>,
    /// The kernel's mappings around each captured fault, by thread id.
    fault_maps: HashMap<u32, FaultMaps>,
    /// OOM killer victims, by process id, until their report.
    oom: HashMap<u32, OomVictim>,
    json: bool,
    out: W,
    /// Run mode: only this process and its descendants are reported.
    scope: Option<u32>,
    /// Python processes known to the eBPF program, and what it sent at crashes.
    pyprocs: crate::loader::PyProcs,
    pyfiles: crate::loader::PyFiles,
    /// The keys of `pyprocs`, so that forks and exits of other processes cost no syscall.
    py_pids: std::collections::HashSet<u32>,
    python: HashMap<u32, crate::python::PyCrash>,
    /// When the tables were last pruned.
    housekept_ns: u64,
}

impl<W: Write> Pipeline<W> {
    /// Crashes still waiting for their process's exit within the run-mode scope.
    fn pending_in_scope(&self) -> bool {
        match self.scope {
            Some(root) => self
                .pending
                .keys()
                .any(|pid| self.table.is_descendant(*pid, root)),
            None => !self.pending.is_empty(),
        }
    }

    fn on_record(&mut self, buf: &[u8]) {
        match decode(buf) {
            Ok(Event::Signal(c)) => self.on_signal(*c),
            Ok(Event::Thread(c)) => self.on_thread(*c),
            Ok(Event::Exit(e)) => self.on_exit(e),
            Ok(Event::Oom(o)) => {
                log::debug!("OOM victim {}", o.header.pid);
                self.oom.insert(o.header.pid, o);
            }
            Ok(Event::PyThread(t)) => self.python.entry(t.header.pid).or_default().add_thread(*t),
            Ok(Event::PyCode(c)) => self.python.entry(c.header.pid).or_default().add_code(*c),
            Ok(Event::FaultMaps(m)) => {
                log::debug!("fault mapping of {}: {:x?}", m.header.tid, m.fault);
                self.fault_maps.insert(m.header.tid, m);
            }
            Err(e) => eprintln!("crashtrace: dropped an undecodable record: {e:#}"),
        }
    }

    fn on_signal(&mut self, c: Capture) {
        log::debug!(
            "signal {} to {}/{} code {} default {}",
            c.signo,
            c.pid,
            c.tid,
            c.si_code,
            c.default_action
        );
        if !c.default_action {
            // A handler will run: maybe it recovers, maybe it re-raises. Keep the
            // original fault's context until we know.
            self.handled.insert(c.tid, c);
            return;
        }
        if let Some(p) = self.pending.get_mut(&c.pid) {
            // A second thread died of a fatal signal before the exit: keep it as a thread.
            p.threads.push(c);
            return;
        }
        // The default action kills the process. Was this a handler's re-raise?
        let (subject, reraise) = match self.take_original(&c) {
            Some(original) => (original, Some(c)),
            None => (c, None),
        };
        let pid = subject.pid;
        self.pending.insert(
            pid,
            Pending {
                subject,
                reraise,
                threads: Vec::new(),
                deadline_ns: monotonic_ns() + EXIT_WAIT_NS,
            },
        );
    }

    fn on_thread(&mut self, c: Capture) {
        log::debug!("thread {}/{} at the group exit", c.pid, c.tid);
        match self.pending.get_mut(&c.pid) {
            Some(p) => p.threads.push(c),
            None => eprintln!(
                "crashtrace: thread {} of process {} captured without its crash record",
                c.tid, c.pid
            ),
        }
    }

    fn on_exit(&mut self, e: ProcessExit) {
        log::debug!("exit of {} status {:#x}", e.header.pid, e.exit_code);
        match self.pending.remove(&e.header.pid) {
            Some(p) => self.report(p, Some(&e)),
            None => {
                // The process was followed to its exit, so its fatal capture was taken but
                // lost on the way (ring buffer full). Say so rather than nothing.
                let outcome = crate::analyze::outcome(&e);
                eprintln!(
                    "crashtrace: process {} {} but its capture was lost (ring buffer full; \
                     raise --ring-buffer-size)",
                    e.header.pid, outcome.status
                );
            }
        }
    }

    /// Applies pending mapping records; keeps the eBPF program's list of Python processes
    /// current.
    fn drain(&mut self) {
        let d = self.stream.drain_into(&mut self.table, &mut self.pins);
        // Lifecycle first: within one drain an exec precedes the new image's mappings.
        for e in d.events {
            match e {
                Lifecycle::Exec(pid) | Lifecycle::Exit(pid) => {
                    if self.py_pids.remove(&pid) {
                        let _ = self.pyprocs.remove(&pid);
                    }
                }
                Lifecycle::Fork(child, parent) => {
                    if self.py_pids.contains(&parent)
                        && let Ok(p) = self.pyprocs.get(&parent, 0)
                        && self.pyprocs.insert(child, p, 0).is_ok()
                    {
                        self.py_pids.insert(child);
                    }
                }
            }
        }
        for (pid, m) in d.mmaps {
            self.python_mapping(pid, &m);
        }
    }

    /// Non-PIE interpreters installed on the machine (Debian's /usr/bin/python3.x): known
    /// by inode before any of them runs, so even one that crashes within milliseconds of
    /// its start is read.
    fn known_interpreters(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let name = path.to_string_lossy().into_owned();
                let Some(version) = crate::python::runtime::version_from_name(&name) else {
                    continue;
                };
                let Ok(md) = std::fs::metadata(&path) else {
                    continue;
                };
                let Ok(module) = crate::modules::ElfModule::open(&path) else {
                    continue;
                };
                if crate::python::runtime::fixed_address(&module)
                    && let Some(p) = crate::python::runtime::proc_for(&module, version, 0)
                {
                    log::info!("python {version:?} at {name} (inode {})", md.ino());
                    let _ = self.pyfiles.insert(md.ino(), p, 0);
                }
            }
        }
    }

    /// A new mapping of an interpreter: tell the eBPF program where its runtime is.
    fn python_mapping(&mut self, pid: u32, m: &crate::procmaps::Mapping) {
        use crate::python::runtime;
        let Some(version) = runtime::version_from_name(&m.path) else {
            return;
        };
        let Some(offsets) = runtime::offsets(version) else {
            log::info!(
                "{} of pid {pid}: CPython {version:?} is not supported",
                m.path
            );
            return;
        };
        let _ = offsets;
        let Ok(module) = self.analyzer.module(m, &self.pins) else {
            return;
        };
        let Some(proc_) = module
            .bias(m)
            .and_then(|bias| runtime::proc_for(&module, version, bias))
        else {
            return;
        };
        if runtime::fixed_address(&module) {
            let _ = self.pyfiles.insert(m.inode, proc_, 0);
        }
        log::info!(
            "python {version:?} in pid {pid}: runtime at 0x{:x}",
            proc_.runtime
        );
        match self.pyprocs.insert(pid, proc_, 0) {
            Ok(()) => {
                self.py_pids.insert(pid);
            }
            Err(e) => log::warn!("cannot track Python process {pid}: {e}"),
        }
    }

    fn report(&mut self, p: Pending, exit: Option<&ProcessExit>) {
        // Mapping records written before the crash may still sit in the perf buffers.
        self.drain();
        let s = &p.subject;
        if let Some(root) = self.scope
            && !self.table.is_descendant(s.pid, root)
        {
            // Run mode: another process on the machine; not what was asked about.
            return;
        }
        let maps = self.table.mappings_at(s.pid, s.ktime_ns);
        let exe = self.table.exe_at(s.pid, s.ktime_ns);
        // The fault maps follow their capture; a newer capture of the thread replaces them.
        let fault_maps = self
            .fault_maps
            .remove(&s.tid)
            .filter(|m| m.header.ktime_ns >= s.ktime_ns);
        let oom = self
            .oom
            .remove(&s.pid)
            .filter(|o| s.signo == libc::SIGKILL && o.header.ktime_ns <= s.ktime_ns);
        let python = self.python.remove(&s.pid);
        let mut report = self.analyzer.analyze(&CrashInput {
            capture: s,
            reraise: p.reraise.as_ref(),
            threads: &p.threads,
            exit,
            mappings: &maps,
            executable: exe.as_deref(),
            fault_maps: fault_maps.as_ref(),
            oom: oom.as_ref(),
            pins: &self.pins,
            cgroup: self.cgroups.path(s.cgroup_id),
            python: python.as_ref(),
        });
        // From the fatal signal reaching the thread to the report leaving crashtrace.
        let fatal = p.reraise.as_ref().unwrap_or(s);
        report.latency_ms = monotonic_ns().saturating_sub(fatal.ktime_ns) as f64 / 1e6;
        self.emit(&report);
    }

    fn take_original(&mut self, fatal: &Capture) -> Option<Capture> {
        // Handlers re-raise from the faulting thread (raise, tgkill) or to the process.
        let same_thread = self
            .handled
            .get(&fatal.tid)
            .is_some_and(|o| o.signo == fatal.signo);
        let key = if same_thread {
            Some(fatal.tid)
        } else {
            self.handled
                .iter()
                .find(|(_, o)| o.pid == fatal.pid && o.signo == fatal.signo)
                .map(|(k, _)| *k)
        }?;
        let o = self.handled.remove(&key)?;
        (fatal.si_code <= 0 && fatal.ktime_ns.saturating_sub(o.ktime_ns) < HANDLED_WAIT_NS)
            .then_some(o)
    }

    fn emit(&mut self, report: &CrashReport) {
        let text = if self.json {
            report.to_json_line() + "\n"
        } else {
            text::render(report) + "\n"
        };
        // A closed stdout (crashtrace | head) ends the run; anything else is reported.
        if let Err(e) = self
            .out
            .write_all(text.as_bytes())
            .and_then(|_| self.out.flush())
        {
            eprintln!("crashtrace: cannot write the report: {e}");
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }

    fn tick(&mut self) {
        self.drain();
        let now = monotonic_ns();
        self.report_overdue(now);
        // Expiry walks every known process: far less often than the drains, which must
        // keep up with short-lived processes.
        if now.saturating_sub(self.housekept_ns) < HOUSEKEEPING_NS {
            return;
        }
        self.housekept_ns = now;
        self.table.expire(now);
        self.handled
            .retain(|_, c| now.saturating_sub(c.ktime_ns) < HANDLED_WAIT_NS);
        self.python
            .retain(|_, c| now.saturating_sub(c.ktime_ns) < HANDLED_WAIT_NS + EXIT_WAIT_NS);
        self.oom
            .retain(|_, o| now.saturating_sub(o.header.ktime_ns) < HANDLED_WAIT_NS + EXIT_WAIT_NS);
        self.fault_maps
            .retain(|_, m| now.saturating_sub(m.header.ktime_ns) < HANDLED_WAIT_NS + EXIT_WAIT_NS);
    }

    fn report_overdue(&mut self, now: u64) {
        let overdue: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_ns <= now)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in overdue {
            if let Some(p) = self.pending.remove(&pid) {
                self.report(p, None);
            }
        }
    }
}

/// How the command of run mode ended, from wait4().
struct Finished {
    status: i32,
    usage: libc::rusage,
    wall: Duration,
}

/// Starts the command of run mode and waits for it on a thread of its own.
fn spawn_command(command: &[String]) -> Result<(u32, tokio::sync::oneshot::Receiver<Finished>)> {
    let start = std::time::Instant::now();
    let child = std::process::Command::new(&command[0])
        .args(&command[1..])
        .spawn()
        .with_context(|| format!("cannot run {}", command[0]))?;
    let pid = child.id();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: zeroed rusage is valid; wait4 on our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
        let _ = tx.send(Finished {
            status,
            usage,
            wall: start.elapsed(),
        });
        drop(child);
    });
    Ok((pid, rx))
}

/// `/usr/bin/time -v`'s summary of the command, and the exit code a shell would give.
fn summarize(command: &[String], f: &Finished) -> (String, i32) {
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let st = f.status;
    let (how, code) = if libc::WIFSIGNALED(st) {
        let sig = libc::WTERMSIG(st);
        (
            format!(
                "was killed by {}{}",
                crate::signals::signal_name(sig),
                if libc::WCOREDUMP(st) {
                    " (core dumped)"
                } else {
                    ""
                }
            ),
            128 + sig,
        )
    } else {
        let c = libc::WEXITSTATUS(st);
        (format!("exited with status {c}"), c)
    };
    let w = f.wall.as_secs_f64();
    let u = &f.usage;
    let text = format!(
        "crashtrace: command {how}\n\
         \tCommand being timed: \"{}\"\n\
         \tUser time (seconds): {:.2}\n\
         \tSystem time (seconds): {:.2}\n\
         \tElapsed (wall clock) time (h:mm:ss or m:ss): {}:{:05.2}\n\
         \tMaximum resident set size (kbytes): {}\n\
         \tMajor (requiring I/O) page faults: {}\n\
         \tMinor (reclaiming a frame) page faults: {}\n\
         \tVoluntary context switches: {}\n\
         \tInvoluntary context switches: {}\n\
         \tExit status: {code}",
        command.join(" "),
        tv(u.ru_utime),
        tv(u.ru_stime),
        (w / 60.0) as u64,
        w % 60.0,
        u.ru_maxrss,
        u.ru_majflt,
        u.ru_minflt,
        u.ru_nvcsw,
        u.ru_nivcsw,
    );
    (text, code)
}

/// Runs until SIGINT/SIGTERM, or in run mode until the command has ended. Reports go to
/// `out`; status lines to stderr. Returns the exit code for crashtrace.
pub async fn run<W: Write>(args: Args, out: W) -> Result<i32> {
    let config = build_config(&args)?;
    // The mapping stream starts before the /proc scan so nothing falls between the two.
    let mut stream = MappingStream::open(MAPPING_RING_BYTES)
        .map_err(|e| explain(e, "opening the kernel's mapping records (perf_event_open)"))?;
    raise_fd_limit();
    let mut table = ProcessTable::new();
    let mut pins = FilePins::new();
    table.scan_proc(&mut pins);
    stream.drain_into(&mut table, &mut pins);
    // Held for the whole run: the kernel counts program run time only while it is open.
    let _stats_fd = if args.bpf_stats {
        Some(
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .map_err(|e| anyhow::anyhow!("enabling BPF run-time statistics: {e}"))?,
        )
    } else {
        None
    };
    let (probes, events, pyprocs, pyfiles) = Probes::load(&config, args.ring_buffer_size)?;
    // SAFETY: the ring buffer owns its fd and the AsyncFd owns the ring buffer until the end.
    let mut ring = unsafe { AsyncFd::register(events) }.context("registering the ring buffer")?;

    let mut pipeline = Pipeline {
        table,
        pins,
        cgroups: crate::cgroups::CgroupNames::new(),
        stream,
        analyzer: make_analyzer(&args),
        handled: HashMap::new(),
        pending: HashMap::new(),
        fault_maps: HashMap::new(),
        oom: HashMap::new(),
        json: args.json,
        out,
        scope: None,
        pyprocs,
        pyfiles,
        py_pids: Default::default(),
        python: HashMap::new(),
        housekept_ns: 0,
    };
    pipeline.known_interpreters();
    // Python processes that were running before crashtrace.
    for (pid, maps) in pipeline.table.processes() {
        for m in maps.iter().filter(|m| m.is_file()) {
            pipeline.python_mapping(pid, m);
        }
    }
    eprintln!(
        "crashtrace: attached; watching {} for {} ({} processes known). Ctrl-C to stop.",
        describe_filters(&args),
        args.signals.names().join(" "),
        pipeline.table.process_count()
    );

    // Run mode: the command starts only once everything is attached.
    let mut finished = None;
    let mut done_rx = if args.command.is_empty() {
        None
    } else {
        let (pid, rx) = spawn_command(&args.command)?;
        pipeline.scope = Some(pid);
        Some(rx)
    };
    let mut drain_deadline: Option<tokio::time::Instant> = None;

    // Mapping records are drained (files pinned, Python runtimes registered) this often:
    // a process that lives longer than this has them before it can crash. A Python
    // interpreter takes more than 10 ms to start running a script.
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut lost_reported = (0u64, 0u64);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    pipeline.on_record(&item);
                }
                guard.clear_ready();
            }
            _ = tick.tick() => {
                pipeline.tick();
                if let Some(deadline) = drain_deadline
                    && (!pipeline.pending_in_scope() || tokio::time::Instant::now() >= deadline)
                {
                    break;
                }
            }
            Ok(f) = async { done_rx.as_mut().unwrap().await }, if done_rx.is_some() && finished.is_none() => {
                // Reports of the command's crashes may still be on their way: give them
                // until their processes' exits are in, within a bound.
                finished = Some(f);
                drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3));
            }
            _ = stats_tick.tick() => {
                let ring_full = probes.stat(Stat::RingFull);
                if ring_full > lost_reported.0 {
                    eprintln!(
                        "crashtrace: {} captures lost because the ring buffer was full \
                         ({} in total; raise --ring-buffer-size)",
                        ring_full - lost_reported.0, ring_full
                    );
                }
                let maps_lost = pipeline.stream.lost;
                if maps_lost > lost_reported.1 {
                    eprintln!(
                        "crashtrace: {} mapping records lost ({} in total): frames of processes \
                         started then may be unnamed",
                        maps_lost - lost_reported.1, maps_lost
                    );
                }
                lost_reported = (ring_full, maps_lost);
            }
            // In run mode Ctrl-C reaches the command too: wait for it to end.
            _ = tokio::signal::ctrl_c(), if done_rx.is_none() => break,
            _ = sigterm.recv() => {
                match pipeline.scope {
                    // SAFETY: signalling our own child.
                    Some(pid) if finished.is_none() => unsafe {
                        libc::kill(pid as i32, libc::SIGTERM);
                    },
                    _ => break,
                }
            }
        }
    }
    eprintln!(
        "crashtrace: detached; {} signals matched, {} captured, {} other threads captured, \
         {} lost (ring buffer full)",
        probes.stat(Stat::Matched),
        probes.stat(Stat::Captured),
        probes.stat(Stat::ThreadsCaptured),
        probes.stat(Stat::RingFull)
    );
    if args.bpf_stats {
        for (name, runs, time) in probes.program_stats() {
            let mean = if runs > 0 {
                time.as_nanos() as f64 / runs as f64
            } else {
                0.0
            };
            eprintln!(
                "crashtrace: program {name}: {runs} runs, {} ns in all, {mean:.0} ns per run",
                time.as_nanos()
            );
        }
    }
    Ok(match finished {
        Some(f) => {
            let (text, code) = summarize(&args.command, &f);
            eprintln!("{text}");
            code
        }
        None => 0,
    })
}

fn describe_filters(args: &Args) -> String {
    let mut parts = Vec::new();
    if !args.pids.is_empty() {
        let pids: Vec<String> = args.pids.iter().map(|p| p.to_string()).collect();
        parts.push(format!("pid {}", pids.join(",")));
    }
    if !args.comms.is_empty() {
        let names: Vec<String> = args
            .comms
            .iter()
            .map(|c| {
                if c.exact {
                    format!("={}", c.name)
                } else {
                    format!("{}*", c.name)
                }
            })
            .collect();
        parts.push(format!("processes named {}", names.join(",")));
    }
    if parts.is_empty() {
        "all processes".into()
    } else {
        parts.join(" and ")
    }
}

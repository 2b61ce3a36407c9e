//! The event loop: the only place that waits. Ring-buffer records go through assembly;
//! mapping records keep the process table and file pins current and feed the Python
//! registration thread; each finished crash goes to the analysis thread (`workers`),
//! which takes it down the data path (`analyze`) and to the sinks. The loop itself never
//! parses a file or waits for output: the buffers are drained whatever the workers do.

mod budget;
pub mod runmode;
pub mod setup;
mod summary;
pub mod workers;

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use crashtrace_common::Stat;
use tokio::io::unix::AsyncFd;

use crate::{
    assemble::{Assembled, Assembler, EXIT_WAIT_NS, EnvAllow},
    capture::{
        loader::{Probes, explain},
        perf::MappingStream,
        pins::FilePins,
        processes::ProcessTable,
        records::{Event, decode},
    },
    cli::Args,
    metrics::{self, LoopState, Metrics},
    python::{registry::PythonRegistry, runtime::version_from_name},
    report::{attribution::FailureLedger, gpu::xids_for},
    sinks::{self, QUEUE_REPORTS, Sinks},
    symbolize::libc::{AbortMessages, is_glibc},
    sys::{cgroups::CgroupNames, kmsg::Kmsg, notify::Notifier, wait},
};
use runmode::{spawn_command, summarize};
use setup::{
    build_config, install_stop_handlers, make_symbolizer, raise_fd_limit, take_stop_request,
};
use workers::{Analysis, Job, Registrar, Registration};

/// Exec wakeups drained between two ticks at most (see the loop).
const WAKES_PER_TICK: u32 = 32;
/// How often the process table drops processes that exited long enough ago.
const HOUSEKEEPING_NS: u64 = 200_000_000;
/// At a stop: how long crashes may wait for their process's exit, and how long the
/// analysis of what is queued may take, before crashtrace exits.
const STOP_EXIT_WAIT: Duration = Duration::from_secs(2);
const STOP_FLUSH: Duration = Duration::from_secs(20);
/// Run mode: beyond the exit wait, time for the tick that reports an overdue crash.
const TICK_SLACK: Duration = Duration::from_secs(1);
/// Per-CPU buffer for mapping records: bursts of execs must fit between two drains.
const MAPPING_RING_BYTES: usize = 4 << 20;

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// glibc files registered at most (the kernel map's size).
const MAX_LIBC_FILES: usize = 256;

/// The state the loop keeps between events.
struct Pipeline {
    table: ProcessTable,
    pins: FilePins,
    cgroups: CgroupNames,
    stream: MappingStream,
    assembler: Assembler,
    analysis: Analysis,
    registrar: Registrar,
    /// Run mode: only this process and its descendants are reported.
    scope: Option<u32>,
    /// When the process table was last pruned.
    housekept_ns: u64,
    /// Recent failures by job: a rank killed after another's fault names it.
    failures: FailureLedger,
    /// The kernel log, for the GPU driver's Xid lines.
    kmsg: Kmsg,
    /// glibc files already handed to the registration thread.
    libc_inodes: std::collections::HashSet<crate::capture::pins::FileKey>,
}

impl Pipeline {
    /// Crashes still waiting for their process's exit within the run-mode scope.
    fn pending_in_scope(&self) -> bool {
        let mut pids = self.assembler.pending_pids();
        match self.scope {
            Some(root) => pids.any(|pid| self.table.is_descendant(pid, root)),
            None => pids.next().is_some(),
        }
    }

    fn on_record(&mut self, buf: &[u8]) {
        match decode(buf) {
            Ok(event) => {
                if let Event::Signal(c) = &event {
                    // The process may be gone within microseconds: take what is still
                    // to be had of its files now, before anything else.
                    self.drain();
                    self.pin_process(c.pid, c.ktime_ns);
                    self.registrar.send(Registration::Captured(c.pid));
                }
                if let Some(a) = self.assembler.push(event, monotonic_ns()) {
                    self.on_assembled(a);
                }
            }
            Err(e) => say!("crashtrace: dropped an undecodable record: {e:#}"),
        }
    }

    fn on_assembled(&mut self, a: Assembled) {
        match a {
            Assembled::Crash(crash) => self.report(*crash),
            Assembled::CaptureLost(e) => say!(
                "crashtrace: process {} {} but its capture was lost (ring buffer full; \
                 raise --ring-buffer-size)",
                e.header.pid,
                wait::decode(e.exit_code as i32).words
            ),
            Assembled::OrphanThread { pid, tid } => {
                say!("crashtrace: thread {tid} of process {pid} captured without its crash record")
            }
            Assembled::Recovered { pid, tid, signo } => {
                log::debug!("{pid}/{tid}: the handler of signal {signo} recovered")
            }
        }
    }

    /// Applies pending mapping records; keeps the Python registry current.
    fn drain(&mut self) {
        let d = self.stream.drain_into(&mut self.table, &mut self.pins);
        // Lifecycle first: within one drain an exec precedes the new image's mappings.
        if !d.events.is_empty() {
            self.registrar.send(Registration::Lifecycles(d.events));
        }
        for (pid, m) in d.mmaps {
            self.register_mapping(pid, m);
        }
    }

    /// Hands a mapping of a file named like an interpreter or glibc to the registration
    /// thread.
    fn register_mapping(&mut self, pid: u32, m: crate::sys::procfs::Mapping) {
        // Each glibc file once: every process maps one.
        let new_libc = is_glibc(&m.path)
            && self.libc_inodes.len() < MAX_LIBC_FILES
            && self.libc_inodes.insert((m.dev_major, m.dev_minor, m.inode));
        if version_from_name(&m.path).is_some() || new_libc {
            let pinned = self.pins.get(&m);
            self.registrar.send(Registration::Mapping(pid, m, pinned));
        }
    }

    /// Pins every file process `pid` maps at `time_ns` that is not pinned yet (its
    /// mapping record may have come after the process had already run to its crash).
    fn pin_process(&mut self, pid: u32, time_ns: u64) {
        for m in self.table.mappings_at(pid, time_ns) {
            if m.is_file() && !self.pins.has(&m) {
                self.pins.pin(pid, &m);
            }
        }
    }

    /// For each file of the crashed process that is neither pinned nor at its path any
    /// more, a live process that maps a file with the same build ID: pinned through it.
    fn pin_through_others(&mut self, pid: u32, maps: &[crate::sys::procfs::Mapping]) {
        for m in maps {
            let Some(id) = m.build_id else { continue };
            if !m.is_file() || self.pins.has(m) {
                continue;
            }
            if self.pins.by_build_id(&id).is_some() {
                continue;
            }
            if let Some((other, om)) = self.table.live_with_build_id(&id, pid) {
                self.pins.pin(other, &om);
                self.pins.index(&om, id);
            }
        }
    }

    fn report(&mut self, crash: crate::assemble::Crash) {
        // Mapping records written before the crash may still sit in the perf buffers.
        self.drain();
        let s = &crash.subject;
        if let Some(root) = self.scope
            && !self.table.is_descendant(s.pid, root)
        {
            // Run mode: another process on the machine; not what was asked about.
            return;
        }
        let maps = self.table.mappings_at(s.pid, s.ktime_ns);
        self.pin_through_others(s.pid, &maps);
        let earlier_failure = self.failures.take(&crash);
        self.kmsg.drain();
        let has_gpu = crash
            .memory
            .as_ref()
            .is_some_and(|m| m.gpu_minors != 0 || m.gpu_flags != 0);
        let xid = xids_for(self.kmsg.recent(), s.pid, crash.fatal().ktime_ns, has_gpu);
        self.analysis.send(Job {
            earlier_failure,
            xid,
            pins: self.pins.subset(&maps),
            executable: self.table.exe_at(s.pid, s.ktime_ns),
            cgroup: self.cgroups.path(s.cgroup_id),
            mappings: maps,
            crash: Box::new(crash),
        });
    }

    fn tick(&mut self) {
        self.drain();
        let now = monotonic_ns();
        for a in self.assembler.expire(now) {
            self.on_assembled(a);
        }
        // Expiry walks every known process: far less often than the drains, which must
        // keep up with short-lived processes.
        if now.saturating_sub(self.housekept_ns) >= HOUSEKEEPING_NS {
            self.housekept_ns = now;
            let awaited = self.assembler.awaited_pids();
            self.table.expire(now, |pid| awaited.contains(&pid));
        }
    }
}

/// What `--check-config` checks beyond the options themselves: the files they name.
pub fn check(args: &Args) -> Result<()> {
    setup::grouping(&args.outputs).map(|_| ())
}

/// Runs until SIGINT/SIGTERM, or in run mode until the command has ended. Reports go to
/// the sinks; status lines to stderr. Returns the exit code for crashtrace.
pub async fn run(args: Args) -> Result<i32> {
    let (config, degraded) = build_config(&args)?;
    if let Some(d) = &degraded {
        say!("crashtrace: {d}");
    }
    let metrics = match args.outputs.metrics_address {
        Some(addr) => {
            let m = Arc::new(Metrics::new());
            let bound = metrics::server::serve(addr, m.clone())
                .map_err(|e| anyhow::anyhow!("serving metrics on {addr}: {e}"))?;
            say!("crashtrace: metrics at http://{bound}/metrics");
            Some(m)
        }
        None => None,
    };
    let outputs = setup::outputs(&args.outputs, metrics.clone())?;
    let grouping = setup::grouping(&args.outputs)?;
    let shed = Arc::new(budget::Shed::new());
    let mut shed_at: Option<std::time::Instant> = None;
    if let Some(adj) = args.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .with_context(|| format!("setting --oom-score-adj {adj}"))?;
    }
    // The mapping stream starts before the /proc scan so nothing falls between the two.
    let mut stream = MappingStream::open(MAPPING_RING_BYTES, args.pin_on_exec)
        .map_err(|e| explain(e, "opening the kernel's mapping records (perf_event_open)"))?;
    raise_fd_limit();
    let mut table = ProcessTable::new();
    let mut pins = FilePins::new();
    table.scan_proc(|pid, m| pins.pin(pid, m));
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
    let (probes, maps) = Probes::load(&config, args.ring_buffer_size)?;
    // SAFETY: the ring buffer owns its fd and the AsyncFd owns the ring buffer until the end.
    let mut ring =
        unsafe { AsyncFd::register(maps.events) }.context("registering the ring buffer")?;
    let wakeup = stream
        .take_wakeup()
        .context("the mapping records' wakeup")?;
    // SAFETY: the AsyncFd owns the epoll descriptor until the end of the run.
    let maps_ready =
        unsafe { AsyncFd::register(wakeup) }.context("registering the mapping records")?;

    let mut registry = PythonRegistry::new(maps.pyprocs, maps.pyfiles);
    registry.register_installed();
    let mut abort_msgs = AbortMessages::new(maps.libc_files);
    abort_msgs.register_installed();
    let mut pipeline = Pipeline {
        table,
        pins,
        cgroups: CgroupNames::new(),
        stream,
        assembler: Assembler::with_env_allow(EnvAllow::new(&args.env)),
        analysis: Analysis::start(
            {
                let args = args.clone();
                move || make_symbolizer(&args)
            },
            Sinks::start(outputs, QUEUE_REPORTS),
            metrics.clone(),
            shed.clone(),
            args.cpu_budget.map(|p| f64::from(p) / 100.0),
            grouping,
            degraded,
        ),
        registrar: Registrar::start(registry, abort_msgs, shed.clone()),
        scope: None,
        housekept_ns: 0,
        failures: FailureLedger::default(),
        libc_inodes: Default::default(),
        kmsg: Kmsg::open(),
    };
    // Python processes that were running before crashtrace.
    let running: Vec<_> = pipeline
        .table
        .processes()
        .into_iter()
        .flat_map(|(pid, maps)| maps.into_iter().map(move |m| (pid, m)))
        .collect();
    for (pid, m) in running {
        pipeline.register_mapping(pid, m);
    }
    // Listening for the stop before saying "attached": a SIGINT or SIGTERM that comes
    // right after that line must stop crashtrace.
    install_stop_handlers()?;
    say!(
        "crashtrace: attached; watching {} for {} ({} processes known). Ctrl-C to stop.",
        summary::describe_filters(&args),
        args.signals.names().join(" "),
        pipeline.table.process_count()
    );
    // Loading parsed the kernel's BTF (tens of MB, freed now).
    budget::release_freed();
    let notifier = Notifier::from_env();
    if let Some(n) = &notifier {
        n.send("READY=1");
    }

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
    let mut lost_reported = (0u64, 0u64);
    let mut wake_budget = WAKES_PER_TICK;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next_record() {
                    pipeline.on_record(&item);
                }
                guard.clear_ready();
            }
            // With --pin-on-exec, a process exec'd: pin its files now, not at the next
            // tick. Within a budget per tick, so that an exec storm cannot keep crashtrace
            // busy beyond it. (Without it, the capture record of a crash pins again, and
            // build IDs cover what was missed.)
            guard = maps_ready.readable(), if wake_budget > 0 => {
                let mut guard = guard?;
                guard.get_inner().consume();
                pipeline.drain();
                guard.clear_ready();
                wake_budget -= 1;
            }
            _ = tick.tick() => {
                wake_budget = WAKES_PER_TICK;
                // Also read here what the ring holds: a readiness event lost (one raised
                // while crashtrace was stopped, say) must not leave records unread.
                {
                    let rb = ring.get_mut();
                    while let Some(item) = rb.next_record() {
                        pipeline.on_record(&item);
                    }
                }
                pipeline.tick();
                // In run mode Ctrl-C reaches the command too: wait for it to end.
                if take_stop_request(libc::SIGINT) && done_rx.is_none() {
                    break;
                }
                if take_stop_request(libc::SIGHUP) {
                    sinks::file::request_reopen();
                }
                if take_stop_request(libc::SIGTERM) {
                    match pipeline.scope {
                        // SAFETY: signalling our own child.
                        Some(pid) if finished.is_none() => unsafe {
                            libc::kill(pid as i32, libc::SIGTERM);
                        },
                        _ => break,
                    }
                }
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
                drain_deadline = Some(
                    tokio::time::Instant::now() + Duration::from_nanos(EXIT_WAIT_NS) + TICK_SLACK,
                );
            }
            _ = stats_tick.tick() => {
                let ring_full = probes.stat(Stat::RingFull);
                summary::new_losses(&mut lost_reported, (ring_full, pipeline.stream.lost));
                if let Some(limit) = args.memory_budget {
                    budget::check_memory(limit, &shed, &mut shed_at);
                }
                // The loop is alive: systemd's watchdog (every second, well within any
                // period it sets).
                if let Some(n) = notifier.as_ref().filter(|n| n.watchdog_every.is_some()) {
                    n.send("WATCHDOG=1");
                }
                if let Some(m) = &metrics {
                    m.set_loop_state(&LoopState {
                        captures_ring_full: ring_full,
                        exits_lost: probes.stat(Stat::ExitsLost),
                        analysis_queue_full: pipeline.analysis.lost(),
                        handled_limited: probes.stat(Stat::HandledLimited),
                        pinned_files: pipeline.pins.len() as u64,
                        tracked_processes: pipeline.table.process_count() as u64,
                    });
                    m.set_output_losses(&pipeline.analysis.losses().get());
                }
            }
        }
    }
    // A stop flushes: what the ring buffer still holds is read, crashes waiting for their
    // process's exit get a bounded while for it, then every crash is analysed and its
    // report written, within a bound, before the closing line.
    if let Some(n) = &notifier {
        n.send("STOPPING=1");
    }
    let exits_by = tokio::time::Instant::now() + STOP_EXIT_WAIT;
    loop {
        let rb = ring.get_mut();
        while let Some(item) = rb.next_record() {
            pipeline.on_record(&item);
        }
        pipeline.tick();
        if !pipeline.assembler.has_pending() || tokio::time::Instant::now() >= exits_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for a in pipeline.assembler.flush() {
        pipeline.on_assembled(a);
    }
    let flush_by = std::time::Instant::now() + STOP_FLUSH;
    if !pipeline.analysis.finish(flush_by) {
        say!(
            "crashtrace: analysis did not finish within {} s of the stop: the crashes still \
             queued are not reported",
            STOP_FLUSH.as_secs()
        );
    }
    pipeline.registrar.finish(flush_by);
    summary::closing(&probes, &pipeline.analysis, &args);
    Ok(match finished {
        Some(f) => {
            let (text, code) = summarize(&args.command, &f);
            say!("{text}");
            code
        }
        None => 0,
    })
}

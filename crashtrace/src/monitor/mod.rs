//! The event loop: the only place that waits. Ring-buffer records go through assembly;
//! mapping records keep the process table and file pins current and feed the Python
//! registration thread; each finished crash goes to the analysis thread (`workers`),
//! which takes it down the data path (`analyze`) and to the sinks. The loop itself never
//! parses a file or waits for output: the buffers are drained whatever the workers do.

mod budget;
mod pace;
mod pipeline;
pub mod runmode;
pub mod setup;
mod summary;
pub mod workers;

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use crashtrace_common::Stat;
use tokio::io::unix::AsyncFd;

use crate::{
    assemble::{Assembler, EXIT_WAIT_NS, EnvAllow},
    capture::{
        loader::{Probes, explain},
        perf::MappingStream,
        pins::FilePins,
        processes::ProcessTable,
    },
    cli::Args,
    metrics::{self, LoopState, Metrics},
    python::registry::PythonRegistry,
    report::attribution::FailureLedger,
    sinks::{self, QUEUE_REPORTS, Sinks},
    symbolize::libc::AbortMessages,
    sys::{cgroups::CgroupNames, kmsg::Kmsg, notify::Notifier},
};
use pace::Pace;
use pipeline::Pipeline;
use runmode::{spawn_command, summarize};
use setup::{
    build_config, install_stop_handlers, make_symbolizer, raise_fd_limit, take_stop_request,
};
use workers::{Analysis, Registrar};

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
/// Buffers for mapping records, all CPUs together (4 MiB each on 2 CPUs, 256 KiB each on
/// 32 or more): bursts of execs must fit between two drains.
const MAPPING_RING_BYTES: usize = 8 << 20;
/// How long the ring buffer's data stays mapped once nothing comes (see `capture::ring`).
const RING_QUIET: Duration = Duration::from_secs(2);

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
    // Held for the whole run: the kernel counts program run time only while it is open.
    let _stats_fd = if args.bpf_stats {
        Some(
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .map_err(|e| anyhow::anyhow!("enabling BPF run-time statistics: {e}"))?,
        )
    } else {
        None
    };
    let mut table = ProcessTable::new();
    let mut pins = FilePins::new();
    // The two slow parts of the start, side by side: the verifier's pass over the programs
    // (seconds on some kernels) and the /proc scan (about 0.2 ms a process). Nothing is
    // read from the ring before both are done. The load stays on this thread: its tens of
    // MB of parsed BTF, freed after it, would pin a second malloc arena's pages.
    let (loaded, scanned) = std::thread::scope(|s| {
        let scan = s.spawn(|| {
            table.scan_proc(|pid, m| pins.pin(pid, m));
            stream.drain_into(&mut table, &mut pins);
        });
        (Probes::load(&config, args.ring_buffer_size), scan.join())
    });
    if let Err(panic) = scanned {
        std::panic::resume_unwind(panic);
    }
    let (probes, maps) = loaded?;
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
        python: Default::default(),
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
    let mut pace = Pace::default();
    let mut tick = pipeline.repace(&mut pace, pace::FAST);
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
                if let Some(p) = pace.woke() {
                    tick = pipeline.repace(&mut pace, p);
                }
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
                if let Some(p) = pace.woke() {
                    tick = pipeline.repace(&mut pace, p);
                }
            }
            _ = tick.tick() => {
                wake_budget = WAKES_PER_TICK;
                // Also read here what the ring holds: a readiness event lost (one raised
                // while crashtrace was stopped, say) must not leave records unread.
                let mut active = false;
                {
                    let rb = ring.get_mut();
                    while let Some(item) = rb.next_record() {
                        active = true;
                        pipeline.on_record(&item);
                    }
                    rb.release_if_quiet(std::time::Instant::now(), RING_QUIET);
                }
                active |= pipeline.tick();
                if let Some(p) = pace.after_tick(active) {
                    tick = pipeline.repace(&mut pace, p);
                }
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

//! `crashtrace dump`: every thread's native and Python stacks of live processes, read
//! without ptrace and without stopping them (capture::iter), then down the crash path's
//! stages: unwind/symbolize, Python, report.

use std::{
    collections::HashMap,
    time::{Instant, SystemTime},
};

use anyhow::{Result, bail};
use clap::Parser;
use crashtrace_common::{Config, PyCode, PyThread, ThreadCapture};

use crate::{
    assemble::PyRecords,
    capture::{btf, features, iter::DumpIter, pins::FilePins, records::Event},
    cli::{CommFilter, parse_comm},
    python::{Tracebacks, merge_all, registry::PythonRegistry},
    report::{
        dump::{DumpInput, DumpReport, DumpedThread, build},
        text::render_dump,
    },
    symbolize::{Symbolizer, elf::ModuleCache},
    sys::{escape, procfs},
};

/// Every thread's native and Python stacks of running processes, in the crash report's
/// layout, without stopping them.
#[derive(Parser, Debug)]
#[command(name = "crashtrace dump")]
pub struct DumpArgs {
    /// Processes to dump.
    #[arg(value_name = "PID")]
    pub pids: Vec<u32>,
    /// Every process whose name or executable's file name starts with NAME (`=NAME`:
    /// is exactly NAME), as the monitor's `--comm` matches; repeatable.
    #[arg(short = 'n', long, value_name = "NAME", value_parser = parse_comm)]
    pub comm: Vec<CommFilter>,
    /// One JSON object per process, one per line, instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Processes one dump reads at most (the kernel table's size).
const MAX_TARGETS: usize = 4096;

/// The processes to read, or why not: a clear error before anything is loaded.
pub fn targets(args: &DumpArgs, me: u32) -> Result<Vec<u32>> {
    if args.pids.is_empty() && args.comm.is_empty() {
        bail!("name a process: crashtrace dump PID... or crashtrace dump --comm NAME");
    }
    let mut out = Vec::new();
    for &pid in &args.pids {
        if pid == me {
            bail!("process {pid} is crashtrace itself");
        }
        match procfs::tgid(pid) {
            None => bail!("no process {pid}"),
            Some(t) if t != pid => bail!("{pid} is a thread of process {t}: dump {t}"),
            Some(_) => {}
        }
        if !out.contains(&pid) {
            out.push(pid);
        }
    }
    for filter in &args.comm {
        let found: Vec<u32> = procfs::pids()
            .into_iter()
            .filter(|&p| p != me && named(p, filter))
            .collect();
        if found.is_empty() {
            bail!("no process named {}", escape::text(&filter.name));
        }
        for p in found {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out.sort_unstable();
    if out.len() > MAX_TARGETS {
        bail!(
            "{} processes match: at most {MAX_TARGETS} per dump",
            out.len()
        );
    }
    Ok(out)
}

/// Whether process `pid`'s name or its executable's file name matches.
fn named(pid: u32, filter: &CommFilter) -> bool {
    procfs::comm(pid).is_some_and(|c| filter.matches(&c))
        || procfs::read_exe(pid).is_some_and(|e| {
            std::path::Path::new(&*e)
                .file_name()
                .is_some_and(|f| filter.matches(&f.to_string_lossy()))
        })
}

/// What /proc said of a target before the pass.
struct Before {
    pid: u32,
    name: String,
    executable: Option<String>,
    cgroup: Option<String>,
    mappings: Vec<procfs::Mapping>,
    pins: FilePins,
    threads: Vec<u32>,
}

/// Prints each process's dump; 0 when every one was read whole, 1 when one exited
/// during the dump.
pub fn run(args: DumpArgs) -> Result<i32> {
    let me = std::process::id();
    let pids = targets(&args, me)?;
    let mut config = Config::empty();
    config.self_pid = me;
    let vmlinux = btf::load_vmlinux()?;
    features::check(
        &vmlinux,
        &[features::CAPTURE, features::EXTRAS, features::DUMP],
        &[],
    )?;
    config.offsets = btf::kernel_offsets(&vmlinux)?;
    let before: Vec<Before> = pids.iter().map(|&pid| read_before(pid)).collect();
    let batches = batches(&before.iter().map(|b| b.threads.len()).collect::<Vec<_>>());
    let most = batches
        .iter()
        .map(|r| before[r.clone()].iter().map(|b| b.threads.len()).sum())
        .max()
        .unwrap_or(0);
    let (mut iter, pyprocs, pyfiles) = DumpIter::load(&config, ring_bytes(most))?;
    let mut registry = PythonRegistry::new(pyprocs, pyfiles);
    let mut modules = ModuleCache::new();
    let mut symbolizer = Symbolizer::new(&[], None);
    let mut before = before.into_iter();
    let mut code = 0;
    for batch in batches {
        let batch: Vec<Before> = before.by_ref().take(batch.len()).collect();
        for b in &batch {
            for m in &b.mappings {
                registry.on_mapping(b.pid, m, &mut modules, b.pins.get(m));
            }
        }
        let started = Instant::now();
        let pass = iter.run(&batch.iter().map(|b| b.pid).collect::<Vec<_>>())?;
        let read_ms = started.elapsed().as_secs_f64() * 1e3;
        let time = SystemTime::now();
        if pass.undecodable > 0 {
            crate::say!(
                "crashtrace dump: {} records did not decode",
                pass.undecodable
            );
        }
        let mut by_pid = group(pass.events);
        for b in batch {
            let (captures, python) = by_pid.remove(&b.pid).unwrap_or_default();
            let r = report(
                &mut symbolizer,
                b,
                captures,
                python,
                pass.ring_full,
                time,
                read_ms,
            );
            if r.exited {
                code = 1;
            }
            if args.json {
                println!("{}", escape::json(serde_json::to_string(&r)?));
            } else {
                println!("{}", render_dump(&r));
            }
        }
    }
    Ok(code)
}

/// Threads one pass reads at most (unless one process alone has more): its records are
/// held in the ring buffer until the pass ends.
const PASS_THREADS: usize = 1024;

/// Consecutive runs of targets whose threads, together, one pass can hold.
fn batches(threads: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut sum) = (0, 0);
    for (i, &n) in threads.iter().enumerate() {
        if i > start && sum + n > PASS_THREADS {
            out.push(start..i);
            (start, sum) = (i, 0);
        }
        sum += n;
    }
    if start < threads.len() {
        out.push(start..threads.len());
    }
    out
}

fn read_before(pid: u32) -> Before {
    let mappings = procfs::read_maps(pid).unwrap_or_default();
    let mut pins = FilePins::new();
    for m in mappings.iter().filter(|m| m.is_file()) {
        if !pins.has(m) {
            pins.pin(pid, m);
        }
    }
    Before {
        pid,
        name: procfs::comm(pid).unwrap_or_default(),
        executable: procfs::read_exe(pid).map(|e| e.to_string()),
        cgroup: procfs::cgroup(pid),
        mappings,
        pins,
        threads: procfs::threads(pid),
    }
}

/// A pass of `threads` fits: each thread's capture and Python thread record, room for
/// eight code objects a thread, and slack for threads started since they were listed.
fn ring_bytes(threads: usize) -> u32 {
    let per_thread = size_of::<ThreadCapture>() + size_of::<PyThread>() + 8 * size_of::<PyCode>();
    let want = (threads + 64) * per_thread;
    want.next_power_of_two().clamp(1 << 20, MAX_RING) as u32
}

/// A single process with more threads than this holds gets what fits, and says so.
const MAX_RING: usize = 256 << 20;

type PerProcess = (Vec<crate::capture::records::Capture>, Option<PyRecords>);

fn group(events: Vec<Event>) -> HashMap<u32, PerProcess> {
    let mut out: HashMap<u32, PerProcess> = HashMap::new();
    for e in events {
        match e {
            Event::Dump(c) => out.entry(c.pid).or_default().0.push(*c),
            Event::PyThread(t) => py(&mut out, t.header.pid).add_thread(*t),
            Event::PyCode(c) => py(&mut out, c.header.pid).add_code(*c),
            _ => {}
        }
    }
    out
}

fn py(out: &mut HashMap<u32, PerProcess>, pid: u32) -> &mut PyRecords {
    out.entry(pid)
        .or_default()
        .1
        .get_or_insert_with(PyRecords::default)
}

fn report(
    symbolizer: &mut Symbolizer,
    b: Before,
    mut captures: Vec<crate::capture::records::Capture>,
    python: Option<PyRecords>,
    ring_lost: u64,
    time: SystemTime,
    read_ms: f64,
) -> DumpReport {
    captures.sort_by_key(|c| c.tid);
    let loaded = symbolizer.load(&b.mappings, &b.pins);
    let mut reports: Vec<crate::model::ThreadReport> = captures
        .iter()
        .map(|c| {
            let (frames, unwind) = symbolizer.stack(c, &loaded, &b.pins);
            crate::model::ThreadReport {
                tid: c.tid,
                name: c.thread_name.clone(),
                role: None,
                frames,
                unwind,
                state: None,
            }
        })
        .collect();
    let mut python = python.as_ref().and_then(|p| Tracebacks(p).report());
    if let Some(py) = &mut python {
        merge_all(py, (&mut [], ""), &mut reports);
    }
    let threads = captures
        .iter()
        .zip(reports)
        .map(|(c, report)| DumpedThread {
            report,
            task_state: c.task_state,
            on_cpu: c.on_cpu,
            syscall_nr: c.regs.map_or(-1, |r| r.orig_rax as i64),
            ns_pid: c.ns_pid,
        })
        .collect();
    let mut r = build(DumpInput {
        pid: b.pid,
        process_name: b.name,
        executable: b.executable,
        cgroup: b.cgroup,
        host: procfs::hostname(),
        listed: b.threads,
        threads,
        python,
        alive_after: procfs::tgid(b.pid) == Some(b.pid),
        ring_lost,
        time,
        read_ms,
    });
    r.notes.extend(symbolizer.take_notes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_hold_a_bounded_number_of_threads() {
        assert_eq!(batches(&[]), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(batches(&[5, 7, 9]), vec![0..3]);
        assert_eq!(batches(&[1000, 24, 1]), [0..2, 2..3]);
        // One process over the bound is a pass of its own.
        assert_eq!(batches(&[3, 5000, 3]), [0..1, 1..2, 2..3]);
        // 64 threads of slack: capture, Python thread and eight code objects each.
        let one = size_of::<ThreadCapture>() + size_of::<PyThread>() + 8 * size_of::<PyCode>();
        assert_eq!(ring_bytes(0) as usize, (64 * one).next_power_of_two());
        assert_eq!(ring_bytes(1_000_000), MAX_RING as u32);
    }
}

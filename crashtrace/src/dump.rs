//! `crashtrace dump`: every thread's native and Python stacks of live processes, read
//! without ptrace and without stopping them (capture::iter), then down the crash path's
//! stages: unwind/symbolize, Python, report.

use std::{
    collections::HashMap,
    time::{Instant, SystemTime},
};

use anyhow::{Result, bail};
use clap::Parser;
use crashtrace_common::{Config, PY_DUMP_THREADS, PyCode, PyThread, THREAD_STACK_BYTES};

use crate::{
    assemble::PyRecords,
    capture::{btf, iter::DumpIter, pins::FilePins, records::Event},
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
    /// Every process of this name (its comm, as `ps -o comm` shows it); repeatable.
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
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
    for name in &args.comm {
        let found: Vec<u32> = procfs::pids()
            .into_iter()
            .filter(|&p| p != me && procfs::comm(p).as_deref() == Some(name.as_str()))
            .collect();
        if found.is_empty() {
            bail!("no process named {}", escape::text(name));
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
    config.offsets = btf::kernel_offsets(&btf::load_vmlinux()?)?;
    let before: Vec<Before> = pids.iter().map(|&pid| read_before(pid)).collect();
    let threads: usize = before.iter().map(|b| b.threads.len()).sum();
    let (mut iter, pyprocs, pyfiles) = DumpIter::load(&config, ring_bytes(threads, pids.len()))?;
    let mut registry = PythonRegistry::new(pyprocs, pyfiles);
    let mut modules = ModuleCache::new();
    for b in &before {
        for m in &b.mappings {
            registry.on_mapping(b.pid, m, &mut modules, b.pins.get(m));
        }
        iter.add_target(b.pid)?;
    }
    let started = Instant::now();
    let pass = iter.run()?;
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    let time = SystemTime::now();
    let mut by_pid = group(pass.events);
    let mut symbolizer = Symbolizer::new(&[], None);
    let mut code = 0;
    for b in before {
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
    if pass.undecodable > 0 {
        crate::say!(
            "crashtrace dump: {} records did not decode",
            pass.undecodable
        );
    }
    Ok(code)
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

/// A pass's records fit: every thread's capture, and room for the Python threads and
/// their code objects.
fn ring_bytes(threads: usize, processes: usize) -> u32 {
    let per_thread = THREAD_STACK_BYTES + 1024;
    let python = processes.min(16) * (PY_DUMP_THREADS.min(threads.max(1)) * 2048 + (1 << 20));
    let want = (threads + 16) * per_thread + python;
    (want.next_power_of_two()).clamp(1 << 20, 1 << 30) as u32
}

type PerProcess = (Vec<crate::capture::records::Capture>, Option<PyRecords>);

fn group(events: Vec<Event>) -> HashMap<u32, PerProcess> {
    let mut out: HashMap<u32, PerProcess> = HashMap::new();
    for e in events {
        match e {
            Event::Dump(c) => out.entry(c.pid).or_default().0.push(*c),
            Event::PyThread(t) => py(&mut out, &*t).add_thread(*t),
            Event::PyCode(c) => py(&mut out, &*c).add_code(*c),
            _ => {}
        }
    }
    out
}

/// Both Python records start with their header.
trait Pid {
    fn pid(&self) -> u32;
}
impl Pid for PyThread {
    fn pid(&self) -> u32 {
        self.header.pid
    }
}
impl Pid for PyCode {
    fn pid(&self) -> u32 {
        self.header.pid
    }
}

fn py<'a>(out: &'a mut HashMap<u32, PerProcess>, r: &impl Pid) -> &'a mut PyRecords {
    out.entry(r.pid())
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

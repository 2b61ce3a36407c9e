//! The dump iterator (`crashtrace dump`): a sleepable task iterator that copies every
//! thread of the chosen processes, and their Python threads, into its own ring buffer.
//! Loaded apart from the crash probes: a dump runs beside a running monitor.

use std::io::Read as _;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData},
    programs::Iter,
};
use crashtrace_common::Config;

use super::{
    loader::{EBPF_OBJECT, PyFiles, PyProcs, explain},
    records::{Event, decode},
};

pub struct DumpIter {
    ebpf: Ebpf,
    events: super::ring::Ring,
    targets: HashMap<MapData, u32, u32>,
}

/// What one pass over the tasks gave: the decoded records, those that did not decode,
/// and the records the ring buffer had no room for.
pub struct Pass {
    pub events: Vec<Event>,
    pub undecodable: usize,
    pub ring_full: u64,
}

impl DumpIter {
    /// Loads and verifies the iterator; returns it and the Python maps to register the
    /// targets' interpreters in. `ring_bytes` must hold every record of one pass.
    pub fn load(config: &Config, ring_bytes: u32) -> Result<(Self, PyProcs, PyFiles)> {
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", config, true)
            .map_max_entries("EVENTS", ring_bytes)
            // The crash probes' tables, unused here: kept small.
            .map_max_entries("PYPROCS", 4096)
            .map_max_entries("PY_CODES_SEEN", 16384)
            .map_max_entries("CRASHED", 1)
            .map_max_entries("SENDERS", 1)
            .map_max_entries("HANDLED", 1)
            .map_max_entries("OOMED", 1)
            .load(EBPF_OBJECT)
            .map_err(|e| explain(anyhow!(e), "loading the eBPF programs"))?;
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
        let prog: &mut Iter = ebpf
            .program_mut("dump_task")
            .context("program dump_task missing from the eBPF object")?
            .try_into()?;
        prog.load("task", &btf)
            .map_err(|e| explain(anyhow!(e), "verifying the dump_task program"))?;
        let events =
            super::ring::Ring::new(ebpf.take_map("EVENTS").context("EVENTS map missing")?)?;
        let targets = HashMap::try_from(
            ebpf.take_map("DUMP_TARGETS")
                .context("DUMP_TARGETS map missing")?,
        )?;
        let pyprocs = PyProcs::try_from(ebpf.take_map("PYPROCS").context("PYPROCS map missing")?)?;
        let pyfiles = PyFiles::try_from(ebpf.take_map("PYFILES").context("PYFILES map missing")?)?;
        Ok((
            Self {
                ebpf,
                events,
                targets,
            },
            pyprocs,
            pyfiles,
        ))
    }

    /// Runs the iterator once over every task for the processes `pids` (reading its
    /// output to the end runs it), then drains what it sent.
    pub fn run(&mut self, pids: &[u32]) -> Result<Pass> {
        let old: Vec<u32> = self.targets.keys().flatten().collect();
        for pid in old {
            let _ = self.targets.remove(&pid);
        }
        for &pid in pids {
            self.targets
                .insert(pid, 0, 0)
                .with_context(|| format!("adding process {pid} to the dump"))?;
        }
        let before = self.ring_full();
        let prog: &mut Iter = self
            .ebpf
            .program_mut("dump_task")
            .context("program dump_task missing")?
            .try_into()?;
        let link = prog
            .attach()
            .map_err(|e| explain(anyhow!(e), "attaching the task iterator"))?;
        let mut file = prog
            .take_link(link)?
            .into_file()
            .map_err(|e| anyhow!("creating the task iterator: {e}"))?;
        let mut sink = Vec::new();
        file.read_to_end(&mut sink)
            .context("running the task iterator")?;
        let mut pass = Pass {
            events: Vec::new(),
            undecodable: 0,
            ring_full: 0,
        };
        while let Some(item) = self.events.next_record() {
            match decode(&item) {
                Ok(e) => pass.events.push(e),
                Err(_) => pass.undecodable += 1,
            }
        }
        pass.ring_full = self.ring_full() - before;
        Ok(pass)
    }

    fn ring_full(&self) -> u64 {
        let Some(stats) = self.ebpf.map("STATS") else {
            return 0;
        };
        let Ok(stats) = aya::maps::PerCpuArray::<_, u64>::try_from(stats) else {
            return 0;
        };
        stats
            .get(&(crashtrace_common::Stat::RingFull as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

//! `--pprof FILE`: the crashes seen, as one pprof profile (gzipped `profile.proto`): a
//! sample per distinct stack and labels, its value the number of crashes. Native frames
//! keep their module and build ID, so pprof, Parca or Pyroscope can symbolize them
//! later; Python frames are functions with file and line. Written at the stop and on
//! SIGHUP, whole (a temporary file renamed over FILE).

mod proto;

use std::{
    collections::HashMap,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use prost::Message as _;

use super::{Sink, file::reopen_generation};
use crate::model::{CrashReport, Frame};
pub use proto::Profile;
use proto::{Function, Label, Line, Location, Mapping, Sample, ValueType};

/// Distinct samples kept at most; crashes with a new stack past it are counted apart.
const MAX_SAMPLES: usize = 100_000;

type SampleKey = (Vec<u64>, Vec<(i64, i64, i64)>);

/// Crashes aggregated into a profile. No I/O: `encode` gives the bytes.
pub struct CrashProfile {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    mappings: Vec<Mapping>,
    mapping_ids: HashMap<(String, String), u64>,
    functions: Vec<Function>,
    function_ids: HashMap<(i64, i64), u64>,
    locations: Vec<Location>,
    location_ids: HashMap<(u64, u64, i64, i64), u64>,
    samples: Vec<Sample>,
    sample_ids: HashMap<SampleKey, usize>,
    /// Crashes not kept as samples (over MAX_SAMPLES).
    over: u64,
    start: SystemTime,
}

impl CrashProfile {
    pub fn new(start: SystemTime) -> Self {
        let mut p = Self {
            strings: Vec::new(),
            string_ids: HashMap::new(),
            mappings: Vec::new(),
            mapping_ids: HashMap::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            samples: Vec::new(),
            sample_ids: HashMap::new(),
            over: 0,
            start,
        };
        p.string("");
        p
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), i);
        i
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (self.string(name), self.string(file));
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(Function {
            id,
            name: key.0,
            system_name: key.0,
            filename: key.1,
            start_line: 0,
        });
        self.function_ids.insert(key, id);
        id
    }

    fn mapping(&mut self, path: &str, build_id: &str, offset: u64) -> u64 {
        let key = (path.to_string(), build_id.to_string());
        let id = match self.mapping_ids.get(&key) {
            Some(&id) => id,
            None => {
                let id = self.mappings.len() as u64 + 1;
                let (filename, build_id) = (self.string(path), self.string(build_id));
                self.mappings.push(Mapping {
                    id,
                    filename,
                    build_id,
                    has_functions: true,
                    has_filenames: true,
                    has_line_numbers: true,
                    has_inline_frames: true,
                    ..Mapping::default()
                });
                self.mapping_ids.insert(key, id);
                id
            }
        };
        // Addresses are file offsets (memory_start 0, file_offset 0): the same code has
        // the same address in every process, whatever ASLR did.
        let m = &mut self.mappings[id as usize - 1];
        m.memory_limit = m.memory_limit.max(offset + 1);
        id
    }

    fn location(&mut self, mapping_id: u64, address: u64, lines: Vec<Line>) -> u64 {
        let (f, l) = lines
            .first()
            .map_or((0, 0), |l| (l.function_id as i64, l.line));
        let key = (mapping_id, address, f, l);
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let id = self.locations.len() as u64 + 1;
        self.locations.push(Location {
            id,
            mapping_id,
            address,
            line: lines,
        });
        self.location_ids.insert(key, id);
        id
    }

    /// A native frame's location (leaf-first list): its inlined functions first.
    fn native(&mut self, f: &Frame) -> u64 {
        let mut lines = Vec::new();
        for i in &f.inlined {
            let file = i.location.as_ref().map_or("", |l| l.file.as_str());
            let line = i.location.as_ref().and_then(|l| l.line).unwrap_or(0);
            let function_id = self.function(&i.function, file);
            lines.push(Line {
                function_id,
                line: line.into(),
                column: 0,
            });
        }
        if let Some(name) = &f.function {
            let file = f.location.as_ref().map_or("", |l| l.file.as_str());
            let line = f.location.as_ref().and_then(|l| l.line).unwrap_or(0);
            let function_id = self.function(name, file);
            lines.push(Line {
                function_id,
                line: line.into(),
                column: 0,
            });
        }
        match (&f.module, f.module_offset) {
            (Some(m), Some(off)) => {
                let mapping = self.mapping(m, f.build_id.as_deref().unwrap_or(""), off);
                self.location(mapping, off, lines)
            }
            // No file: the address itself, which only this process had.
            _ => self.location(0, f.address, lines),
        }
    }

    /// Adds one crash: its crashing thread's stack, Python frames where the eval loop
    /// ran them, and its labels.
    pub fn add(&mut self, r: &CrashReport) {
        let mut stack = Vec::new();
        for f in &r.frames {
            for p in &f.python {
                let function_id = self.function(&p.function, &p.file);
                let line = Line {
                    function_id,
                    line: p.line.unwrap_or(0).into(),
                    column: 0,
                };
                stack.push(self.location(0, 0, vec![line]));
            }
            stack.push(self.native(f));
        }
        let mut labels = vec![
            (self.string("signal"), self.string(&r.signal.name), 0),
            (self.string("process"), self.string(&r.process_name), 0),
        ];
        if let Some(s) = &r.signature {
            labels.push((self.string("signature"), self.string(&s.id), 0));
        }
        if let Some(c) = &r.container_id {
            labels.push((
                self.string("container"),
                self.string(&c[..c.len().min(12)]),
                0,
            ));
        }
        if let Some(rank) = r.job.as_ref().and_then(|j| j.rank) {
            labels.push((self.string("rank"), 0, rank.into()));
        }
        let key = (stack, labels);
        if let Some(&i) = self.sample_ids.get(&key) {
            self.samples[i].value[0] += 1;
            return;
        }
        if self.samples.len() >= MAX_SAMPLES {
            self.over += 1;
            return;
        }
        self.sample_ids.insert(key.clone(), self.samples.len());
        self.samples.push(Sample {
            location_id: key.0,
            value: vec![1],
            label: key
                .1
                .iter()
                .map(|&(key, str, num)| Label {
                    key,
                    str,
                    num,
                    num_unit: 0,
                })
                .collect(),
        });
    }

    /// The profile as of `now`, gzipped.
    pub fn encode(&mut self, now: SystemTime) -> Vec<u8> {
        let ns = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64)
        };
        let crashes = ValueType {
            r#type: self.string("crashes"),
            unit: self.string("count"),
        };
        let comment = if self.over > 0 {
            vec![self.string(&format!(
                "{} crashes not kept: over {MAX_SAMPLES} distinct stacks",
                self.over
            ))]
        } else {
            Vec::new()
        };
        let p = Profile {
            sample_type: vec![crashes.clone()],
            sample: self.samples.clone(),
            mapping: self.mappings.clone(),
            location: self.locations.clone(),
            function: self.functions.clone(),
            string_table: self.strings.clone(),
            time_nanos: ns(self.start),
            duration_nanos: ns(now) - ns(self.start),
            period_type: Some(crashes),
            period: 1,
            comment,
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = gz.write_all(&p.encode_to_vec());
        gz.finish().unwrap_or_default()
    }
}

/// The sink: aggregates every crash (crash loops included) and writes the file.
pub struct PprofFile {
    path: PathBuf,
    name: String,
    profile: CrashProfile,
    generation: u64,
    changed: bool,
}

impl PprofFile {
    /// Writes an empty profile now, so a bad path is an error at start.
    pub fn create(path: PathBuf) -> std::io::Result<Self> {
        let mut s = Self {
            name: format!("{} (pprof)", path.display()),
            path,
            profile: CrashProfile::new(SystemTime::now()),
            generation: reopen_generation(),
            changed: false,
        };
        s.write_file()?;
        Ok(s)
    }

    fn write_file(&mut self) -> std::io::Result<()> {
        let bytes = self.profile.encode(SystemTime::now());
        let tmp = self.path.with_file_name(format!(
            ".{}.tmp",
            self.path
                .file_name()
                .map_or("pprof".into(), |n| n.to_string_lossy())
        ));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        // A rename replaces FILE itself, never a file a link there points to.
        std::fs::rename(&tmp, &self.path)?;
        self.changed = false;
        Ok(())
    }

    fn write_said(&mut self) {
        if let Err(e) = self.write_file() {
            say!(
                "crashtrace: cannot write the pprof profile {}: {e}",
                self.path.display()
            );
        }
    }
}

impl Sink for PprofFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "pprof"
    }

    fn write(&mut self, report: &CrashReport) -> std::io::Result<()> {
        self.profile.add(report);
        self.changed = true;
        Ok(())
    }

    fn idle(&mut self) {
        let g = reopen_generation();
        if g != self.generation {
            self.generation = g;
            self.write_said();
        }
    }

    fn finish(&mut self) {
        if self.changed {
            self.write_said();
        }
    }

    fn every_crash(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;

//! The unwind/symbolize stage: a thread's captured stack in, named frames out.
//!
//! The policy lives here: which file names a frame (the mapped file itself, a debug
//! file found by build ID in a debug directory, one found through `.gnu_debuglink` or
//! MiniDebugInfo by blazesym, or one fetched from debuginfod), and batching: every frame
//! of one file is symbolized in one call.

pub mod blaze;
pub mod debuginfod;
pub mod elf;
pub mod guard;
pub mod libc;
mod plain;
pub mod unwind;
pub mod versions;
mod warm;

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use crate::{
    capture::{pins::FilePins, records::Capture},
    model::{Frame, InlinedFrame, UnwindReport},
    sys::{
        buildid::{self, BuildId},
        files,
        procfs::Mapping,
    },
};
use blaze::Blaze;
use debuginfod::{Artifact, Debuginfod};
use elf::{ElfModule, ModuleCache};
use guard::Ready;
use unwind::{LoadedMapping, RawFrame, unwind};

/// The directories every distribution puts separate debug files in.
const SYSTEM_DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

pub struct Symbolizer {
    modules: ModuleCache,
    blaze: Blaze,
    /// Where separate debug files are looked for (`.build-id/xx/yyyy.debug` below each).
    debug_dirs: Vec<PathBuf>,
    debuginfod: Option<Debuginfod>,
    /// This report's deadline for debuginfod downloads.
    deadline: Option<Instant>,
    /// Files found by build ID for mappings whose own file is gone.
    stand_ins: HashMap<BuildId, (Arc<ElfModule>, String)>,
    /// Separate debug files found for modules (see `debug_file`).
    debug_files: HashMap<usize, DebugFileEntry>,
    /// This report's notes, and why files could not be had, by path.
    notes: Vec<String>,
    unavailable: HashMap<Arc<str>, String>,
    /// Where plain copies of compressed debug files go (see `warm`), if anywhere, and
    /// glibc's module with its copy once made (held, so no other module takes its place).
    plain_dir: Option<PathBuf>,
    plain_libc: Option<(Arc<ElfModule>, Arc<Ready>)>,
}

/// Stand-in files kept open at most.
const MAX_STAND_INS: usize = 256;

/// A module and the debug file found for it, if any.
type DebugFileEntry = (Arc<ElfModule>, Option<Arc<Ready>>);

/// (frame index, file offset)
type FrameAt = (usize, u64);

impl Symbolizer {
    /// `extra_debug_dirs` come after the system ones; debuginfod's cache is one more.
    pub fn new(extra_debug_dirs: &[PathBuf], debuginfod: Option<Debuginfod>) -> Self {
        let mut dirs: Vec<PathBuf> = SYSTEM_DEBUG_DIRS.iter().map(PathBuf::from).collect();
        dirs.extend(extra_debug_dirs.iter().cloned());
        if let Some(d) = &debuginfod {
            dirs.push(d.cache_dir().to_path_buf());
        }
        Self {
            modules: ModuleCache::new(),
            blaze: Blaze::new(&dirs),
            debug_dirs: dirs,
            debuginfod,
            deadline: None,
            stand_ins: HashMap::new(),
            debug_files: HashMap::new(),
            notes: Vec::new(),
            unavailable: HashMap::new(),
            plain_dir: None,
            plain_libc: None,
        }
    }

    /// The ELF file behind a mapping (pinned or by path), parsed once.
    pub fn module(&mut self, m: &Mapping, pins: &FilePins) -> Result<Arc<ElfModule>, String> {
        self.modules.get(m, pins)
    }

    /// The mappings of a crashed process with the files behind them, for one report;
    /// debuginfod downloads for the report share one deadline from now.
    pub fn load(&mut self, mappings: &[Mapping], pins: &FilePins) -> Vec<LoadedMapping> {
        self.deadline = self.debuginfod.as_ref().map(|d| d.deadline());
        self.notes.clear();
        self.unavailable.clear();
        mappings
            .iter()
            .map(|m| LoadedMapping {
                mapping: m.clone(),
                module: if m.is_file() {
                    self.file_module(m, pins)
                } else if &*m.path == "[vdso]" {
                    self.modules.vdso().ok()
                } else {
                    None
                },
            })
            .collect()
    }

    /// What this report's files said: stand-ins used, files not found.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// The file behind a mapping: pinned or by path; else, when it is gone, another file
    /// with the same build ID (see `stand_in`).
    fn file_module(&mut self, m: &Mapping, pins: &FilePins) -> Option<Arc<ElfModule>> {
        let why = match self.modules.get(m, pins) {
            Ok(module) => return Some(module),
            Err(why) => why,
        };
        let id = m.build_id?;
        match self.stand_in(&id, pins) {
            Some((module, from)) => {
                let note = format!(
                    "{why}; read from a file with the same build ID {} ({from})",
                    buildid::hex(id.as_bytes())
                );
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
                Some(module)
            }
            None => {
                self.unavailable.insert(
                    m.path.clone(),
                    format!(
                        "{why}; no file with its build ID {} was found (pinned copies, debug \
                         directories{})",
                        buildid::hex(id.as_bytes()),
                        if self.debuginfod.is_some() {
                            ", debuginfod"
                        } else {
                            ""
                        }
                    ),
                );
                None
            }
        }
    }

    /// A file with build ID `id`, and where it came from: a pinned copy (the same image
    /// mapped by another process, or by an earlier run), `<debug dir>/.build-id/xx/yyyy`
    /// (the file itself, as debug stores keep it beside its `.debug`), or debuginfod's
    /// `executable`. Each is checked to carry that build ID.
    fn stand_in(&mut self, id: &BuildId, pins: &FilePins) -> Option<(Arc<ElfModule>, String)> {
        if let Some(found) = self.stand_ins.get(id) {
            return Some(found.clone());
        }
        let matches = |e: &ElfModule| e.build_id.as_deref() == Some(id.as_bytes());
        let mut found = None;
        if let Some(p) = pins.by_build_id(id)
            && let Ok(e) = ElfModule::from_file(p.file.clone(), &p.path)
            && matches(&e)
        {
            found = Some((e, format!("pinned for pid {} as {}", p.pid, p.path)));
        }
        if found.is_none() {
            found = self
                .debug_dirs
                .iter()
                .filter_map(|d| buildid::executable_path(d, id.as_bytes()))
                .filter(|p| p.is_file())
                .find_map(|p| {
                    let e = ElfModule::open(&p).ok().filter(&matches)?;
                    Some((e, format!("debug directory: {}", p.display())))
                });
        }
        if found.is_none()
            && let (Some(d), Some(deadline)) = (self.debuginfod.as_mut(), self.deadline)
            && let Ok(p) = d.fetch(id.as_bytes(), Artifact::Executable, deadline)
            && let Ok(e) = ElfModule::open(&p)
            && matches(&e)
        {
            found = Some((e, format!("debuginfod: {}", p.display())));
        }
        let (e, from) = found?;
        let entry = (Arc::new(e), from);
        if self.stand_ins.len() >= MAX_STAND_INS {
            self.stand_ins.clear();
        }
        self.stand_ins.insert(*id, entry.clone());
        Some(entry)
    }

    /// One thread's frames: unwound, then symbolized.
    pub fn stack(
        &mut self,
        c: &Capture,
        loaded: &[LoadedMapping],
        pins: &FilePins,
    ) -> (Vec<Frame>, UnwindReport) {
        let unwound = unwind(c, loaded);
        let mut frames = self.symbolize(&unwound.frames, loaded, pins);
        if !unwound.outer.is_empty() {
            let first = frames.len();
            let mut outer = self.symbolize(&unwound.outer, loaded, pins);
            for (i, f) in outer.iter_mut().enumerate() {
                f.index = first + i;
            }
            outer[0].gap_before = Some(format!(
                "frames between #{} and #{first} were not copied (the stack overflowed); the \
                 outermost ones below come from the top of the stack",
                first.saturating_sub(1)
            ));
            frames.extend(outer);
        }
        (
            frames,
            UnwindReport {
                method: "DWARF CFI".into(),
                stack_bytes: c.stack.len(),
                stack_truncated: c.stack_truncated,
                stop_reason: unwound.stop,
            },
        )
    }

    /// A separate debug file for `module`, ready for blazesym: by build ID in a debug
    /// directory, through a copied file's debug link (see `guard`), or from debuginfod;
    /// else why none, where that is worth saying.
    fn debug_file(&mut self, module: &Arc<ElfModule>) -> (Option<Arc<Ready>>, Option<String>) {
        let key = Arc::as_ptr(module) as usize;
        if let Some((_, found)) = self.debug_files.get(&key) {
            return (found.clone(), None);
        }
        let mut why = None;
        let id = module.build_id.as_deref();
        let mut found: Option<(File, String)> = id.and_then(|id| {
            self.debug_dirs.iter().find_map(|d| {
                let p = buildid::debug_path(d, id)?;
                let f = files::open_plain(&p).ok()?;
                Some((f, p.display().to_string()))
            })
        });
        if found.is_none() {
            match guard::find_debuglink(&module.origin, &self.debug_dirs) {
                Ok(f) => found = f.map(|f| (f, "its debug link".to_string())),
                Err(e) => why = Some(e),
            }
        }
        if found.is_none()
            && let (Some(id), Some(d), Some(deadline)) =
                (id, self.debuginfod.as_mut(), self.deadline)
        {
            match d.fetch(id, Artifact::DebugInfo, deadline) {
                Ok(p) => {
                    found = files::open_plain(&p)
                        .ok()
                        .map(|f| (f, p.display().to_string()))
                }
                Err(e) => why = Some(e),
            }
        }
        let ready = found.and_then(|(f, origin)| {
            guard::ready(Arc::new(f), &origin)
                .map_err(|e| why = Some(format!("{e:#}")))
                .ok()
                .map(Arc::new)
        });
        if self.debug_files.len() >= MAX_STAND_INS {
            self.debug_files.clear();
        }
        // Kept with its module so the key is not reused while the entry lives.
        self.debug_files
            .insert(key, (module.clone(), ready.clone()));
        (ready, why)
    }

    fn symbolize(
        &mut self,
        raw: &[RawFrame],
        loaded: &[LoadedMapping],
        pins: &FilePins,
    ) -> Vec<Frame> {
        let mut frames: Vec<Frame> = raw
            .iter()
            .enumerate()
            .map(|(index, f)| Frame {
                index,
                address: f.address,
                module: None,
                module_offset: None,
                build_id: None,
                function: None,
                function_offset: None,
                location: None,
                inlined: vec![],
                unnamed_reason: None,
                gap_before: None,
                python: vec![],
            })
            .collect();
        // Group lookups per file so each file is symbolized in one batch.
        // file path -> (index of its mapping, [(frame index, file offset)])
        let mut per_file: HashMap<Arc<str>, (usize, Vec<FrameAt>)> = HashMap::new();
        for (i, f) in raw.iter().enumerate() {
            let Some((li, lm)) = loaded
                .iter()
                .enumerate()
                .find(|(_, lm)| lm.mapping.contains(f.lookup))
            else {
                frames[i].unnamed_reason = Some("address is in no executable mapping".into());
                continue;
            };
            let off = lm.mapping.file_offset(f.lookup);
            frames[i].module = Some(match &*lm.mapping.path {
                "//anon" | "" => "[anon]".to_string(),
                p => p.to_string(),
            });
            // Without a file, the offset that means something is the one into the region.
            frames[i].module_offset = Some(if lm.mapping.is_file() {
                off
            } else {
                f.lookup - lm.mapping.start
            });
            match &lm.module {
                Some(module) => {
                    frames[i].build_id = module.build_id_hex();
                    per_file
                        .entry(lm.mapping.path.clone())
                        .or_insert((li, vec![]))
                        .1
                        .push((i, off));
                }
                None if !lm.mapping.is_file() => {
                    frames[i].unnamed_reason = Some(match &*lm.mapping.path {
                        "//anon" | "" => format!(
                            "anonymous executable memory 0x{:x}-0x{:x} (JIT code?)",
                            lm.mapping.start, lm.mapping.end
                        ),
                        other => format!("{other} is not backed by a file"),
                    })
                }
                None => {
                    let why = match self.unavailable.get(&lm.mapping.path) {
                        Some(why) => why.clone(),
                        None => self
                            .modules
                            .get(&lm.mapping, pins)
                            .err()
                            .unwrap_or_else(|| "file unavailable".into()),
                    };
                    frames[i].unnamed_reason = Some(why);
                }
            }
        }
        for (_, (li, items)) in per_file {
            let module = loaded[li]
                .module
                .clone()
                .expect("grouped only with a module");
            let offsets: Vec<u64> = items.iter().map(|(_, o)| *o).collect();
            let (debug_file, fetch_error) = if let Some(plain) = self.plain_copy_of(&module) {
                (Some(plain), None)
            } else if module.wants_debug_file() {
                self.debug_file(&module)
            } else {
                (None, None)
            };
            let result = match &debug_file {
                Some(dbg) => {
                    let svmas: Vec<u64> = offsets
                        .iter()
                        .map(|o| module.svma_of_offset(*o).unwrap_or(0))
                        .collect();
                    self.blaze.symbolize_svmas(&dbg.path, &svmas)
                }
                None => self.blaze.symbolize_file(Path::new(&module.path), &offsets),
            };
            match result {
                Ok(syms) => {
                    for ((i, _), sym) in items.iter().zip(syms) {
                        match sym {
                            Some(s) => {
                                let f = &mut frames[*i];
                                // Report the offset from the real address, not the lookup one.
                                f.function_offset =
                                    s.offset.map(|o| o + (raw[*i].address - raw[*i].lookup));
                                f.function = Some(s.function);
                                f.location = s.location;
                                // Innermost first, as gdb lists them.
                                f.inlined = s
                                    .inlined
                                    .into_iter()
                                    .rev()
                                    .map(|(function, location)| InlinedFrame { function, location })
                                    .collect();
                            }
                            None => {
                                frames[*i].unnamed_reason = Some(match &fetch_error {
                                    Some(e) => format!("stripped, no debug file found; {e}"),
                                    None => "no symbol covers this address (stripped?)".into(),
                                })
                            }
                        }
                    }
                }
                Err(e) => {
                    for (i, _) in items {
                        frames[i].unnamed_reason = Some(format!("symbolization failed: {e}"));
                    }
                }
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mapping of a file that is gone, whose build ID is `id`.
    fn gone(id: &[u8]) -> Mapping {
        Mapping {
            start: 0x1000,
            end: 0x2000,
            offset: 0,
            dev_major: 0,
            dev_minor: 0,
            inode: 1,
            path: "/gone/app".into(),
            build_id: BuildId::new(id),
        }
    }

    #[test]
    fn a_file_that_is_gone_is_read_from_a_store_by_its_build_id() {
        let file = std::path::Path::new("/usr/bin/true");
        let id = ElfModule::open(file).unwrap().build_id.expect("a build ID");
        let store = std::env::temp_dir().join(format!("crashtrace-store-{}", std::process::id()));
        let at = buildid::executable_path(&store, &id).unwrap();
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::copy(file, &at).unwrap();

        let mut s = Symbolizer::new(std::slice::from_ref(&store), None);
        let loaded = s.load(&[gone(&id)], &FilePins::new());
        assert!(loaded[0].module.is_some());
        let notes = s.take_notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("/gone/app is gone and was not pinned in time")
                && notes[0].contains(&format!("(debug directory: {})", at.display())),
            "{notes:?}"
        );

        // Another build ID: nothing stands in, and the reason says where it looked.
        let other = [0xee; 20];
        let loaded = s.load(&[gone(&other)], &FilePins::new());
        assert!(loaded[0].module.is_none());
        assert!(s.unavailable["/gone/app"].contains("no file with its build ID eeee"));
        // A file at the store's place whose build ID differs is not taken.
        let wrong = buildid::executable_path(&store, &other).unwrap();
        std::fs::create_dir_all(wrong.parent().unwrap()).unwrap();
        std::fs::copy(file, &wrong).unwrap();
        assert!(
            s.load(&[gone(&other)], &FilePins::new())[0]
                .module
                .is_none()
        );
        let _ = std::fs::remove_dir_all(&store);
    }
}

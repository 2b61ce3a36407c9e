//! From a capture and the process's mappings to a report: unwind, then symbolize.

use std::{collections::HashMap, path::Path, sync::Arc};

use crate::{
    events::Capture,
    modules::ModuleCache,
    procmaps::Mapping,
    report::{
        CrashReport, Frame, HandlerReport, InlinedFrame, Registers, SignalReport, UnwindReport,
    },
    signals::{decode_si_code, has_fault_address, has_sender, signal_name},
    symbolize::Symbolizer,
    unwind::{LoadedMapping, unwind},
};

/// (frame index, file offset)
type FrameAt = (usize, u64);

pub struct Analyzer {
    modules: ModuleCache,
    symbolizer: Symbolizer,
}

/// A fault whose handler ran, paired with the signal that finally killed the process.
pub struct Reraise<'a> {
    pub original: &'a Capture,
    pub fatal: &'a Capture,
}

impl Analyzer {
    pub fn new(symbolizer: Symbolizer) -> Self {
        Self {
            modules: ModuleCache::new(),
            symbolizer,
        }
    }

    pub fn analyze(
        &mut self,
        c: &Capture,
        reraise: Option<&Capture>,
        mappings: &[Mapping],
        executable: Option<&str>,
    ) -> CrashReport {
        let loaded: Vec<LoadedMapping> = mappings
            .iter()
            .map(|m| LoadedMapping {
                mapping: m.clone(),
                module: m.is_file().then(|| self.modules.get(m).ok()).flatten(),
            })
            .collect();
        let unwound = unwind(c, &loaded);
        let frames = self.symbolize(&unwound.frames, &loaded);

        let signal = SignalReport {
            number: c.signo,
            name: signal_name(c.signo),
            code: c.si_code,
            code_name: decode_si_code(c.signo, c.si_code).map(|d| d.name.to_string()),
            code_description: decode_si_code(c.signo, c.si_code).map(|d| d.description.to_string()),
            fault_address: (c.has_siginfo && has_fault_address(c.signo, c.si_code))
                .then_some(c.si_addr),
            sender_pid: (c.has_siginfo && has_sender(c.si_code)).then_some(c.si_pid),
            sender_uid: (c.has_siginfo && has_sender(c.si_code)).then_some(c.si_uid),
        };
        let handler = reraise.map(|fatal| HandlerReport {
            address: c.handler,
            reraised_with: decode_si_code(fatal.signo, fatal.si_code)
                .map(|d| format!("{} {}", signal_name(fatal.signo), d.name)),
        });
        CrashReport {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            pid: c.pid,
            tid: c.tid,
            process_name: c.process_name.clone(),
            thread_name: c.thread_name.clone(),
            executable: executable
                .map(str::to_string)
                .or_else(|| (!c.exe_name.is_empty()).then(|| c.exe_name.clone())),
            parent_pid: c.parent_pid,
            parent_name: c.parent_name.clone(),
            signal,
            handler,
            registers: c.regs.as_ref().map(Registers::from),
            frames,
            unwind: UnwindReport {
                method: "DWARF CFI",
                stack_bytes: c.stack.len(),
                stack_truncated: c.stack_truncated,
                stop_reason: unwound.stop,
            },
            // Set by the caller when the report is written.
            latency_ms: 0.0,
        }
    }

    fn symbolize(
        &mut self,
        raw: &[crate::unwind::RawFrame],
        loaded: &[LoadedMapping],
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
            frames[i].module = Some(lm.mapping.path.to_string());
            frames[i].module_offset = Some(off);
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
                        "//anon" | "" => "anonymous executable memory (JIT code?)".into(),
                        other => format!("{other} is not backed by a file"),
                    })
                }
                None => {
                    let why = self
                        .modules
                        .get(&lm.mapping)
                        .err()
                        .unwrap_or_else(|| "file unavailable".into());
                    frames[i].unnamed_reason = Some(why);
                }
            }
        }
        for (_, (li, items)) in per_file {
            let module = loaded[li]
                .module
                .as_ref()
                .expect("grouped only with a module");
            let offsets: Vec<u64> = items.iter().map(|(_, o)| *o).collect();
            match self
                .symbolizer
                .symbolize_file(Path::new(&module.path), &offsets)
            {
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
                                f.inlined = s
                                    .inlined
                                    .into_iter()
                                    .map(|(function, call_location)| InlinedFrame {
                                        function,
                                        call_location,
                                    })
                                    .collect();
                            }
                            None => {
                                frames[*i].unnamed_reason =
                                    Some("no symbol covers this address (stripped?)".into())
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

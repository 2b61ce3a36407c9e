//! From a capture and the process's mappings to a report: unwind, then symbolize.

use std::{collections::HashMap, path::Path, sync::Arc};

use crashtrace_common::{FaultMaps, OomVictim, ProcessExit, VmaInfo};

use crate::{
    events::Capture,
    modules::{FilePins, ModuleCache},
    procmaps::Mapping,
    report::{
        CrashReport, Frame, HandlerReport, InlinedFrame, OomReport, Outcome, Registers,
        SignalReport, ThreadReport, UnwindReport,
    },
    signals::{decode_si_code, has_fault_address, has_sender, signal_name},
    symbolize::Symbolizer,
    unwind::{LoadedMapping, unwind},
};

/// A mapping lookup that found nothing.
const NO_VMA: VmaInfo = VmaInfo {
    start: 0,
    end: 0,
    flags: 0,
    pgoff: 0,
    found: 0,
    _pad: 0,
    name: [0; 32],
};

/// (frame index, file offset)
type FrameAt = (usize, u64);

pub struct Analyzer {
    modules: ModuleCache,
    symbolizer: Symbolizer,
    debuginfod: Option<crate::debuginfod::Debuginfod>,
    /// This report's deadline for debuginfod downloads.
    deadline: Option<std::time::Instant>,
}

/// Everything known about one crash when its report is made.
pub struct CrashInput<'a> {
    /// The capture whose stack is shown: the original fault when a handler re-raised.
    pub capture: &'a Capture,
    /// The fatal re-raise, when `capture` ran a handler first.
    pub reraise: Option<&'a Capture>,
    /// The other threads, at the group exit.
    pub threads: &'a [Capture],
    pub exit: Option<&'a ProcessExit>,
    pub mappings: &'a [Mapping],
    pub executable: Option<&'a str>,
    /// The kernel's mapping at the fault address.
    pub fault_maps: Option<&'a FaultMaps>,
    /// Set when the OOM killer chose the process.
    pub oom: Option<&'a OomVictim>,
    /// Descriptors on the files mapped, taken while the process existed.
    pub pins: &'a FilePins,
    /// The cgroup path of the process, resolved from its id.
    pub cgroup: Option<String>,
    /// The Python frames, for a Python process.
    pub python: Option<&'a crate::python::PyCrash>,
}

impl Analyzer {
    pub fn new(symbolizer: Symbolizer) -> Self {
        Self {
            modules: ModuleCache::new(),
            symbolizer,
            debuginfod: None,
            deadline: None,
        }
    }

    /// The ELF file behind a mapping (pinned or by path), parsed once.
    pub fn module(
        &mut self,
        m: &Mapping,
        pins: &FilePins,
    ) -> Result<Arc<crate::modules::ElfModule>, String> {
        self.modules.get(m, pins)
    }

    /// Fetch missing debug files from debuginfod (its cache must be a debug directory
    /// of the symbolizer).
    pub fn with_debuginfod(mut self, d: crate::debuginfod::Debuginfod) -> Self {
        self.debuginfod = Some(d);
        self
    }

    pub fn analyze(&mut self, input: &CrashInput<'_>) -> CrashReport {
        let c = input.capture;
        let loaded: Vec<LoadedMapping> = input
            .mappings
            .iter()
            .map(|m| LoadedMapping {
                mapping: m.clone(),
                module: if m.is_file() {
                    self.modules.get(m, input.pins).ok()
                } else if &*m.path == "[vdso]" {
                    self.modules.vdso().ok()
                } else {
                    None
                },
            })
            .collect();
        self.deadline = self.debuginfod.as_ref().map(|d| d.deadline());
        let (mut frames, unwind) = self.thread_stack(c, &loaded, input.pins);
        let mut threads: Vec<ThreadReport> = input
            .threads
            .iter()
            .map(|t| {
                let (frames, unwind) = self.thread_stack(t, &loaded, input.pins);
                ThreadReport {
                    tid: t.tid,
                    name: t.thread_name.clone(),
                    frames,
                    unwind,
                }
            })
            .collect();
        threads.sort_by_key(|t| t.tid);
        // The merged view: Python frames inside the native eval-loop frames running them.
        let mut python = input.python.and_then(|p| p.report());
        if let Some(py) = &mut python {
            for t in &mut py.threads {
                if t.crashing {
                    crate::python::merge(&mut frames, t);
                    t.name = Some(c.thread_name.clone());
                } else if let Some(n) = t.native_id
                    && let Some(th) = threads.iter_mut().find(|th| th.tid == n)
                {
                    crate::python::merge(&mut th.frames, t);
                    t.name = Some(th.name.clone());
                }
            }
        }

        let signal = SignalReport {
            number: c.signo,
            name: signal_name(c.signo),
            code: c.si_code,
            code_name: decode_si_code(c.signo, c.si_code).map(|d| d.name.to_string()),
            code_description: decode_si_code(c.signo, c.si_code).map(|d| d.description.to_string()),
            fault_address: (c.has_siginfo && has_fault_address(c.signo, c.si_code))
                .then_some(c.si_addr),
            // The kernel's record of the sender (from signal_generate) also covers SIGKILL,
            // which reaches the process without a siginfo.
            sender_pid: if c.sender_pid != 0 {
                Some(c.sender_pid)
            } else {
                (c.has_siginfo && has_sender(c.si_code)).then_some(c.si_pid)
            },
            sender_uid: if c.sender_pid != 0 {
                Some(c.sender_uid)
            } else {
                (c.has_siginfo && has_sender(c.si_code)).then_some(c.si_uid)
            },
            sender_name: (c.sender_pid != 0).then(|| c.sender_name.clone()),
            // After an overflow the kernel lookup went to the stack, not the fault address.
            fault_mapping: match (input.fault_maps, &c.top) {
                (Some(m), _) => Some(&m.fault),
                (None, Some(_)) => Some(&NO_VMA),
                (None, None) => None,
            }
            .and_then(|f| {
                (c.has_siginfo && has_fault_address(c.signo, c.si_code))
                    .then(|| describe_fault(c, f))
            }),
            // An OOM kill comes from the kernel, whoever's allocation triggered it.
            external: (c.sender_pid != 0 && c.sender_pid != c.pid) || input.oom.is_some(),
        };
        let handler = input.reraise.map(|fatal| HandlerReport {
            address: c.handler,
            reraised_with: decode_si_code(fatal.signo, fatal.si_code)
                .map(|d| format!("{} {}", signal_name(fatal.signo), d.name)),
        });
        let mut notes = Vec::new();
        if python.is_none()
            && let Some(v) = input
                .mappings
                .iter()
                .find_map(|m| crate::python::runtime::version_from_name(&m.path))
        {
            notes.push(if crate::python::runtime::offsets(v).is_none() {
                format!(
                    "Python {}.{}: not a version crashtrace reads; native frames only",
                    v.0, v.1
                )
            } else {
                format!(
                    "Python {}.{}: no Python frames (the interpreter crashed before crashtrace had \
                     registered it, or its state could not be read); native frames only",
                    v.0, v.1
                )
            });
        }
        let outcome = input.exit.map(outcome);
        if input.exit.is_none() {
            notes.push(
                "the process's exit was not seen in time: no outcome, and threads still \
                 running then are missing"
                    .into(),
            );
        }
        let threads_not_captured = input.exit.map_or(0, |e| e.threads_skipped + e.threads_lost);
        if let Some(e) = input.exit
            && e.threads_lost > 0
        {
            notes.push(format!(
                "{} threads lost: the ring buffer was full (raise --ring-buffer-size)",
                e.threads_lost
            ));
        }
        if let Some(e) = input.exit
            && e.threads_skipped > 0
        {
            notes.push(format!(
                "{} threads not captured: at most {} threads are captured per crash",
                e.threads_skipped,
                crashtrace_common::MAX_THREADS_PER_CRASH
            ));
        }
        CrashReport {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            pid: c.pid,
            tid: c.tid,
            process_name: c.process_name.clone(),
            thread_name: c.thread_name.clone(),
            namespace_pid: (c.ns_pid != 0 && c.ns_pid != c.pid).then_some(c.ns_pid),
            namespace_tid: (c.ns_tid != 0 && c.ns_tid != c.tid).then_some(c.ns_tid),
            container_id: input
                .cgroup
                .as_deref()
                .and_then(crate::cgroups::container_id),
            cgroup: input.cgroup.clone(),
            executable: input
                .executable
                .map(str::to_string)
                .or_else(|| (!c.exe_name.is_empty()).then(|| c.exe_name.clone())),
            parent_pid: c.parent_pid,
            parent_name: c.parent_name.clone(),
            signal,
            oom: input.oom.map(oom_report),
            handler,
            registers: c.regs.as_ref().map(Registers::from),
            instruction: c
                .code
                .as_ref()
                .zip(c.regs.as_ref())
                .and_then(|(code, r)| disassemble(code, r.rip)),
            frames,
            unwind,
            threads,
            threads_not_captured,
            outcome,
            python,
            notes,
            // Set by the caller when the report is written.
            latency_ms: 0.0,
        }
    }

    /// One thread's frames: unwound, then symbolized.
    fn thread_stack(
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
                method: "DWARF CFI",
                stack_bytes: c.stack.len(),
                stack_truncated: c.stack_truncated,
                stop_reason: unwound.stop,
            },
        )
    }

    fn symbolize(
        &mut self,
        raw: &[crate::unwind::RawFrame],
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
                    let why = self
                        .modules
                        .get(&lm.mapping, pins)
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
            // A stripped file whose debug file sits in a .build-id directory.
            let build_id = (!module.self_describing)
                .then(|| module.build_id.clone())
                .flatten();
            let mut fetch_error = None;
            let debug_file = build_id.as_deref().and_then(|id| {
                self.symbolizer.build_id_debug_file(id).or_else(|| {
                    let d = self.debuginfod.as_mut()?;
                    d.fetch(id, self.deadline?)
                        .map_err(|e| fetch_error = Some(e))
                        .ok()
                })
            });
            let result = match &debug_file {
                Some(dbg) => {
                    let svmas: Vec<u64> = offsets
                        .iter()
                        .map(|o| module.svma_of_offset(*o).unwrap_or(0))
                        .collect();
                    self.symbolizer.symbolize_svmas(dbg, &svmas)
                }
                None => self
                    .symbolizer
                    .symbolize_file(Path::new(&module.path), &offsets),
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

/// Stack guard gap below a growing stack (stack_guard_gap, 256 pages by default), plus a
/// frame's worth of slack: a fault there is the stack running out.
const STACK_GUARD_GAP: u64 = (256 + 16) * 4096;

fn perms(v: &VmaInfo) -> String {
    let f = v.flags;
    format!(
        "{}{}{}{}",
        if f & 0x1 != 0 { 'r' } else { '-' },
        if f & 0x2 != 0 { 'w' } else { '-' },
        if f & 0x4 != 0 { 'x' } else { '-' },
        if f & 0x8 != 0 { 's' } else { 'p' }
    )
}

fn vma_name(v: &VmaInfo) -> String {
    let name = crate::events::name_to_string(&v.name);
    if !name.is_empty() {
        name
    } else if v.flags & 0x100 != 0 {
        "[stack]".into()
    } else {
        "anonymous memory".into()
    }
}

/// What the fault address hit, in words: the mapping, nothing, NULL, or the stack's guard.
pub fn describe_fault(c: &Capture, f: &VmaInfo) -> String {
    let addr = c.si_addr;
    if f.found != 0 {
        return format!(
            "inside {} 0x{:x}-0x{:x} {} (offset 0x{:x} into it){}",
            vma_name(f),
            f.start,
            f.end,
            perms(f),
            addr - f.start,
            if f.flags & 0x3 == 0 {
                ": a guard region with no access"
            } else {
                ""
            }
        );
    }
    // Unmapped and right at the stack pointer, whose own page could not be read, or
    // just below it (a call's push from the lowest stack byte): the stack ran into its
    // guard gap.
    if let Some(r) = c.regs
        && ((c.sp_page_skipped && addr.abs_diff(r.rsp) <= STACK_GUARD_GAP)
            || (addr < r.rsp && r.rsp - addr <= 64))
    {
        return format!(
            "not mapped: just below the stack (rsp 0x{:x}, lowest stack page 0x{:x}) — a stack overflow",
            r.rsp, c.stack_start
        );
    }
    if addr < 0x10000 {
        return format!("not mapped: near NULL (a null pointer dereference, offset 0x{addr:x})");
    }
    "not mapped: no mapping contains this address".into()
}

/// The faulting instruction, decoded from the bytes captured at `rip`.
pub fn disassemble(code: &[u8], rip: u64) -> Option<String> {
    use iced_x86::{Decoder, DecoderOptions, Formatter as _, GasFormatter};
    let mut decoder = Decoder::with_ip(64, code, rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return Some(format!(
            "(invalid instruction: {:02x?})",
            &code[..code.len().min(8)]
        ));
    }
    let mut text = String::new();
    let mut fmt = GasFormatter::new();
    // gdb's spelling: lower-case hex.
    fmt.options_mut().set_uppercase_hex(false);
    fmt.format(&insn, &mut text);
    let bytes: Vec<String> = code[..insn.len()]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(format!("0x{rip:x}: {text}   ({})", bytes.join(" ")))
}

fn oom_report(o: &OomVictim) -> OomReport {
    // PAGE_COUNTER_MAX (no limit) is LONG_MAX pages: anything near it means none.
    let limited = o.memcg_limit_kb != 0 && o.memcg_limit_kb < 1 << 50;
    let name = crate::events::name_to_string(&o.memcg_name);
    OomReport {
        trigger_pid: o.killer_pid,
        trigger_name: crate::events::name_to_string(&o.killer_comm),
        total_vm_kb: o.total_vm_kb,
        anon_rss_kb: o.anon_rss_kb,
        file_rss_kb: o.file_rss_kb,
        shmem_rss_kb: o.shmem_rss_kb,
        swap_kb: o.swap_kb,
        memory_cgroup: (!name.is_empty()).then_some(name),
        memory_cgroup_limit_kb: limited.then_some(o.memcg_limit_kb),
        memory_cgroup_usage_kb: (o.memcg_usage_kb != 0).then_some(o.memcg_usage_kb),
    }
}

/// The process's end as wait4() and `/usr/bin/time -v` describe it.
pub fn outcome(e: &ProcessExit) -> Outcome {
    let sig = (e.exit_code & 0x7f) as i32;
    let core_dumped = e.exit_code & 0x80 != 0;
    let (status, exit_code, signal) = if sig == 0 {
        let code = ((e.exit_code >> 8) & 0xff) as i32;
        (format!("exited with status {code}"), Some(code), None)
    } else {
        (
            format!(
                "killed by {}{}",
                signal_name(sig),
                if core_dumped { " (core dumped)" } else { "" }
            ),
            None,
            Some(sig),
        )
    };
    let u = &e.usage;
    // As the kernel does for getrusage(): tick-sampled utime/stime, scaled so that they
    // add up to the precise runtime.
    let (user, system) = {
        let ticks = u.utime_ns + u.stime_ns;
        if ticks == 0 {
            (u.runtime_ns, 0)
        } else {
            let stime = (u.runtime_ns as u128 * u.stime_ns as u128 / ticks as u128) as u64;
            (u.runtime_ns - stime, stime)
        }
    };
    Outcome {
        status,
        exit_code,
        signal,
        core_dumped,
        wall_seconds: e.header.ktime_ns.saturating_sub(e.start_ns) as f64 / 1e9,
        user_seconds: user as f64 / 1e9,
        system_seconds: system as f64 / 1e9,
        max_rss_kb: e.maxrss_kb,
        minor_faults: u.min_flt,
        major_faults: u.maj_flt,
        voluntary_context_switches: u.nvcsw,
        involuntary_context_switches: u.nivcsw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crashtrace_common::{RecordHeader, Usage};

    fn vma(start: u64, end: u64, flags: u64, name: &str) -> VmaInfo {
        let mut v = VmaInfo {
            start,
            end,
            flags,
            found: 1,
            ..Default::default()
        };
        v.name[..name.len()].copy_from_slice(name.as_bytes());
        v
    }

    #[test]
    fn describes_fault_addresses() {
        let buf = crate::events::tests::record_bytes(|_| {}, &[]);
        let Ok(crate::events::Event::Signal(c)) = crate::events::decode(&buf) else {
            panic!()
        };
        let at = |addr: u64, skipped: bool| {
            let mut c = (*c).clone();
            c.si_addr = addr;
            c.sp_page_skipped = skipped;
            c
        };
        let none = VmaInfo::default();
        assert!(describe_fault(&at(0, false), &none).contains("near NULL"));
        let rsp = c.regs.unwrap().rsp;
        assert!(describe_fault(&at(rsp - 8, true), &none).contains("stack overflow"));
        // sp on the lowest stack byte, a call's push faulting below it.
        assert!(describe_fault(&at(rsp - 8, false), &none).contains("stack overflow"));
        assert!(describe_fault(&at(rsp - 0x10000, false), &none).contains("no mapping contains"));
        assert!(describe_fault(&at(0x5000_0000, true), &none).contains("no mapping contains"));
        assert_eq!(
            describe_fault(&at(0x4010, false), &vma(0x4000, 0x8000, 0x5, "libfoo.so")),
            "inside libfoo.so 0x4000-0x8000 r-xp (offset 0x10 into it)"
        );
    }

    #[test]
    fn disassembles_the_faulting_store() {
        // movl $0x2a,(%rdi) ; ret
        let code = [0xc7, 0x07, 0x2a, 0, 0, 0, 0xc3];
        let text = disassemble(&code, 0x1000).unwrap();
        assert_eq!(text, "0x1000: movl $0x2a,(%rdi)   (c7 07 2a 00 00 00)");
        assert!(disassemble(&[0x0f, 0x0b], 0).unwrap().contains("ud2"));
    }

    #[test]
    fn outcome_of_a_signal_death() {
        let e = ProcessExit {
            header: RecordHeader {
                ktime_ns: 3_500_000_000,
                ..Default::default()
            },
            exit_code: 0x8b,
            start_ns: 1_000_000_000,
            maxrss_kb: 2048,
            usage: Usage {
                utime_ns: 3,
                stime_ns: 1,
                runtime_ns: 2_000_000_000,
                min_flt: 10,
                ..Default::default()
            },
            ..Default::default()
        };
        let o = outcome(&e);
        assert_eq!(o.status, "killed by SIGSEGV (core dumped)");
        assert_eq!(
            (o.signal, o.exit_code, o.core_dumped),
            (Some(11), None, true)
        );
        assert!((o.wall_seconds - 2.5).abs() < 1e-9);
        assert!((o.user_seconds - 1.5).abs() < 1e-9 && (o.system_seconds - 0.5).abs() < 1e-9);
        let o = outcome(&ProcessExit {
            exit_code: 3 << 8,
            ..Default::default()
        });
        assert_eq!(
            (o.status.as_str(), o.exit_code),
            ("exited with status 3", Some(3))
        );
    }
}

//! CPython, read from outside the process: the Python frames the eBPF program copied at a
//! crash, turned into a faulthandler-style traceback per thread.

pub mod interest;
pub mod layouts;
pub mod linetable;
pub mod registry;
pub mod runtime;

use crashtrace_common::{
    PY_FRAME_ENTRY, PY_FRAME_SHIM, PY_THREAD_CRASHING, PY_THREAD_GIL, PY_THREAD_TRUNCATED,
};

use crate::{
    assemble::PyRecords,
    model::{Frame, PyFrameReport, PyThreadReport, PythonReport, ThreadReport},
};

/// The tracebacks of a crashed process, from what the eBPF program sent.
pub struct Tracebacks<'a>(pub &'a PyRecords);

impl Tracebacks<'_> {
    pub fn report(&self) -> Option<PythonReport> {
        let first = self.0.threads.first()?;
        let version = ((first.version >> 8) as u8, first.version as u8);
        let adaptive = layouts::offsets(version).map_or(0, |o| o.co_adaptive);
        let mut threads: Vec<PyThreadReport> = self
            .0
            .threads
            .iter()
            .map(|t| PyThreadReport {
                thread_id: format!("0x{:016x}", t.thread_id),
                native_id: (t.native_id != 0).then_some(t.native_id),
                crashing: t.flags & PY_THREAD_CRASHING != 0,
                name: None,
                gil: (layouts::offsets(version).map(|o| o.gil_holder)
                    != Some(crashtrace_common::PY_NONE))
                .then_some(t.flags & PY_THREAD_GIL != 0),
                truncated: t.flags & PY_THREAD_TRUNCATED != 0,
                frames: {
                    let raw = &t.frames[..(t.nframes as usize).min(t.frames.len())];
                    raw.iter()
                        .enumerate()
                        .filter(|(_, f)| f.flags & PY_FRAME_SHIM == 0)
                        .map(|(i, f)| {
                            // The first (outermost) Python frame of an eval-loop
                            // activation: marked in 3.11, followed by a C-stack shim in
                            // 3.12+; in 3.10 every frame has an activation of its own.
                            let entry = f.flags & PY_FRAME_ENTRY != 0
                                || version < (3, 11)
                                || raw.get(i + 1).is_some_and(|n| n.flags & PY_FRAME_SHIM != 0);
                            let flags = if entry { PY_FRAME_ENTRY } else { 0 };
                            self.frame(version, adaptive, f.code, f.pos, flags)
                        })
                        .collect()
                },
            })
            .collect();
        // The crashing thread first, as faulthandler prints the current thread first.
        threads.sort_by_key(|t| !t.crashing);
        Some(PythonReport {
            version: format!("{}.{}", version.0, version.1),
            threads,
        })
    }

    fn frame(
        &self,
        version: (u8, u8),
        adaptive: u32,
        code: u64,
        pos: u64,
        flags: u32,
    ) -> PyFrameReport {
        let Some(c) = self.0.codes.get(&code) else {
            return PyFrameReport {
                function: "???".into(),
                file: "???".into(),
                line: None,
                entry: flags & PY_FRAME_ENTRY != 0,
            };
        };
        let units = runtime::position_units(version, code, pos, adaptive);
        let table = &c.linetable[..(c.linetable_len as usize).min(c.linetable.len())];
        let line = linetable::line_for(version, table, c.firstlineno, units);
        let cut = c.filename_len as usize == c.filename.len();
        let file = decode_str(&c.filename, c.filename_len, c.filename_kind);
        PyFrameReport {
            function: decode_str(&c.name, c.name_len, c.name_kind),
            // A long path keeps its tail; say it was cut.
            file: if cut { format!("...{file}") } else { file },
            line,
            entry: flags & PY_FRAME_ENTRY != 0,
        }
    }
}

/// A CPython str's characters as copied: one, two or four bytes each.
pub fn decode_str(bytes: &[u8], len: u32, kind: u32) -> String {
    let b = &bytes[..(len as usize).min(bytes.len())];
    match kind {
        1 => b.iter().map(|&c| c as char).collect(),
        2 => b
            .chunks_exact(2)
            .map(|c| char::from_u32(u16::from_le_bytes([c[0], c[1]]) as u32).unwrap_or('\u{fffd}'))
            .collect(),
        4 => b
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}')
            })
            .collect(),
        _ => "???".into(),
    }
}

/// Annotates each native eval-loop frame (`_PyEval_EvalFrameDefault`) with the Python
/// frames it was running: the Python stack, innermost first, cut after each entry frame,
/// goes to the eval frames in the same order.
fn merge(native: &mut [Frame], python: &PyThreadReport) {
    let mut groups = python.frames.split_inclusive(|f| f.entry);
    for f in native.iter_mut() {
        let is_eval = f
            .function
            .as_deref()
            .is_some_and(|n| n == "_PyEval_EvalFrameDefault");
        if is_eval {
            match groups.next() {
                Some(g) => f.python = g.to_vec(),
                None => break,
            }
        }
    }
}

/// The merged view: each thread's Python frames inside the native eval-loop frames
/// running them, and each Python thread named after its OS thread.
pub fn merge_all(
    py: &mut PythonReport,
    crashing: (&mut [Frame], &str),
    threads: &mut [ThreadReport],
) {
    for t in &mut py.threads {
        if t.crashing {
            merge(crashing.0, t);
            t.name = Some(crashing.1.to_string());
        } else if let Some(n) = t.native_id
            && let Some(th) = threads.iter_mut().find(|th| th.tid == n)
        {
            merge(&mut th.frames, t);
            t.name = Some(th.name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strings_of_every_width() {
        use super::decode_str;
        assert_eq!(decode_str(b"main", 4, 1), "main");
        assert_eq!(decode_str(&[0xe9, b'x'], 2, 1), "éx");
        let s: Vec<u8> = "日本"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(decode_str(&s, s.len() as u32, 2), "日本");
        let s: Vec<u8> = "🐍"
            .chars()
            .flat_map(|c| (c as u32).to_le_bytes())
            .collect();
        assert_eq!(decode_str(&s, 4, 4), "🐍");
        assert_eq!(decode_str(b"xx", 2, 0), "???");
    }
}

//! Python frame and code-object records of a crash, in any combination, to tracebacks.
#![no_main]

use crashtrace::{
    assemble::PyRecords,
    capture::records::{Event, decode},
    python::Tracebacks,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Records one after another, each after a 2-byte length.
    let mut py = PyRecords::default();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        match decode(&rest[2..2 + n]) {
            Ok(Event::PyThread(t)) => py.add_thread(*t),
            Ok(Event::PyCode(c)) => py.add_code(*c),
            _ => {}
        }
        rest = &rest[2 + n..];
    }
    let _ = Tracebacks(&py).report();
    let _ = crashtrace::python::decode_str(data, data.len() as u32, u32::from(data.first().copied().unwrap_or(1)));
});

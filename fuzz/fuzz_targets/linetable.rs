//! CPython line tables copied out of a process: every version's format.
#![no_main]

use crashtrace::python::linetable::line_for;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let minor = 10 + data[0] % 4;
    let first = i32::from_le_bytes(data[1..5].try_into().unwrap());
    let unit = i32::from_le_bytes(data[5..9].try_into().unwrap());
    let _ = line_for((3, minor), &data[9..], first, unit);
});

//! Ring-buffer record decoding: any bytes the kernel side could hand over.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = crashtrace::capture::records::decode(data);
});

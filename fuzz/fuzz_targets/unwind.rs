//! Unwinding arbitrary stacks and registers through a real module (this program itself).
#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use crashtrace::{
    capture::records::Capture,
    symbolize::{elf::ElfModule, unwind::{LoadedMapping, unwind}},
    sys::procfs,
};
use crashtrace_common::UserRegs;
use libfuzzer_sys::fuzz_target;

fn loaded() -> &'static Vec<LoadedMapping> {
    static L: OnceLock<Vec<LoadedMapping>> = OnceLock::new();
    L.get_or_init(|| {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let module = Arc::new(ElfModule::open(&exe).unwrap());
        procfs::read_maps("self")
            .unwrap()
            .into_iter()
            .map(|m| LoadedMapping {
                module: (*m.path == *exe.to_string_lossy()).then(|| module.clone()),
                mapping: m,
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        return;
    }
    let l = loaded();
    let word = |i: usize| u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().unwrap());
    // Aim the instruction pointer into the code of a mapping, chosen by the input.
    let code: Vec<_> = l.iter().filter(|m| m.module.is_some()).collect();
    let m = &code[(word(0) as usize) % code.len()].mapping;
    let stack_start = 0x7ff0_0000_0000u64;
    let regs = UserRegs {
        rip: m.start + word(1) % (m.end - m.start),
        rsp: stack_start + (word(2) % 64) * 8,
        rbp: stack_start + (word(2) >> 8) % 4096,
        ..Default::default()
    };
    let c = Capture {
        regs: Some(regs),
        stack_start,
        stack: Bytes::copy_from_slice(&data[24..]),
        top: (data.len() > 64).then(|| (stack_start + 0x10_0000, Bytes::copy_from_slice(&data[24..64]))),
        ..Default::default()
    };
    let _ = unwind(&c, l);
});

//! A kernel field offset written into an instruction of the eBPF object before it is
//! loaded: the one relocation of the CO-RE kind crashtrace makes itself (Rust eBPF
//! programs carry none). Every other offset is read from the configuration at run time;
//! this one is the first load of `sched_process_exit`, run for every exit on the machine,
//! where that read is a cache miss in a fork+exec storm (`cargo xtask bench --events`:
//! 114 and 126 ns above the empty program with it, 43 and 56 without).
//!
//! The instruction format is fixed (8 bytes: opcode, registers, a 16-bit offset, a 32-bit
//! immediate), so it is read here in place; the `object` crate finds the program's bytes.

use anyhow::{Result, bail};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// eBPF's class of memory loads into a register (`BPF_LDX | BPF_MEM`, any size).
const LDX_MEM: u8 = 0x61 & 0xe7;

/// An ELF object in memory aligned for the ELF reader (eight bytes), as
/// `include_bytes_aligned!` aligns the built-in one.
pub struct Aligned {
    words: Vec<u64>,
    len: usize,
}

impl Aligned {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes of the words' memory, initialised, alive as long as self.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.len) }
    }
}

/// A copy of `elf` in which the memory load of program `program` whose offset is
/// `placeholder` loads from `offset` instead. There must be exactly one such load.
pub fn field_offset(elf: &[u8], program: &str, placeholder: i16, offset: u32) -> Result<Aligned> {
    let Ok(new) = i16::try_from(offset) else {
        bail!("the field offset {offset} for {program} is beyond what one load can reach");
    };
    let file = object::File::parse(elf)?;
    let Some(sym) = file.symbols().find(|s| s.name() == Ok(program)) else {
        bail!("program {program} missing from the eBPF object");
    };
    let Some(section) = sym
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
    else {
        bail!("program {program} has no section in the eBPF object");
    };
    let Some((section_at, section_len)) = section.file_range() else {
        bail!("program {program}'s section has no bytes in the eBPF object");
    };
    // In a relocatable object a symbol's value is its offset in its section.
    let (start, len) = (sym.address(), sym.size());
    if start % 8 != 0 || start.checked_add(len).is_none_or(|end| end > section_len) {
        bail!("program {program} lies outside its section in the eBPF object");
    }
    let first = (section_at + start) as usize;
    let mut words = vec![0u64; elf.len().div_ceil(8)];
    // SAFETY: the words hold at least elf.len() bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), elf.len()) };
    out.copy_from_slice(elf);
    let mut found = vec![];
    for at in (first..first + len as usize).step_by(8) {
        let insn = &out[at..at + 8];
        let off = i16::from_le_bytes([insn[2], insn[3]]);
        if insn[0] & 0xe7 == LDX_MEM && off == placeholder {
            found.push(at);
        }
    }
    let [at] = found[..] else {
        bail!(
            "program {program} has {} loads at the placeholder offset {placeholder}, not one",
            found.len()
        );
    };
    out[at + 2..at + 4].copy_from_slice(&new.to_le_bytes());
    Ok(Aligned {
        words,
        len: elf.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{Object, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };

    /// One eBPF instruction's bytes.
    fn insn(op: u8, regs: u8, off: i16, imm: i32) -> [u8; 8] {
        let mut b = [op, regs, 0, 0, 0, 0, 0, 0];
        b[2..4].copy_from_slice(&off.to_le_bytes());
        b[4..].copy_from_slice(&imm.to_le_bytes());
        b
    }

    /// An object with two programs in one section: `other` first, then `prog`.
    fn object_with(other: &[[u8; 8]], prog: &[[u8; 8]]) -> Vec<u8> {
        let mut o = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
        let sec = o.add_section(vec![], b"tp_btf/x".to_vec(), SectionKind::Text);
        let mut add = |name: &str, code: &[[u8; 8]]| {
            let bytes: Vec<u8> = code.iter().flatten().copied().collect();
            let at = o.append_section_data(sec, &bytes, 8);
            o.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value: at,
                size: bytes.len() as u64,
                kind: SymbolKind::Text,
                scope: SymbolScope::Dynamic,
                weak: false,
                section: SymbolSection::Section(sec),
                flags: SymbolFlags::None,
            });
        };
        add("other", other);
        add("prog", prog);
        o.write().unwrap()
    }

    /// The offsets of every instruction of `name`, after the patch.
    fn offsets(elf: &[u8], name: &str) -> Vec<i16> {
        let f = object::File::parse(elf).unwrap();
        let s = f.symbols().find(|s| s.name() == Ok(name)).unwrap();
        let sec = f.section_by_index(s.section_index().unwrap()).unwrap();
        let data = sec.data().unwrap();
        data[s.address() as usize..(s.address() + s.size()) as usize]
            .chunks(8)
            .map(|i| i16::from_le_bytes([i[2], i[3]]))
            .collect()
    }

    const P: i16 = 0x7ffc;

    #[test]
    fn the_one_load_at_the_placeholder_gets_the_offset() {
        // ldxdw r1, [r1+0]; ldxw r0, [r1+P]; exit. The other program's load at P is not
        // the one asked for and stays.
        let prog = [
            insn(0x79, 0x11, 0, 0),
            insn(0x61, 0x10, P, 0),
            insn(0x95, 0, 0, 0),
        ];
        let elf = object_with(&[insn(0x61, 0x10, P, 0), insn(0x95, 0, 0, 0)], &prog);
        let got = field_offset(&elf, "prog", P, 1164).unwrap();
        assert_eq!(offsets(got.bytes(), "prog"), [0, 1164, 0]);
        assert_eq!(offsets(got.bytes(), "other"), [P, 0]);
        assert_eq!(got.bytes().len(), elf.len());
        assert_eq!(got.bytes().as_ptr() as usize % 8, 0);
    }

    #[test]
    fn anything_but_exactly_one_such_load_is_an_error() {
        // (what prog holds, the offset asked for, the error's words)
        let store = insn(0x63, 0x01, P, 0); // stxw [r1+P], r0: not a load
        let cases: [(&[[u8; 8]], u32, &str); 4] = [
            (&[insn(0x61, 0x10, 8, 0)], 1164, "0 loads"),
            (&[store], 1164, "0 loads"),
            (
                &[insn(0x61, 0x10, P, 0), insn(0x69, 0x10, P, 0)],
                1164,
                "2 loads",
            ),
            (&[insn(0x61, 0x10, P, 0)], 40_000, "beyond what one load"),
        ];
        for (prog, offset, words) in cases {
            let elf = object_with(&[insn(0x95, 0, 0, 0)], prog);
            let err = field_offset(&elf, "prog", P, offset)
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(words)),
                "{err:?}: {words}"
            );
        }
        let elf = object_with(&[], &[insn(0x61, 0x10, P, 0)]);
        assert!(field_offset(&elf, "missing", P, 8).is_err());
    }

    #[test]
    fn the_built_object_has_the_placeholder_load() {
        let got = field_offset(
            super::super::loader::EBPF_OBJECT,
            "sched_process_exit",
            crashtrace_common::EXIT_CODE_PLACEHOLDER,
            1164,
        );
        assert!(got.is_ok(), "{:?}", got.err());
    }
}

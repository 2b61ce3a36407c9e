//! The fault in words: what the address hit, and the instruction that faulted.

use crashtrace_common::VmaInfo;

use crate::capture::records::{Capture, name_to_string};

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
    let name = name_to_string(&v.name);
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
        let into = addr.wrapping_sub(f.start);
        let file = if f.has_file != 0 {
            // Where in the file the address falls, against the file's size at the fault:
            // past its end is a file truncated under its mapping (SIGBUS).
            let at = (f.pgoff << 12).wrapping_add(into);
            if at >= f.file_size {
                format!(
                    "; file offset 0x{at:x}, beyond the end of the file, which was {} bytes at \
                     the fault (truncated under its mapping?)",
                    f.file_size
                )
            } else {
                format!("; file offset 0x{at:x} of {} bytes", f.file_size)
            }
        } else {
            String::new()
        };
        return format!(
            "inside {} 0x{:x}-0x{:x} {} (offset 0x{into:x} into it{file}){}",
            vma_name(f),
            f.start,
            f.end,
            perms(f),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let buf = crate::capture::records::tests::record_bytes(|_| {}, &[]);
        let Ok(crate::capture::records::Event::Signal(c)) = crate::capture::records::decode(&buf)
        else {
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
            describe_fault(&at(0x4010, false), &vma(0x4000, 0x8000, 0x5, "")),
            "inside anonymous memory 0x4000-0x8000 r-xp (offset 0x10 into it)"
        );
        // A file mapping: the offset in the file against the file's size.
        let mut file = vma(0x4000, 0x8000, 0x9, "data.bin");
        file.has_file = 1;
        file.pgoff = 2;
        file.file_size = 0x3000;
        assert_eq!(
            describe_fault(&at(0x4010, false), &file),
            "inside data.bin 0x4000-0x8000 r--s (offset 0x10 into it; file offset 0x2010 of \
             12288 bytes)"
        );
        assert_eq!(
            describe_fault(&at(0x5008, false), &file),
            "inside data.bin 0x4000-0x8000 r--s (offset 0x1008 into it; file offset 0x3008, \
             beyond the end of the file, which was 12288 bytes at the fault (truncated under \
             its mapping?))"
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
}

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

const BUS_ADRALN: i32 = 1;
const BUS_ADRERR: i32 = 2;
const BUS_OBJERR: i32 = 3;
const BUS_MCEERR_AR: i32 = 4;
const BUS_MCEERR_AO: i32 = 5;
/// A tmpfs this close to full (in pages) cannot be told from a full one: the faulting
/// page is what did not fit.
const TMPFS_SLACK_PAGES: u64 = 16;

fn mib(pages: u64) -> String {
    format!("{:.1} MiB", pages as f64 * 4096.0 / (1 << 20) as f64)
}

/// Why a SIGBUS happened, in one line, from its code and the mapping it hit: PyTorch
/// blames shared memory for every SIGBUS, and most are something else.
pub fn bus_cause(c: &Capture, f: Option<&VmaInfo>) -> Option<String> {
    if c.signo != libc::SIGBUS || !c.has_siginfo {
        return None;
    }
    let file = f.filter(|f| f.found != 0 && f.has_file != 0);
    Some(match c.si_code {
        BUS_MCEERR_AR | BUS_MCEERR_AO => format!(
            "a hardware memory error (machine check) in the page at 0x{:x}: the memory failed, not the program; look at the host's EDAC and mcelog counters",
            c.si_addr
        ),
        BUS_ADRALN => "a misaligned access the CPU refused".into(),
        BUS_OBJERR => "an object-specific hardware error".into(),
        BUS_ADRERR => {
            let f = file?;
            let name = vma_name(f);
            let at = (f.pgoff << 12).wrapping_add(c.si_addr.wrapping_sub(f.start));
            let tmpfs = f.fs_magic == crashtrace_common::TMPFS_MAGIC;
            if at >= f.file_size {
                format!(
                    "a read past the end of {name}: file offset 0x{at:x}, but the file is {} bytes (it was truncated under its mapping){}",
                    f.file_size,
                    if tmpfs {
                        ", not shared memory running out"
                    } else {
                        ""
                    }
                )
            } else if tmpfs
                && f.fs_blocks > 0
                && f.fs_blocks_used + TMPFS_SLACK_PAGES >= f.fs_blocks
            {
                format!(
                    "shared memory exhausted: the tmpfs holding {name} (/dev/shm or another) is full, {} of {} used; DataLoader workers and NCCL keep tensors there, and a container's /dev/shm is 64 MiB unless raised",
                    mib(f.fs_blocks_used),
                    mib(f.fs_blocks)
                )
            } else if tmpfs {
                format!(
                    "a fault in {name} on tmpfs ({} of {} used) that the kernel could not back",
                    mib(f.fs_blocks_used),
                    mib(f.fs_blocks)
                )
            } else {
                return None;
            }
        }
        _ => return None,
    })
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
    fn sigbus_causes_in_one_line() {
        let buf = crate::capture::records::tests::record_bytes(|_| {}, &[]);
        let Ok(crate::capture::records::Event::Signal(c)) = crate::capture::records::decode(&buf)
        else {
            panic!()
        };
        let bus = |code: i32, addr: u64| {
            let mut c = (*c).clone();
            c.signo = libc::SIGBUS;
            c.si_code = code;
            c.si_addr = addr;
            c.has_siginfo = true;
            c
        };
        let mut shm = vma(0x10000, 0x20000, 0xb, "torch_1234_567");
        shm.has_file = 1;
        shm.file_size = 0x8000;
        shm.fs_magic = crashtrace_common::TMPFS_MAGIC;
        shm.fs_blocks = 16384;
        shm.fs_blocks_used = 16380;
        let full = bus_cause(&bus(BUS_ADRERR, 0x13000), Some(&shm)).unwrap();
        assert!(full.starts_with("shared memory exhausted"), "{full}");
        assert!(full.contains("full, 64.0 MiB of 64.0 MiB used"), "{full}");
        let past = bus_cause(&bus(BUS_ADRERR, 0x1f000), Some(&shm)).unwrap();
        assert!(
            past.starts_with("a read past the end of torch_1234_567"),
            "{past}"
        );
        assert!(past.ends_with("not shared memory running out"), "{past}");
        shm.fs_blocks_used = 100;
        let room = bus_cause(&bus(BUS_ADRERR, 0x13000), Some(&shm)).unwrap();
        assert!(
            room.contains("on tmpfs (0.4 MiB of 64.0 MiB used)"),
            "{room}"
        );
        let hw = bus_cause(&bus(BUS_MCEERR_AR, 0x7000), None).unwrap();
        assert!(hw.starts_with("a hardware memory error"), "{hw}");
        assert_eq!(bus_cause(&bus(BUS_ADRERR, 0x7000), None), None);
        let mut segv = bus(BUS_ADRERR, 0x13000);
        segv.signo = libc::SIGSEGV;
        assert_eq!(bus_cause(&segv, Some(&shm)), None);
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

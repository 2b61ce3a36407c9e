//! Unwinding a captured stack with DWARF CFI (framehop), so code built without frame
//! pointers (Debian's libc, CPython, most wheels) unwinds correctly.

use std::sync::Arc;

use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};

use super::elf::{ElfModule, FileSlice};
use crate::{capture::records::Capture, sys::procfs::Mapping};

/// Frames beyond this are not unwound (a runaway loop, or a very deep recursion).
pub const MAX_FRAMES: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The instruction pointer (frame 0) or a return address.
    pub address: u64,
    /// The address to symbolize: return addresses point after the call, so one less.
    pub lookup: u64,
    pub is_return: bool,
}

#[derive(Clone, Debug)]
pub struct Unwound {
    pub frames: Vec<RawFrame>,
    /// Why the walk ended.
    pub stop: String,
    /// After a stack overflow: the outermost frames, recovered from the copied top of the
    /// stack; the frames between the two copies are unknown.
    pub outer: Vec<RawFrame>,
}

/// A module ready for unwinding: a mapping and the file behind it.
pub struct LoadedMapping {
    pub mapping: Mapping,
    pub module: Option<Arc<ElfModule>>,
}

pub fn unwind(capture: &Capture, mappings: &[LoadedMapping]) -> Unwound {
    let mut u = unwind_inner(capture, mappings);
    if let Some((start, top)) = &capture.top {
        u.outer = scan_outer(mappings, *start, top);
    }
    u
}

/// The outermost frames of an overflowed stack, from its copied top: the lowest slot
/// holding a return address (just after a call instruction) from which unwinding reaches
/// the outermost frame (as its unwind information says, not by reading a zero).
fn scan_outer(mappings: &[LoadedMapping], start: u64, top: &[u8]) -> Vec<RawFrame> {
    let unwinder = build_unwinder(mappings);
    let mut read = |addr: u64| -> Result<u64, ()> {
        let off = addr.checked_sub(start).ok_or(())? as usize;
        let b = top.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
        Ok(u64::from_le_bytes(b.try_into().unwrap()))
    };
    let mut cache = CacheX86_64::<_>::new();
    for slot in (start..start + top.len() as u64).step_by(8) {
        let Ok(ret) = read(slot) else { continue };
        if !after_call(mappings, ret) {
            continue;
        }
        let Some(mut addr) = FrameAddress::from_return_address(ret) else {
            continue;
        };
        let mut regs = UnwindRegsX86_64::new(ret, slot + 8, 0);
        let mut frames = Vec::new();
        let reached_root = loop {
            frames.push(RawFrame {
                address: addr.address(),
                lookup: addr.address_for_lookup(),
                is_return: true,
            });
            if frames.len() > 128 {
                break false;
            }
            match unwinder.unwind_frame(addr, &mut regs, &mut cache, &mut read) {
                Ok(Some(r)) => match FrameAddress::from_return_address(r) {
                    Some(a) => addr = a,
                    // A zero read from the stack proves nothing: a slot of stale data
                    // inside a frame can lead there.
                    None => break false,
                },
                // The unwind information itself says this is the outermost frame
                // (`_start`'s undefined return address). Outside every module framehop
                // falls back to frame pointers and takes rbp 0 for the end: a stale
                // return address into freed code leads there, so it proves nothing.
                Ok(None) => break code_at(mappings, addr.address_for_lookup(), 1).is_some(),
                Err(_) => break false,
            }
        };
        if reached_root && frames.len() >= 2 {
            return frames;
        }
    }
    vec![]
}

/// Whether the instruction before `ret` is a call: `call rel32`, or `call r/m` with a
/// register, [reg], [reg+disp8], [rip+disp32] or [reg+disp32] operand.
fn after_call(mappings: &[LoadedMapping], ret: u64) -> bool {
    let Some(code) = ret.checked_sub(7).and_then(|a| code_at(mappings, a, 7)) else {
        return false;
    };
    let call_rm = |i: usize| code[i] == 0xff && code[i + 1] & 0x38 == 0x10;
    code[2] == 0xe8 || call_rm(5) || call_rm(4) || call_rm(1) || call_rm(0)
}

fn build_unwinder(mappings: &[LoadedMapping]) -> UnwinderX86_64<FileSlice> {
    let mut unwinder = UnwinderX86_64::<FileSlice>::new();
    for lm in mappings {
        if let Some(module) = &lm.module
            && let Some(m) = framehop_module(&lm.mapping, module)
        {
            unwinder.add_module(m);
        }
    }
    unwinder
}

fn unwind_inner(capture: &Capture, mappings: &[LoadedMapping]) -> Unwound {
    let Some(regs) = capture.regs else {
        return Unwound {
            frames: vec![],
            stop: "the thread's registers could not be read".into(),
            outer: vec![],
        };
    };
    let unwinder = build_unwinder(mappings);
    let stack = &capture.stack;
    let start = capture.stack_start;
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        let off = addr.checked_sub(start).ok_or(())? as usize;
        let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
        Ok(u64::from_le_bytes(bytes.try_into().unwrap()))
    };

    let mut frames = Vec::new();
    let mut pc = regs.rip;
    let mut sp = regs.rsp;
    // A call through a bad pointer leaves rip outside any code, with the caller's return
    // address on top of the stack; so does a crash at the start of JIT code, which has no
    // unwind information. Report rip, then continue from the caller.
    let in_code = |a: u64| {
        mappings
            .iter()
            .any(|lm| lm.module.is_some() && lm.mapping.contains(a))
    };
    if !in_code(pc)
        && let Ok(ret) = read_stack(sp)
        && in_code(ret)
    {
        frames.push(RawFrame {
            address: pc,
            lookup: pc,
            is_return: false,
        });
        pc = ret;
        sp += 8;
        // From here on `pc` is a return address: framehop must treat it as one.
        return finish(
            &unwinder,
            mappings,
            frames,
            FrameAddress::from_return_address(pc),
            UnwindRegsX86_64::new(pc, sp, regs.rbp),
            &mut read_stack,
        );
    }
    finish(
        &unwinder,
        mappings,
        frames,
        Some(FrameAddress::from_instruction_pointer(pc)),
        UnwindRegsX86_64::new(pc, sp, regs.rbp),
        &mut read_stack,
    )
}

/// x86-64 `__restore_rt`: `mov $15,%rax` (rt_sigreturn); `syscall`. A handler returns here.
const SIGRETURN_TRAMPOLINE: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
/// Offset of `uc_mcontext.gregs` in `struct ucontext` (uc_flags, uc_link, uc_stack first).
const UC_GREGS: u64 = 40;
const REG_RBP: u64 = 10;
const REG_RSP: u64 = 15;
const REG_RIP: u64 = 16;

/// The bytes at `addr`, read from the file behind its mapping.
fn code_at(mappings: &[LoadedMapping], addr: u64, len: usize) -> Option<&[u8]> {
    let lm = mappings.iter().find(|lm| lm.mapping.contains(addr))?;
    let module = lm.module.as_ref()?;
    let off = lm.mapping.file_offset(addr) as usize;
    module.map.get(off..off + len)
}

fn finish(
    unwinder: &UnwinderX86_64<FileSlice>,
    mappings: &[LoadedMapping],
    mut frames: Vec<RawFrame>,
    first: Option<FrameAddress>,
    mut regs: UnwindRegsX86_64,
    read_stack: &mut impl FnMut(u64) -> Result<u64, ()>,
) -> Unwound {
    let mut cache = CacheX86_64::<_>::new();
    let Some(mut addr) = first else {
        return Unwound {
            outer: vec![],
            frames,
            stop: "the return address is 0".into(),
        };
    };
    loop {
        frames.push(RawFrame {
            address: addr.address(),
            lookup: addr.address_for_lookup(),
            is_return: matches!(addr, FrameAddress::ReturnAddress(_)),
        });
        if frames.len() >= MAX_FRAMES {
            return Unwound {
                outer: vec![],
                frames,
                stop: format!("stopped after {MAX_FRAMES} frames"),
            };
        }
        // A signal handler's frame returns into the sigreturn trampoline, whose caller is
        // whatever the signal interrupted: its registers are in the ucontext the kernel
        // pushed, right where the stack pointer is now. (framehop does not follow signal
        // frames, so this is done here.)
        if let FrameAddress::ReturnAddress(ra) = addr
            && code_at(mappings, ra.get(), SIGRETURN_TRAMPOLINE.len())
                == Some(&SIGRETURN_TRAMPOLINE[..])
        {
            // This frame is the trampoline itself: look it up at its own address.
            if let Some(f) = frames.last_mut() {
                f.lookup = f.address;
            }
            let uc = regs.sp();
            let mut greg = |i: u64| read_stack(uc + UC_GREGS + i * 8);
            match (greg(REG_RIP), greg(REG_RSP), greg(REG_RBP)) {
                (Ok(rip), Ok(rsp), Ok(rbp)) if rip != 0 => {
                    regs = UnwindRegsX86_64::new(rip, rsp, rbp);
                    // The interrupted instruction, not a return address.
                    addr = FrameAddress::from_instruction_pointer(rip);
                    continue;
                }
                _ => {
                    return Unwound {
                        outer: vec![],
                        frames,
                        stop: "the signal frame's saved registers are beyond the copied stack"
                            .into(),
                    };
                }
            }
        }
        match unwinder.unwind_frame(addr, &mut regs, &mut cache, read_stack) {
            Ok(Some(ret)) => match FrameAddress::from_return_address(ret) {
                Some(next) => addr = next,
                None => {
                    return Unwound {
                        outer: vec![],
                        frames,
                        stop: "reached the outermost frame".into(),
                    };
                }
            },
            Ok(None) => {
                return Unwound {
                    outer: vec![],
                    frames,
                    stop: "reached the outermost frame".into(),
                };
            }
            Err(framehop::Error::CouldNotReadStack(a)) => {
                return Unwound {
                    outer: vec![],
                    frames,
                    stop: format!(
                        "the next frame is beyond the copied stack (needed 0x{a:x}; raise --stack-size)"
                    ),
                };
            }
            Err(e) => {
                return Unwound {
                    outer: vec![],
                    frames,
                    stop: format!("unwinding failed: {e}"),
                };
            }
        }
    }
}

fn framehop_module(m: &Mapping, module: &ElfModule) -> Option<Module<FileSlice>> {
    let bias = module.bias(m)?;
    let info = ExplicitModuleSectionInfo {
        base_svma: module.base_svma,
        text_svma: module.text.as_ref().map(|s| s.svma.clone()),
        text: module.slice(&module.text),
        got_svma: module.got.as_ref().map(|s| s.svma.clone()),
        eh_frame_svma: module.eh_frame.as_ref().map(|s| s.svma.clone()),
        eh_frame: module.slice(&module.eh_frame),
        eh_frame_hdr_svma: module.eh_frame_hdr.as_ref().map(|s| s.svma.clone()),
        eh_frame_hdr: module.slice(&module.eh_frame_hdr),
        debug_frame: module.slice(&module.debug_frame),
        stubs_svma: None,
        stub_helper_svma: None,
        unwind_info: None,
        text_segment_svma: None,
        text_segment: None,
    };
    Some(Module::new(
        m.path.to_string(),
        m.start..m.end,
        module.base_svma.wrapping_add(bias),
        info,
    ))
}

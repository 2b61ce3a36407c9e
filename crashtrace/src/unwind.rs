//! Unwinding a captured stack with DWARF CFI (framehop), so code built without frame
//! pointers (Debian's libc, CPython, most wheels) unwinds correctly.

use std::sync::Arc;

use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};

use crate::{
    events::Capture,
    modules::{ElfModule, FileSlice},
    procmaps::Mapping,
};

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
}

/// A module ready for unwinding: a mapping and the file behind it.
pub struct LoadedMapping {
    pub mapping: Mapping,
    pub module: Option<Arc<ElfModule>>,
}

pub fn unwind(capture: &Capture, mappings: &[LoadedMapping]) -> Unwound {
    let Some(regs) = capture.regs else {
        return Unwound {
            frames: vec![],
            stop: "the thread's registers could not be read".into(),
        };
    };
    let mut unwinder = UnwinderX86_64::<FileSlice>::new();
    for lm in mappings {
        if let Some(module) = &lm.module
            && let Some(m) = framehop_module(&lm.mapping, module)
        {
            unwinder.add_module(m);
        }
    }
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
    // address on top of the stack: report the bad rip, then continue from the caller.
    let in_code = |a: u64| mappings.iter().any(|lm| lm.mapping.contains(a));
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
            frames,
            FrameAddress::from_return_address(pc),
            UnwindRegsX86_64::new(pc, sp, regs.rbp),
            &mut read_stack,
        );
    }
    finish(
        &unwinder,
        frames,
        Some(FrameAddress::from_instruction_pointer(pc)),
        UnwindRegsX86_64::new(pc, sp, regs.rbp),
        &mut read_stack,
    )
}

fn finish(
    unwinder: &UnwinderX86_64<FileSlice>,
    mut frames: Vec<RawFrame>,
    first: Option<FrameAddress>,
    mut regs: UnwindRegsX86_64,
    read_stack: &mut impl FnMut(u64) -> Result<u64, ()>,
) -> Unwound {
    let mut cache = CacheX86_64::<_>::new();
    let Some(mut addr) = first else {
        return Unwound {
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
                frames,
                stop: format!("stopped after {MAX_FRAMES} frames"),
            };
        }
        match unwinder.unwind_frame(addr, &mut regs, &mut cache, read_stack) {
            Ok(Some(ret)) => match FrameAddress::from_return_address(ret) {
                Some(next) => addr = next,
                None => {
                    return Unwound {
                        frames,
                        stop: "reached the outermost frame".into(),
                    };
                }
            },
            Ok(None) => {
                return Unwound {
                    frames,
                    stop: "reached the outermost frame".into(),
                };
            }
            Err(framehop::Error::CouldNotReadStack(a)) => {
                return Unwound {
                    frames,
                    stop: format!(
                        "the next frame is beyond the copied stack (needed 0x{a:x}; raise --stack-size)"
                    ),
                };
            }
            Err(e) => {
                return Unwound {
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

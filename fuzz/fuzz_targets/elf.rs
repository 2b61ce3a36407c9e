//! ELF and debug-file handling on mutated files: guard (copy, disarm), the module
//! parser, unwinding through its CFI and blazesym's symbolization of it.
#![no_main]

use std::{fs::File, io::Write as _, os::fd::FromRawFd as _, sync::Arc};

use bytes::Bytes;
use crashtrace::{
    capture::records::Capture,
    symbolize::{
        blaze::Blaze,
        elf::ElfModule,
        guard,
        unwind::{LoadedMapping, unwind},
    },
    sys::procfs::Mapping,
};
use crashtrace_common::UserRegs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut copy = data.to_vec();
    let _ = guard::disarm(&mut copy);
    // SAFETY: plain syscall; the name is NUL-terminated.
    let fd = unsafe { libc::memfd_create(c"fuzz-elf".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh descriptor we own.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(data).unwrap();
    let Ok(module) = ElfModule::from_file(Arc::new(f), "fuzz") else {
        return;
    };
    let module = Arc::new(module);
    let Some(seg) = module.segments.iter().find(|s| s.executable) else {
        return;
    };
    let start = 0x5555_0000_0000u64;
    let len = seg.file_size.clamp(1, 1 << 30);
    let mapping = Mapping {
        start,
        end: start + len.next_multiple_of(4096),
        offset: seg.file_offset & !0xfff,
        dev_major: 0,
        dev_minor: 0,
        inode: 1,
        path: "fuzz".into(),
        build_id: None,
    };
    let loaded = [LoadedMapping {
        mapping,
        module: Some(module.clone()),
    }];
    let c = Capture {
        regs: Some(UserRegs {
            rip: start + 16,
            rsp: 0x7ff0_0000_0000,
            ..Default::default()
        }),
        stack_start: 0x7ff0_0000_0000,
        stack: Bytes::from_static(&[0x10; 256]),
        ..Default::default()
    };
    let _ = unwind(&c, &loaded);
    let mut blaze = Blaze::new(&[]);
    let _ = blaze.symbolize_file(&module.path, &[seg.file_offset, seg.file_offset + 1]);
    let _ = blaze.symbolize_svmas(&module.path, &[seg.svma]);
});

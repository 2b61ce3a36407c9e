//! Which mapped file holds a CPython runtime, which version it is, and where its
//! structures are: what the eBPF program needs to read Python frames at a crash.
//!
//! The layouts themselves are in `layouts`.

use object::{Object as _, ObjectSymbol as _};

use crate::symbolize::elf::ElfModule;

/// (major, minor) from a file name like `python3.11`, `libpython3.12.so.1.0`.
pub fn version_from_name(path: &str) -> Option<(u8, u8)> {
    let base = path.rsplit('/').next()?;
    let rest = base
        .strip_prefix("lib")
        .unwrap_or(base)
        .strip_prefix("python3.")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let after = &rest[digits.len()..];
    // `t`: a free-threaded build, with other layouts.
    if after.starts_with('t') || digits.is_empty() {
        return None;
    }
    Some((3, digits.parse().ok()?))
}

/// The SVMA of `_PyRuntime` if this file defines it (the interpreter itself, or a
/// libpython; not an executable that only links one).
pub fn runtime_svma(module: &ElfModule) -> Option<u64> {
    let obj = object::File::parse(&**module.map).ok()?;
    obj.dynamic_symbols()
        .chain(obj.symbols())
        .find(|s| s.name() == Ok("_PyRuntime") && s.is_definition())
        .map(|s| s.address())
}

/// A non-PIE executable (ET_EXEC): its runtime's address is the same in every process.
pub fn fixed_address(module: &ElfModule) -> bool {
    object::File::parse(&**module.map).is_ok_and(|o| o.kind() == object::ObjectKind::Executable)
}

/// What the eBPF program needs for an interpreter file, given the load bias of a
/// mapping of it (0 for a non-PIE executable).
pub fn proc_for(
    module: &ElfModule,
    version: (u8, u8),
    bias: u64,
) -> Option<crashtrace_common::PyProc> {
    Some(crashtrace_common::PyProc {
        runtime: runtime_svma(module)?.wrapping_add(bias),
        version: (version.0 as u32) << 8 | version.1 as u32,
        _pad: 0,
        offsets: super::layouts::offsets(version)?,
    })
}

/// Code units from a frame's raw position (see PyOffsets::fr_pos).
pub fn position_units(version: (u8, u8), code: u64, pos: u64, adaptive: u32) -> i32 {
    if version < (3, 11) {
        return pos as i64 as i32;
    }
    let start = code + adaptive as u64;
    if pos < start {
        return -1;
    }
    ((pos - start) / 2) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_names() {
        assert_eq!(version_from_name("/usr/bin/python3.11"), Some((3, 11)));
        assert_eq!(
            version_from_name("/x/lib/libpython3.12.so.1.0"),
            Some((3, 12))
        );
        assert_eq!(version_from_name("/x/libpython3.10.so"), Some((3, 10)));
        assert_eq!(version_from_name("/usr/bin/python3.13t"), None);
        assert_eq!(version_from_name("/usr/bin/python3"), None);
        assert_eq!(version_from_name("/usr/bin/perl"), None);
    }

    #[test]
    fn finds_the_runtime_of_local_interpreters() {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let mut found = 0;
        for v in ["3.10.13", "3.11.7", "3.12.1", "3.13.0"] {
            let minor = &v[2..4];
            let lib = format!("{home}/.pyenv/versions/{v}/lib/libpython3.{minor}.so.1.0");
            let exe = format!("{home}/.pyenv/versions/{v}/bin/python3.{minor}");
            // The machines this project runs on have pyenv's 3.10-3.13.
            assert!(std::path::Path::new(&lib).exists(), "{lib} is missing");
            let m = ElfModule::open(std::path::Path::new(&lib)).unwrap();
            assert!(runtime_svma(&m).is_some(), "{lib}");
            // The executable only links libpython: no runtime of its own.
            let e = ElfModule::open(std::path::Path::new(&exe)).unwrap();
            assert_eq!(runtime_svma(&e), None, "{exe}");
            assert!(super::super::layouts::offsets(version_from_name(&lib).unwrap()).is_some());
            found += 1;
        }
        // Debian's static, non-PIE build (installed by setup as python3).
        let deb = std::path::Path::new("/usr/bin/python3.11");
        assert!(runtime_svma(&ElfModule::open(deb).unwrap()).is_some());
        assert_eq!(found, 4);
    }
}

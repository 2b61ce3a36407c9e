//! Which mapped file holds a CPython runtime, which version it is, and where its
//! structures are: what the eBPF program needs to read Python frames at a crash.
//!
//! Layouts are per minor version for x86-64 release (GIL) builds, from the DWARF of each
//! version's build and, for 3.13/3.14, their `_Py_DebugOffsets`; they are stable across
//! patch releases. Free-threaded builds (`python3.13t`) are not handled.

use crashtrace_common::{PY_NONE, PyOffsets};
use object::{Object as _, ObjectSymbol as _};

use crate::modules::ElfModule;

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

/// The layout for a version, if crashtrace knows it.
pub fn offsets(version: (u8, u8)) -> Option<PyOffsets> {
    let n = PY_NONE;
    let o = match version {
        (3, 10) => PyOffsets {
            interp_head: 32,
            tstate_head: 8,
            ts_next: 8,
            ts_frame: 24,
            cf_current: n,
            ts_thread_id: 176,
            ts_native: n,
            fr_back: 24,
            fr_code: 32,
            fr_pos: 96,
            fr_owner: n,
            fr_is_entry: n,
            shim_owner: n,
            code_tag_mask: 0,
            co_filename: 104,
            co_name: 112,
            co_firstlineno: 40,
            co_linetable: 120,
            co_adaptive: n,
            ascii_size: 48,
            compact_size: 72,
            gil_holder: 360,
        },
        (3, 11) => PyOffsets {
            interp_head: 40,
            tstate_head: 16,
            ts_next: 8,
            ts_frame: 56,
            cf_current: 8,
            ts_thread_id: 152,
            ts_native: 160,
            fr_back: 48,
            fr_code: 32,
            fr_pos: 56,
            fr_owner: 69,
            fr_is_entry: 68,
            // 3.11 has no C-stack shim frames (owners 0-2 only).
            shim_owner: 0xff,
            code_tag_mask: 0,
            co_filename: 112,
            co_name: 128,
            co_firstlineno: 72,
            co_linetable: 136,
            co_adaptive: 184,
            ascii_size: 48,
            compact_size: 72,
            gil_holder: 368,
        },
        (3, 12) => PyOffsets {
            interp_head: 40,
            tstate_head: 72,
            ts_next: 8,
            ts_frame: 56,
            cf_current: 0,
            ts_thread_id: 136,
            ts_native: 144,
            fr_back: 8,
            fr_code: 0,
            fr_pos: 56,
            fr_owner: 70,
            fr_is_entry: n,
            shim_owner: 3,
            code_tag_mask: 0,
            co_filename: 112,
            co_name: 128,
            co_firstlineno: 68,
            co_linetable: 136,
            co_adaptive: 192,
            ascii_size: 40,
            compact_size: 56,
            gil_holder: n,
        },
        (3, 13) => PyOffsets {
            interp_head: 632,
            tstate_head: 7344,
            ts_next: 8,
            ts_frame: 72,
            cf_current: n,
            ts_thread_id: 152,
            ts_native: 160,
            fr_back: 8,
            fr_code: 0,
            fr_pos: 56,
            fr_owner: 70,
            fr_is_entry: n,
            shim_owner: 3,
            code_tag_mask: 0,
            co_filename: 112,
            co_name: 128,
            co_firstlineno: 68,
            co_linetable: 136,
            co_adaptive: 200,
            ascii_size: 40,
            compact_size: 56,
            gil_holder: n,
        },
        (3, 14) => PyOffsets {
            interp_head: 808,
            tstate_head: 7344,
            ts_next: 8,
            ts_frame: 72,
            cf_current: n,
            ts_thread_id: 152,
            ts_native: 160,
            fr_back: 8,
            fr_code: 0,
            fr_pos: 56,
            fr_owner: 74,
            fr_is_entry: n,
            // 3.14: INTERPRETER (3) and CSTACK (4) frames are not Python code.
            shim_owner: 3,
            // f_executable is a tagged _PyStackRef.
            code_tag_mask: 3,
            co_filename: 112,
            co_name: 128,
            co_firstlineno: 68,
            co_linetable: 136,
            co_adaptive: 208,
            ascii_size: 40,
            compact_size: 56,
            gil_holder: n,
        },
        _ => return None,
    };
    Some(o)
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
        offsets: offsets(version)?,
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
            if !std::path::Path::new(&lib).exists() {
                continue;
            }
            let m = ElfModule::open(std::path::Path::new(&lib)).unwrap();
            assert!(runtime_svma(&m).is_some(), "{lib}");
            // The executable only links libpython: no runtime of its own.
            let e = ElfModule::open(std::path::Path::new(&exe)).unwrap();
            assert_eq!(runtime_svma(&e), None, "{exe}");
            assert!(offsets(version_from_name(&lib).unwrap()).is_some());
            found += 1;
        }
        let deb = std::path::Path::new("/usr/bin/python3.11");
        if deb.exists() {
            assert!(runtime_svma(&ElfModule::open(deb).unwrap()).is_some());
        }
        eprintln!("{found} pyenv interpreters checked");
    }
}

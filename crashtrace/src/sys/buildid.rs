//! Build IDs: their hex spelling and where a separate debug file for one is kept.

use std::path::{Path, PathBuf};

/// Lower-case hex, as `readelf -n`, gdb and debuginfod spell a build ID.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<dir>/.build-id/xx/yyyy….debug`: the layout of debug directories (Debian's
/// `-dbg`/`-dbgsym` packages, `/usr/lib/debug`) and of debuginfod caches. None for an
/// ID too short to split.
pub fn debug_path(dir: &Path, id: &[u8]) -> Option<PathBuf> {
    let (first, rest) = id.split_first()?;
    if rest.is_empty() {
        return None;
    }
    Some(
        dir.join(".build-id")
            .join(format!("{first:02x}"))
            .join(format!("{}.debug", hex(rest))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spells_and_places_build_ids() {
        assert_eq!(hex(&[0x57, 0x1d, 0x98]), "571d98");
        assert_eq!(
            debug_path(Path::new("/usr/lib/debug"), &[0xab, 0x01, 0xff]).unwrap(),
            Path::new("/usr/lib/debug/.build-id/ab/01ff.debug")
        );
        assert_eq!(debug_path(Path::new("/d"), &[0xab]), None);
        assert_eq!(debug_path(Path::new("/d"), &[]), None);
    }
}

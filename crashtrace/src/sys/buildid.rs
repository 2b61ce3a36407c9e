//! Build IDs: their hex spelling and where a separate debug file for one is kept.

use std::path::{Path, PathBuf};

/// A GNU build ID as the kernel reports it for a mapping (at most 20 bytes: SHA-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BuildId {
    bytes: [u8; 20],
    len: u8,
}

impl BuildId {
    /// None for an empty or over-long ID.
    pub fn new(id: &[u8]) -> Option<Self> {
        if id.is_empty() || id.len() > 20 {
            return None;
        }
        let mut bytes = [0; 20];
        bytes[..id.len()].copy_from_slice(id);
        Some(Self {
            bytes,
            len: id.len() as u8,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

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

/// `<dir>/.build-id/xx/yyyy…`: where debug directories (and debuginfod's `executable`
/// requests) keep the file itself, beside its `.debug` file.
pub fn executable_path(dir: &Path, id: &[u8]) -> Option<PathBuf> {
    debug_path(dir, id).map(|p| p.with_extension(""))
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
        assert_eq!(
            executable_path(Path::new("/d"), &[0xab, 0x01]).unwrap(),
            Path::new("/d/.build-id/ab/01")
        );
        assert_eq!(BuildId::new(&[1, 2]).unwrap().as_bytes(), [1, 2]);
        assert!(BuildId::new(&[]).is_none() && BuildId::new(&[0; 21]).is_none());
        assert_eq!(debug_path(Path::new("/d"), &[0xab]), None);
        assert_eq!(debug_path(Path::new("/d"), &[]), None);
    }
}

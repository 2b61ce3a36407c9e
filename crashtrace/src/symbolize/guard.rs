//! What the ELF parsers (ours, framehop's, blazesym's) are given to read.
//!
//! A file only root can change, in a directory only root can change, is read in place.
//! Any other file is one a user can truncate under a mapping (SIGBUS), rewrite between
//! two reads, or fill with links that make a parser open other files (a FIFO that blocks
//! `open` forever, a device, `/etc/shadow` by an absolute or `../` name). Such a file is
//! read from a sealed private copy in which every section that names another file or
//! inflates (`.gnu_debuglink`, `.gnu_debugaltlink`, `.debug_sup`, `.gnu_debugdata`, a
//! compressed section that does not inflate to its stated size within the bound) is
//! renamed so no parser finds it. Its debug link is then followed here, and only to a
//! plain file in the places gdb looks, with no symlink on the way.

use std::{
    fs::File,
    io::Read as _,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result, bail};
use object::{
    CompressedData, CompressionFormat, LittleEndian as LE, Object as _, ObjectSection as _,
    SectionIndex,
    elf::SHF_COMPRESSED,
    read::elf::{ElfFile64, FileHeader as _, SectionHeader as _},
};

use crate::sys::files;

/// Largest file copied (the largest shared libraries of GPU stacks are around 1.5 GiB).
pub const MAX_COPY: u64 = 2 << 30;
/// Largest size a compressed section may inflate to.
pub const MAX_INFLATE: u64 = 256 << 20;

/// Sections that make a parser open another file or inflate data.
const LINKS: [&[u8]; 4] = [
    b".gnu_debuglink",
    b".gnu_debugaltlink",
    b".debug_sup",
    b".gnu_debugdata",
];

/// A file ready for the parsers.
pub struct Ready {
    /// What is mapped and parsed: the file itself, or its sealed copy.
    pub file: Arc<File>,
    /// `/proc/self/fd/N` of `file`: a path no user can create anything beside.
    pub path: PathBuf,
    /// The copied file's own `.gnu_debuglink` (name, CRC), to be followed by
    /// `find_debuglink`; None for a file read in place (its parsers follow it).
    pub debuglink: Option<(String, u32)>,
    /// The directory the file was found in, as the kernel names it (no symlinks).
    pub dir: Option<PathBuf>,
    pub owner: u32,
}

/// Makes `file` (found as `origin`) ready for the parsers.
pub fn ready(file: Arc<File>, origin: &str) -> Result<Ready> {
    let md = file.metadata().context("stat")?;
    if !md.file_type().is_file() {
        bail!("{origin} is not a regular file");
    }
    // The kernel's name for the open file: symlinks resolved.
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok();
    let dir = real
        .as_deref()
        .filter(|p| !p.to_string_lossy().ends_with(" (deleted)"))
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let in_place = files::root_only(&md) && dir.as_deref().is_some_and(root_only_dirs);
    let (file, debuglink) = if in_place {
        (file, None)
    } else {
        let mut link = None;
        let copy = files::sealed_copy(&file, MAX_COPY, |data| link = disarm(data))
            .with_context(|| format!("copying {origin}"))?;
        (Arc::new(copy), link)
    };
    Ok(Ready {
        path: PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
        file,
        debuglink,
        dir,
        owner: md.uid(),
    })
}

/// Whether a directory and every one above it can be changed by root only.
pub(super) fn root_only_dirs(dir: &Path) -> bool {
    dir.ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|md| md.is_dir() && files::root_only(&md)))
}

/// Renames the sections listed at the top in a 64-bit little-endian ELF image; returns
/// its debug link. Anything malformed is left for the parsers to refuse.
pub fn disarm(data: &mut [u8]) -> Option<(String, u32)> {
    let mut renames = Vec::new();
    let mut link = None;
    {
        let ro: &[u8] = data;
        let file = ElfFile64::<LE>::parse(ro).ok()?;
        let endian = file.endian();
        let shstrndx = file.elf_header().shstrndx(endian, ro).ok()?;
        let strtab_off = file
            .elf_section_table()
            .section(SectionIndex(shstrndx as usize))
            .ok()?
            .sh_offset(endian);
        for s in file.sections() {
            let Ok(name) = s.name_bytes() else {
                continue;
            };
            let hdr = s.elf_section_header();
            let disarm = if name == b".gnu_debuglink" {
                link = s.data().ok().and_then(parse_debuglink);
                true
            } else if LINKS.contains(&name) {
                true
            } else if hdr.sh_flags(endian).contains(SHF_COMPRESSED) {
                !s.compressed_data().is_ok_and(inflates_within_bound)
            } else {
                false
            };
            if disarm
                && let Some(at) = strtab_off.checked_add(u64::from(hdr.sh_name(endian)))
                && (at as usize) < ro.len()
            {
                renames.push(at as usize);
            }
        }
    }
    for at in renames {
        // '.' -> 'X': the name no longer matches any section a parser looks for.
        data[at] = b'X';
    }
    link
}

/// Whether a compressed section inflates to exactly its stated size, at most
/// MAX_INFLATE: parsers allocate the stated size and inflate until the stream ends.
fn inflates_within_bound(c: CompressedData<'_>) -> bool {
    c.format != CompressionFormat::None
        && c.uncompressed_size <= MAX_INFLATE
        && c.decompress()
            .is_ok_and(|d| d.len() as u64 == c.uncompressed_size)
}

/// `.gnu_debuglink`: a file name, NUL, padding to 4, CRC-32. Only a plain name (no
/// directory part, not `.` or `..`, printable) is kept.
fn parse_debuglink(d: &[u8]) -> Option<(String, u32)> {
    let nul = d.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&d[..nul]).ok()?;
    let crc_at = (nul + 1).next_multiple_of(4);
    let crc = u32::from_le_bytes(d.get(crc_at..crc_at + 4)?.try_into().ok()?);
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name.chars().all(|c| c != '/' && !c.is_control());
    plain.then(|| (name.to_string(), crc))
}

/// Follows a copied file's debug link: `<dir>/<name>`, `<dir>/.debug/<name>`,
/// `<debug dir>/<dir>/<name>` and `<debug dir>/<name>`, each opened with no symlink
/// on the way, a plain file owned by root or by the owner of the file that links it,
/// and whose CRC matches.
pub fn find_debuglink(r: &Ready, debug_dirs: &[PathBuf]) -> Result<Option<File>, String> {
    let Some((name, crc)) = &r.debuglink else {
        return Ok(None);
    };
    let mut candidates: Vec<(PathBuf, PathBuf)> = Vec::new();
    if let Some(dir) = &r.dir {
        candidates.push((dir.clone(), PathBuf::from(name)));
        candidates.push((dir.clone(), Path::new(".debug").join(name)));
    }
    for d in debug_dirs {
        if let Some(dir) = &r.dir {
            let rel = dir.strip_prefix("/").unwrap_or(dir);
            candidates.push((d.clone(), rel.join(name)));
        }
        candidates.push((d.clone(), PathBuf::from(name)));
    }
    for (base, rel) in candidates {
        let Ok(f) = files::open_beneath(&base, &rel) else {
            continue;
        };
        let Ok(md) = f.metadata() else { continue };
        if md.uid() != 0 && md.uid() != r.owner {
            continue;
        }
        if md.len() > MAX_COPY {
            return Err(format!("its debug link {name} is over {MAX_COPY} bytes"));
        }
        // The file's contents are never shown: only whether they match.
        return if crc32(&f).is_some_and(|c| c == *crc) {
            Ok(Some(f))
        } else {
            Err(format!(
                "its debug link {name} was found but its checksum does not match"
            ))
        };
    }
    Ok(None)
}

fn crc32(f: &File) -> Option<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0; 1 << 16];
    let mut r = f;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Some(h.finalize()),
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debuglinks_are_plain_names() {
        let link = |name: &[u8]| {
            let mut d = name.to_vec();
            d.push(0);
            while !d.len().is_multiple_of(4) {
                d.push(0);
            }
            d.extend(0x1234_5678u32.to_le_bytes());
            parse_debuglink(&d)
        };
        let cases: [(&[u8], Option<&str>); 7] = [
            (b"x.debug", Some("x.debug")),
            (b"abc", Some("abc")),
            (b"/etc/shadow", None),
            (b"../../etc/shadow", None),
            (b"..", None),
            (b"", None),
            (b"a\x1bb", None),
        ];
        for (name, want) in cases {
            let got = link(name);
            assert_eq!(got.as_ref().map(|(n, _)| n.as_str()), want, "{name:?}");
            if let Some((_, crc)) = got {
                assert_eq!(crc, 0x1234_5678);
            }
        }
        assert_eq!(parse_debuglink(b"abc\0"), None, "no CRC");
    }
}

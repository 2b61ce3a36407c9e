//! A copy of a debug file with its compressed sections stored plain, kept on disk.
//!
//! blazesym inflates a compressed DWARF section into memory when it first reads it and
//! keeps it there. Debian compresses its debug files, and glibc's is read before any
//! crash (see `Symbolizer::warm_libc`): 11 MB of anonymous memory for as long as crashtrace
//! runs. From a plain copy the same bytes are mapped from the page cache instead: clean
//! pages the kernel can reclaim. One copy per build ID, written once and renamed into
//! place, in a directory only root can change; others there (an older glibc's) are removed.
//!
//! `object` reads and inflates the sections; the ELF64 headers are patched here by their
//! offsets (object's writer builds new objects and cannot copy one with changed sections).

use std::{
    fs,
    io::{Read as _, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use object::{CompressionFormat, Object as _, ObjectSection as _};

const EHDR: usize = 64;
const SHDR: usize = 64;
const SHF_COMPRESSED: u64 = 1 << 11;
const SHT_NOBITS: u32 = 8;
/// Largest plain copy written: glibc's is about 10 MB.
const MAX_PLAIN: usize = 256 << 20;

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}
fn put_u64(d: &mut [u8], at: usize, v: u64) {
    d[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes `data` (a little-endian ELF64 file) to `out` with every compressed section
/// inflated; false, writing nothing, when nothing in it is compressed. The layout: the
/// ELF header, the program headers unchanged, each section's bytes at its alignment, the
/// section headers last. Inflated sizes are in the compression headers, so the layout is
/// known before anything is written, and zlib sections stream through a small buffer
/// (whole sections in memory would stay in crashtrace's heap after the copy).
pub fn write_plain(data: &[u8], out: &mut impl Write) -> Result<bool> {
    let file = object::File::parse(data).context("parsing the ELF file")?;
    if !file.is_64() || !file.is_little_endian() {
        return Ok(false);
    }
    let field = |at: usize, len: usize| -> usize {
        let v = if len == 2 {
            u16_at(data, at).map(u64::from)
        } else {
            u64_at(data, at)
        };
        v.unwrap_or(0) as usize
    };
    let (phoff, shoff) = (field(0x20, 8), field(0x28, 8));
    let (phentsize, phnum) = (field(0x36, 2), field(0x38, 2));
    let (shentsize, shnum) = (field(0x3a, 2), field(0x3c, 2));
    if shentsize != SHDR || shnum == 0 {
        bail!("unexpected section header table ({shnum} entries of {shentsize} bytes)");
    }
    let headers = data
        .get(shoff..shoff + shnum * SHDR)
        .context("section headers past the end")?;
    let flags = |i: usize| u64_at(headers, i * SHDR + 8).unwrap_or(0);
    if !(0..shnum).any(|i| flags(i) & SHF_COMPRESSED != 0) {
        return Ok(false);
    }
    let phdrs = data
        .get(phoff..phoff + phentsize * phnum)
        .context("program headers past the end")?;
    let mut ehdr = data.get(..EHDR).context("ELF header")?.to_vec();

    // The layout, and each section's bytes as they are in the file.
    let mut new_headers = headers.to_vec();
    let mut pos = EHDR + phdrs.len();
    let mut parts = vec![];
    for section in file.sections() {
        let i = section.index().0;
        let h = i * SHDR;
        if i == 0 || u32_at(headers, h + 4) == Some(SHT_NOBITS) {
            continue;
        }
        let c = section
            .compressed_data()
            .with_context(|| format!("section {i}"))?;
        let size = c.uncompressed_size as usize;
        let align = u64_at(headers, h + 0x30).unwrap_or(1).clamp(1, 4096) as usize;
        pos = pos.next_multiple_of(align);
        if pos + size > MAX_PLAIN {
            bail!("over {} MiB inflated", MAX_PLAIN >> 20);
        }
        put_u64(&mut new_headers, h + 8, flags(i) & !SHF_COMPRESSED);
        put_u64(&mut new_headers, h + 0x18, pos as u64);
        put_u64(&mut new_headers, h + 0x20, size as u64);
        parts.push((pos, size, c));
        pos += size;
    }
    let shoff = pos.next_multiple_of(8);
    if !phdrs.is_empty() {
        put_u64(&mut ehdr, 0x20, EHDR as u64);
    }
    put_u64(&mut ehdr, 0x28, shoff as u64);

    let mut at = 0;
    let pad_to = |out: &mut dyn Write, at: &mut usize, to: usize| -> std::io::Result<()> {
        out.write_all(&vec![0; to - *at])?;
        *at = to;
        Ok(())
    };
    out.write_all(&ehdr)?;
    out.write_all(phdrs)?;
    at += ehdr.len() + phdrs.len();
    for (pos, size, c) in parts {
        pad_to(out, &mut at, pos)?;
        let written = match c.format {
            CompressionFormat::None => {
                out.write_all(c.data)?;
                c.data.len() as u64
            }
            CompressionFormat::Zlib => std::io::copy(
                &mut flate2::read::ZlibDecoder::new(c.data).take(size as u64),
                out,
            )?,
            _ => {
                let bytes = c.decompress().context("inflating a section")?;
                out.write_all(&bytes)?;
                bytes.len() as u64
            }
        };
        if written != size as u64 {
            bail!("a section inflated to {written} bytes, not the {size} its header says");
        }
        at += size;
    }
    pad_to(out, &mut at, shoff)?;
    out.write_all(&new_headers)?;
    Ok(true)
}

/// The plain copy of `data` (a debug file with build ID `id_hex`) in `dir`, made now if
/// missing; None when nothing in it is compressed. The caller has made `dir` and checked
/// that it and the directories above it can be changed by root only.
pub fn plain_copy(data: &[u8], id_hex: &str, dir: &Path) -> Result<Option<PathBuf>> {
    let path = dir.join(format!("{id_hex}.debug"));
    if path.exists() {
        return Ok(Some(path));
    }
    // Older copies: only one glibc is installed at a time.
    for e in fs::read_dir(dir)?.flatten() {
        if e.path()
            .extension()
            .is_some_and(|x| x == "debug" || x == "tmp")
        {
            let _ = fs::remove_file(e.path());
        }
    }
    let tmp = dir.join(format!("{id_hex}.tmp"));
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(f);
    let written = write_plain(data, &mut w).and_then(|any| {
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(any)
    });
    let done = match written {
        Ok(true) => fs::rename(&tmp, &path)
            .map(|_| Some(path.clone()))
            .map_err(Into::into),
        Ok(false) => Ok(None),
        Err(e) => Err(e),
    };
    if !matches!(done, Ok(Some(_))) {
        let _ = fs::remove_file(&tmp);
    }
    done.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _};

    /// A little-endian ELF64 object with a plain `.text` and a zlib-compressed
    /// `.debug_info` (an Elf64_Chdr, then the stream), as objcopy writes them.
    fn compressed_object(payload: &[u8]) -> Vec<u8> {
        use object::write::{Object, SectionFlags};
        use std::io::Write as _;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(payload).unwrap();
        let stream = z.finish().unwrap();
        let mut chdr = vec![];
        chdr.extend_from_slice(&1u32.to_le_bytes()); // ELFCOMPRESS_ZLIB
        chdr.extend_from_slice(&0u32.to_le_bytes());
        chdr.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        chdr.extend_from_slice(&1u64.to_le_bytes());
        chdr.extend_from_slice(&stream);
        let mut obj = Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let text = obj.add_section(vec![], b".text".to_vec(), object::SectionKind::Text);
        obj.append_section_data(text, &[0xc3; 7], 16);
        let info = obj.add_section(vec![], b".debug_info".to_vec(), object::SectionKind::Debug);
        obj.append_section_data(info, &chdr, 8);
        obj.section_mut(info).flags = SectionFlags::Elf {
            sh_type: object::elf::SectionType(1), // SHT_PROGBITS
            sh_flags: object::elf::SectionFlags(super::SHF_COMPRESSED),
        };
        obj.write().unwrap()
    }

    #[test]
    fn compressed_sections_come_out_plain() {
        let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let data = compressed_object(&payload);
        let before = object::File::parse(&*data).unwrap();
        let info = before.section_by_name(".debug_info").unwrap();
        assert!(matches!(
            info.compressed_file_range().unwrap().format,
            object::CompressionFormat::Zlib
        ));

        let mut plain = vec![];
        assert!(
            super::write_plain(&data, &mut plain).unwrap(),
            "something was compressed"
        );
        let after = object::File::parse(&*plain).unwrap();
        let info = after.section_by_name(".debug_info").unwrap();
        assert!(matches!(
            info.compressed_file_range().unwrap().format,
            object::CompressionFormat::None
        ));
        assert_eq!(info.data().unwrap(), &payload[..]);
        assert_eq!(
            after.section_by_name(".text").unwrap().data().unwrap(),
            &[0xc3; 7]
        );
        assert_eq!(before.sections().count(), after.sections().count());
        for (a, b) in before.sections().zip(after.sections()) {
            assert_eq!(a.name().unwrap(), b.name().unwrap());
        }
    }

    #[test]
    fn nothing_compressed_no_copy() {
        let mut obj = object::write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let text = obj.add_section(vec![], b".text".to_vec(), object::SectionKind::Text);
        obj.append_section_data(text, &[0xc3; 7], 16);
        let mut out = vec![];
        assert!(!super::write_plain(&obj.write().unwrap(), &mut out).unwrap());
        assert!(out.is_empty());
        assert!(super::write_plain(b"not an ELF file", &mut out).is_err());
    }

    #[test]
    fn one_copy_per_build_id() {
        let dir = std::env::temp_dir().join(format!("crashtrace-plain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = compressed_object(b"the debug info");
        let a = super::plain_copy(&data, "aa", &dir).unwrap().unwrap();
        assert_eq!(a, dir.join("aa.debug"));
        let b = super::plain_copy(&data, "bb", &dir).unwrap().unwrap();
        assert!(b.exists() && !a.exists(), "the older copy is removed");
        let copy = std::fs::read(&b).unwrap();
        let f = object::File::parse(&*copy).unwrap();
        let info = f.section_by_name(".debug_info").unwrap();
        assert_eq!(info.data().unwrap(), b"the debug info");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

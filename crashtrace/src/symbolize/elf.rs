//! ELF files behind executable mappings: opened once, kept mapped, and described the
//! way the unwinder (section data) and the report (build ID, bias) need.

use std::{
    collections::HashMap,
    fs::File,
    ops::{Deref, Range},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result, bail};
use memmap2::Mmap;
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

use super::guard::{self, Ready};
use crate::{
    capture::pins::{FileKey, FilePins, key_of},
    sys::{
        buildid, files,
        procfs::{self, Mapping},
    },
};

/// `p_flags` bit of an executable segment.
const PF_X: u32 = 1;

/// A sub-slice of a mapped file, cheap to clone; what framehop reads sections through.
#[derive(Clone)]
pub struct FileSlice {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl Deref for FileSlice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

#[derive(Clone, Debug)]
pub struct Section {
    pub svma: Range<u64>,
    pub file_range: Option<Range<usize>>,
}

/// A loadable segment: where a file range goes in the object's address space.
#[derive(Clone, Debug)]
pub struct LoadSegment {
    pub file_offset: u64,
    pub file_size: u64,
    pub svma: u64,
    pub executable: bool,
}

pub struct ElfModule {
    /// Where the parsers read it: /proc/self/fd/N of `file`.
    pub path: PathBuf,
    /// The file, or its sealed copy (see `guard`); kept open as long as the module.
    pub file: Arc<File>,
    /// The file itself, held open while the module is cached: its inode cannot be
    /// freed and reused by another file that the cache would mistake for it.
    _source: Arc<File>,
    pub map: Arc<Mmap>,
    pub build_id: Option<Vec<u8>>,
    /// SVMA of the first loadable segment: the base that relative addresses count from.
    pub base_svma: u64,
    pub segments: Vec<LoadSegment>,
    pub text: Option<Section>,
    pub eh_frame: Option<Section>,
    pub eh_frame_hdr: Option<Section>,
    pub got: Option<Section>,
    pub debug_frame: Option<Section>,
    /// Whether the file names its own functions (a symbol table, DWARF, or a debug link
    /// or MiniDebugInfo its parsers follow): if not, a separate debug file is looked up.
    pub self_describing: bool,
    /// What `guard` learnt: a copied file's debug link, its directory and owner.
    pub origin: Ready,
}

impl ElfModule {
    pub fn open(path: &Path) -> Result<Self> {
        let file =
            files::open_plain(path).with_context(|| format!("opening {}", path.display()))?;
        Self::from_file(Arc::new(file), &path.to_string_lossy())
    }

    /// Reads an ELF file from an open descriptor; `origin` names it in messages.
    pub fn from_file(file: Arc<File>, origin: &str) -> Result<Self> {
        let ready = guard::ready(file.clone(), origin)?;
        // SAFETY: read-only private mapping of a file only root can change, or of a
        // sealed copy nobody can (see `guard`).
        let map =
            unsafe { Mmap::map(&*ready.file) }.with_context(|| format!("mapping {origin}"))?;
        let map = Arc::new(map);
        let obj = object::File::parse(&**map)
            .with_context(|| format!("{origin} is not a valid ELF file"))?;
        let segments: Vec<LoadSegment> = obj
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                LoadSegment {
                    file_offset: off,
                    file_size: size,
                    svma: s.address(),
                    executable: matches!(
                        s.flags(),
                        object::SegmentFlags::Elf { p_flags, .. } if p_flags.0 & PF_X != 0
                    ),
                }
            })
            .collect();
        if segments.is_empty() {
            bail!("{origin} has no loadable segments");
        }
        let section = |name: &str| {
            obj.section_by_name(name).map(|s| Section {
                svma: s.address()..s.address().saturating_add(s.size()),
                file_range: s
                    .compressed_file_range()
                    .ok()
                    .filter(|c| c.format == object::CompressionFormat::None)
                    .and_then(|_| s.file_range())
                    .and_then(|(o, n)| Some(o as usize..o.checked_add(n)? as usize))
                    .filter(|r| r.end <= map.len()),
            })
        };
        Ok(Self {
            path: ready.path.clone(),
            file: ready.file.clone(),
            _source: file,
            build_id: obj.build_id().ok().flatten().map(|b| b.to_vec()),
            base_svma: segments.iter().map(|s| s.svma).min().unwrap_or(0),
            text: section(".text"),
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            got: section(".got"),
            debug_frame: section(".debug_frame"),
            self_describing: [".symtab", ".debug_info", ".gnu_debuglink", ".gnu_debugdata"]
                .iter()
                .any(|n| obj.section_by_name(n).is_some()),
            origin: ready,
            segments,
            map,
        })
    }

    pub fn slice(&self, s: &Option<Section>) -> Option<FileSlice> {
        let range = s.as_ref()?.file_range.clone()?;
        Some(FileSlice {
            map: self.map.clone(),
            range,
        })
    }

    /// Load bias of a mapping of this file: AVMA minus SVMA.
    pub fn bias(&self, m: &Mapping) -> Option<u64> {
        let seg = self.segment_of(m)?;
        let svma_at_start = seg
            .svma
            .wrapping_add(m.offset)
            .wrapping_sub(seg.file_offset);
        Some(m.start.wrapping_sub(svma_at_start))
    }

    /// The segment a mapping was made from. The kernel maps each PT_LOAD from the page
    /// that holds its first byte, so two segments can share a page of the file (lld's and
    /// rustc's layouts: a read-only segment ending in the page where the code starts): the
    /// segment that starts in the mapping's first page is the one, an executable one for
    /// an executable mapping; a mapping split later (mprotect) falls inside its segment.
    fn segment_of(&self, m: &Mapping) -> Option<&LoadSegment> {
        segment_at(&self.segments, m.offset)
    }

    /// The address the file itself gives to a file offset (its SVMA).
    pub fn svma_of_offset(&self, off: u64) -> Option<u64> {
        let seg = self
            .segments
            .iter()
            .find(|s| s.file_offset <= off && off < s.file_offset + s.file_size)?;
        Some(seg.svma + (off - seg.file_offset))
    }

    /// Whether a separate debug file is looked up for it: it names nothing itself, or
    /// it is a copy whose debug link is followed by `guard` rather than by its parsers.
    pub fn wants_debug_file(&self) -> bool {
        !self.self_describing || self.origin.debuglink.is_some()
    }

    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id.as_deref().map(buildid::hex)
    }
}

/// Opened modules, keyed by file identity so a replaced file is never confused with the
/// one that was mapped.
#[derive(Default)]
pub struct ModuleCache {
    modules: HashMap<FileKey, Result<Arc<ElfModule>, String>>,
    /// Keys in the order they came, for eviction beyond MAX_MODULES.
    order: std::collections::VecDeque<FileKey>,
    vdso: Option<Result<Arc<ElfModule>, String>>,
}

/// Files kept parsed (and their descriptors and copies held) at most; the oldest go
/// first. A module in use by a report stays alive through its Arc.
pub const MAX_MODULES: usize = 1024;

impl ModuleCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The vDSO: the kernel maps the same image into every process, so crashtrace's own
    /// copy, saved once to a memory file, unwinds and names every process's vDSO frames.
    pub fn vdso(&mut self) -> Result<Arc<ElfModule>, String> {
        self.vdso
            .get_or_insert_with(|| own_vdso().map(Arc::new).map_err(|e| format!("{e:#}")))
            .clone()
    }

    /// The ELF file behind `m`, or why it cannot be had: the pinned descriptor when there
    /// is one, else the path if it still names the same file.
    pub fn get(&mut self, m: &Mapping, pins: &FilePins) -> Result<Arc<ElfModule>, String> {
        self.get_pinned(m, pins.get(m))
    }

    /// As `get`, given the pinned descriptor of `m`'s file if there is one.
    pub fn get_pinned(
        &mut self,
        m: &Mapping,
        pinned: Option<Arc<File>>,
    ) -> Result<Arc<ElfModule>, String> {
        let key = key_of(m);
        if let Some(r) = self.modules.get(&key)
            && r.is_ok()
        {
            return r.clone();
        }
        let r = match pinned {
            Some(f) => ElfModule::from_file(f, &m.path),
            None => open_verified(m),
        }
        .map(Arc::new)
        .map_err(|e| format!("{e:#}"));
        if self.modules.insert(key, r.clone()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > MAX_MODULES {
            if let Some(old) = self.order.pop_front() {
                self.modules.remove(&old);
            }
        }
        r
    }
}

fn own_vdso() -> Result<ElfModule> {
    let (start, end) = procfs::read_maps("self")
        .unwrap_or_default()
        .iter()
        .find(|m| &*m.path == "[vdso]")
        .map(|m| (m.start, m.end))
        .context("this process has no [vdso] mapping")?;
    // SAFETY: the vDSO mapping is readable for its whole length for as long as we run.
    let image = unsafe { std::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
    // SAFETY: plain syscall; the name is NUL-terminated.
    let fd = unsafe { libc::memfd_create(c"crashtrace-vdso".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create for the vDSO");
    }
    // SAFETY: fd is a fresh descriptor we own.
    let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    std::io::Write::write_all(&mut file, image)?;
    ElfModule::from_file(Arc::new(file), "[vdso]")
}

fn open_verified(m: &Mapping) -> Result<ElfModule> {
    let path = Path::new(m.path.strip_suffix(" (deleted)").unwrap_or(&m.path));
    let opened = if m.inode == 0 {
        // Nothing to check it against (no mapping record gave one).
        files::open_plain(path)
    } else {
        files::open_identified(path, (m.dev_major, m.dev_minor), m.inode)
    };
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} is gone and was not pinned in time", m.path)
        }
        Err(_) => bail!(
            "{} is not the file that was mapped (replaced since, or a path in another \
             mount namespace) and was not pinned in time",
            m.path
        ),
    };
    ElfModule::from_file(Arc::new(file), &m.path)
}

/// The segment a mapping at file offset `offset` was made from (see `segment_of`).
fn segment_at(segments: &[LoadSegment], offset: u64) -> Option<&LoadSegment> {
    let page = |s: &LoadSegment| s.file_offset & !0xfff;
    let starts_here = |s: &&LoadSegment| page(s) == offset;
    segments
        .iter()
        .filter(starts_here)
        .find(|s| s.executable)
        .or_else(|| segments.iter().find(starts_here))
        .or_else(|| {
            segments
                .iter()
                .rev()
                .find(|s| page(s) <= offset && offset < s.file_offset + s.file_size.max(1))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(file_offset: u64, file_size: u64, svma: u64, executable: bool) -> LoadSegment {
        LoadSegment {
            file_offset,
            file_size,
            svma,
            executable,
        }
    }

    #[test]
    fn mappings_find_their_segment() {
        // GNU ld: each segment starts on a page of its own.
        let ld = [
            seg(0, 0x630, 0, false),
            seg(0x1000, 0x1c5, 0x1000, true),
            seg(0x2000, 0x104, 0x2000, false),
        ];
        // rustc/lld: the code starts in the page where the read-only segment ends, and is
        // placed one page higher in memory.
        let lld = [
            seg(0, 0x12e2c, 0, false),
            seg(0x12e30, 0x3d6d0, 0x13e30, true),
            seg(0x50500, 0x27b0, 0x52500, false),
        ];
        let cases: [(&[LoadSegment], u64, Option<u64>); 6] = [
            (&ld, 0, Some(0)),
            (&ld, 0x1000, Some(0x1000)),
            (&ld, 0x2000, Some(0x2000)),
            (&lld, 0x12000, Some(0x13e30)),
            (&lld, 0x50000, Some(0x52500)),
            // A mapping split later (mprotect) still lies inside its segment.
            (&lld, 0x20000, Some(0x13e30)),
        ];
        for (segs, offset, svma) in cases {
            assert_eq!(
                segment_at(segs, offset).map(|s| s.svma),
                svma,
                "offset {offset:#x}"
            );
        }
    }
}

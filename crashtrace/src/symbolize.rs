//! Names for addresses, from the module files (and their separate debug files) after the
//! process is gone: blazesym, fed file offsets rather than process addresses.

use std::path::{Path, PathBuf};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer as Blaze,
    source::{Elf, Source},
};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: String,
    pub line: Option<u32>,
    pub column: Option<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymInfo {
    pub function: String,
    /// Offset of the address from the start of the function, where it is known.
    pub offset: Option<u64>,
    pub location: Option<Location>,
    /// Functions inlined at this address, outermost first, each with the call's location.
    pub inlined: Vec<(String, Option<Location>)>,
}

pub struct Symbolizer {
    inner: Blaze,
    /// Where separate debug files are looked for (`.build-id/xx/yyyy.debug` below each).
    pub debug_dirs: Vec<PathBuf>,
}

impl Symbolizer {
    pub fn new(extra_debug_dirs: &[PathBuf]) -> Self {
        let mut dirs: Vec<PathBuf> = vec!["/usr/lib/debug".into(), "/lib/debug".into()];
        dirs.extend(extra_debug_dirs.iter().cloned());
        let inner = Blaze::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .set_debug_dirs(Some(dirs.clone()))
            .build();
        Self {
            inner,
            debug_dirs: dirs,
        }
    }

    /// The separate debug file for a build ID, under a debug directory's `.build-id`.
    /// (blazesym looks there only for files that carry a .gnu_debuglink.)
    pub fn build_id_debug_file(&self, build_id: &[u8]) -> Option<PathBuf> {
        let (first, rest) = build_id.split_first()?;
        let rest: String = rest.iter().map(|b| format!("{b:02x}")).collect();
        self.debug_dirs
            .iter()
            .map(|d| {
                d.join(".build-id")
                    .join(format!("{first:02x}"))
                    .join(format!("{rest}.debug"))
            })
            .find(|p| p.exists())
    }

    /// Symbolizes file offsets within one ELF file. One result per offset; `None` where
    /// the file has no symbol covering it (never a guessed nearby name).
    pub fn symbolize_file(
        &self,
        path: &Path,
        offsets: &[u64],
    ) -> Result<Vec<Option<SymInfo>>, String> {
        self.symbolize_input(path, Input::FileOffset(offsets))
    }

    /// Symbolizes addresses as the ELF file states them (SVMAs): for separate debug files,
    /// whose file layout is not the module's.
    pub fn symbolize_svmas(
        &self,
        path: &Path,
        svmas: &[u64],
    ) -> Result<Vec<Option<SymInfo>>, String> {
        self.symbolize_input(path, Input::VirtOffset(svmas))
    }

    fn symbolize_input(
        &self,
        path: &Path,
        input: Input<&[u64]>,
    ) -> Result<Vec<Option<SymInfo>>, String> {
        let src = Source::Elf(Elf::new(path));
        let syms = self
            .inner
            .symbolize(&src, input)
            .map_err(|e| format!("{e:#}"))?;
        Ok(syms
            .into_iter()
            .map(|s| match s {
                Symbolized::Sym(sym) => {
                    Some(SymInfo {
                        function: sym.name.to_string(),
                        // A function split into several ranges (hot/cold) comes back from
                        // DWARF with address 0 and no size: its offset would be meaningless.
                        offset: (sym.addr != 0 || sym.size.is_some()).then_some(sym.offset as u64),
                        location: sym.code_info.as_deref().map(location),
                        inlined: sym
                            .inlined
                            .iter()
                            .map(|i| (i.name.to_string(), i.code_info.as_ref().map(location)))
                            .collect(),
                    })
                }
                Symbolized::Unknown(_) => None,
            })
            .collect())
    }
}

fn location(ci: &blazesym::symbolize::CodeInfo<'_>) -> Location {
    Location {
        file: ci.to_path().display().to_string(),
        line: ci.line,
        column: ci.column,
    }
}

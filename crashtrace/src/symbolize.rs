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
}

impl Symbolizer {
    pub fn new(extra_debug_dirs: &[PathBuf]) -> Self {
        let mut dirs: Vec<PathBuf> = vec!["/usr/lib/debug".into(), "/lib/debug".into()];
        dirs.extend(extra_debug_dirs.iter().cloned());
        let inner = Blaze::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .set_debug_dirs(Some(dirs))
            .build();
        Self { inner }
    }

    /// Symbolizes file offsets within one ELF file. One result per offset; `None` where
    /// the file has no symbol covering it (never a guessed nearby name).
    pub fn symbolize_file(
        &self,
        path: &Path,
        offsets: &[u64],
    ) -> Result<Vec<Option<SymInfo>>, String> {
        let src = Source::Elf(Elf::new(path));
        let syms = self
            .inner
            .symbolize(&src, Input::FileOffset(offsets))
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

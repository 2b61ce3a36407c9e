//! The adapter to blazesym: file offsets (or a debug file's own addresses) in, names,
//! lines and inlined functions out. Which file to ask is the caller's policy.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use crate::model::Location;

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer as BlazeSymbolizer,
    source::{Elf, Source},
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymInfo {
    pub function: String,
    /// Offset of the address from the start of the function, where it is known.
    pub offset: Option<u64>,
    pub location: Option<Location>,
    /// Functions inlined at this address, outermost first as blazesym gives them, each
    /// with the line in that function (the innermost: the address's line; the others:
    /// where they call the next one). `location` is then the line in `function` where it
    /// calls the outermost inlined one.
    pub inlined: Vec<(String, Option<Location>)>,
}

/// blazesym, set up once: code info, inlined functions, demangling.
pub struct Blaze {
    inner: BlazeSymbolizer,
    debug_dirs: Vec<PathBuf>,
    /// Files blazesym has opened (and keeps open and mapped) since it was made.
    files: HashSet<PathBuf>,
}

/// Files blazesym may hold at once: it never lets one go, so past this it is made anew.
const MAX_FILES: usize = 512;

fn make(debug_dirs: &[PathBuf]) -> BlazeSymbolizer {
    BlazeSymbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .set_debug_dirs(Some(debug_dirs.to_vec()))
        .build()
}

impl Blaze {
    /// `debug_dirs`: where blazesym follows `.gnu_debuglink`s (of files read in place).
    pub fn new(debug_dirs: &[PathBuf]) -> Self {
        Self {
            inner: make(debug_dirs),
            debug_dirs: debug_dirs.to_vec(),
            files: HashSet::new(),
        }
    }

    /// Symbolizes file offsets within one ELF file. One result per offset; `None` where
    /// the file has no symbol covering it (never a guessed nearby name).
    pub fn symbolize_file(
        &mut self,
        path: &Path,
        offsets: &[u64],
    ) -> Result<Vec<Option<SymInfo>>, String> {
        self.symbolize_input(path, Input::FileOffset(offsets))
    }

    /// Symbolizes addresses as the ELF file states them (SVMAs): for separate debug files,
    /// whose file layout is not the module's.
    pub fn symbolize_svmas(
        &mut self,
        path: &Path,
        svmas: &[u64],
    ) -> Result<Vec<Option<SymInfo>>, String> {
        self.symbolize_input(path, Input::VirtOffset(svmas))
    }

    fn symbolize_input(
        &mut self,
        path: &Path,
        input: Input<&[u64]>,
    ) -> Result<Vec<Option<SymInfo>>, String> {
        if !self.files.contains(path) {
            if self.files.len() >= MAX_FILES {
                self.inner = make(&self.debug_dirs);
                self.files.clear();
            }
            self.files.insert(path.to_path_buf());
        }
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

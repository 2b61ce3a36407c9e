//! Every CPython offset the eBPF walker uses, checked against the DWARF of each local
//! interpreter (pyenv's builds carry debug info): a hand-typed layout that drifts from
//! the real structures fails here, not in a crash report.

use std::{borrow::Cow, collections::HashMap, path::Path};

use crashtrace::python::layouts::offsets;
use crashtrace_common::{PY_NONE, PyOffsets};
use gimli::{EndianSlice, LittleEndian, UnitOffset};
use object::{Object as _, ObjectSection as _};

type Slice = EndianSlice<'static, LittleEndian>;
/// (unit index, offset in the unit): a type's identity.
type TypeRef = (usize, UnitOffset);

/// The named types and struct members of one file's DWARF.
#[derive(Default)]
struct Types {
    /// Struct tags and typedef names: every one of each (some units only declare).
    by_name: HashMap<String, Vec<TypeRef>>,
    /// Structures only declared in a unit, by tag: defined in another.
    declared: HashMap<TypeRef, String>,
    /// Members of every structure: name, offset, type.
    members: HashMap<TypeRef, Vec<(String, u64, Option<TypeRef>)>>,
    /// Typedefs, const, volatile, atomic: what they stand for.
    alias: HashMap<TypeRef, TypeRef>,
    size: HashMap<TypeRef, u64>,
}

impl Types {
    fn load(path: &Path) -> Self {
        let data: &'static [u8] = Box::leak(std::fs::read(path).unwrap().into_boxed_slice());
        let file = object::File::parse(data).unwrap();
        let dwarf = gimli::Dwarf::load(|id| -> Result<Slice, gimli::Error> {
            let bytes = match file.section_by_name(id.name()) {
                Some(s) => match s.uncompressed_data().unwrap() {
                    Cow::Borrowed(b) => b,
                    Cow::Owned(v) => Box::leak(v.into_boxed_slice()),
                },
                None => &[],
            };
            Ok(EndianSlice::new(bytes, LittleEndian))
        })
        .unwrap();
        let mut t = Types::default();
        let mut headers = dwarf.units();
        let mut ui = 0;
        while let Some(h) = headers.next().unwrap() {
            let unit = dwarf.unit(h).unwrap();
            let mut cursor = unit.entries();
            // The enclosing structure at each depth.
            let mut open: Vec<(isize, TypeRef)> = Vec::new();
            while let Some(e) = cursor.next_dfs().unwrap() {
                let here = (ui, e.offset());
                while open.last().is_some_and(|(d, _)| *d >= e.depth()) {
                    open.pop();
                }
                let name = e
                    .attr_value(gimli::DW_AT_name)
                    .and_then(|v| dwarf.attr_string(&unit, v).ok())
                    .map(|s| s.to_string_lossy().into_owned());
                let ty = match e.attr_value(gimli::DW_AT_type) {
                    Some(gimli::AttributeValue::UnitRef(o)) => Some((ui, o)),
                    _ => None,
                };
                let declaration = e.attr_value(gimli::DW_AT_declaration).is_some();
                if let Some(s) = e
                    .attr_value(gimli::DW_AT_byte_size)
                    .and_then(|v| v.udata_value())
                {
                    t.size.insert(here, s);
                }
                match e.tag() {
                    gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type if declaration => {
                        if let Some(n) = name {
                            t.declared.insert(here, n);
                        }
                    }
                    gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                        if let Some(n) = name {
                            t.by_name.entry(n).or_default().push(here);
                        }
                        t.members.entry(here).or_default();
                        open.push((e.depth(), here));
                    }
                    gimli::DW_TAG_typedef => {
                        if let Some(target) = ty {
                            t.alias.insert(here, target);
                            if let Some(n) = name {
                                t.by_name.entry(n).or_default().push(here);
                            }
                        }
                    }
                    gimli::DW_TAG_const_type
                    | gimli::DW_TAG_volatile_type
                    | gimli::DW_TAG_atomic_type => {
                        if let Some(target) = ty {
                            t.alias.insert(here, target);
                        }
                    }
                    gimli::DW_TAG_member => {
                        if let (Some((_, parent)), Some(n)) = (open.last(), name) {
                            let off = e
                                .attr_value(gimli::DW_AT_data_member_location)
                                .and_then(|v| v.udata_value())
                                .unwrap_or(0);
                            t.members.get_mut(parent).unwrap().push((n, off, ty));
                        }
                    }
                    _ => {}
                }
            }
            ui += 1;
        }
        t
    }

    /// Through typedefs and qualifiers to a structure's definition (a declaration is
    /// replaced by the definition of the same tag).
    fn resolve(&self, mut r: TypeRef) -> TypeRef {
        for _ in 0..16 {
            if let Some(next) = self.alias.get(&r) {
                r = *next;
            } else if let Some(tag) = self.declared.get(&r) {
                match self.defined(tag) {
                    Some(d) => return d,
                    None => break,
                }
            } else {
                break;
            }
        }
        r
    }

    /// The first definition with members of a structure tag.
    fn defined(&self, tag: &str) -> Option<TypeRef> {
        self.by_name
            .get(tag)?
            .iter()
            .copied()
            .find(|r| self.members.get(r).is_some_and(|m| !m.is_empty()))
    }

    /// The type named `name` (a struct tag or a typedef), resolved to its definition.
    fn named(&self, name: &str) -> TypeRef {
        let all = self
            .by_name
            .get(name)
            .unwrap_or_else(|| panic!("no type {name} in the DWARF"));
        all.iter()
            .map(|r| self.resolve(*r))
            .find(|r| self.members.get(r).is_some_and(|m| !m.is_empty()))
            .unwrap_or_else(|| panic!("{name} is never defined in the DWARF"))
    }

    /// Offset of a member path like `interpreters.head` within the type `ty`.
    fn offset(&self, ty: &str, path: &str) -> u64 {
        let mut at = self.named(ty);
        let mut total = 0;
        for part in path.split('.') {
            let members = self
                .members
                .get(&at)
                .unwrap_or_else(|| panic!("{ty} is not a structure"));
            let (_, off, t) = members
                .iter()
                .find(|(n, _, _)| n == part)
                .unwrap_or_else(|| panic!("{ty} has no member {path} ({part})"));
            total += off;
            if let Some(t) = t {
                at = self.resolve(*t);
            }
        }
        total
    }

    fn size_of(&self, ty: &str) -> u64 {
        let r = self.named(ty);
        self.size[&r]
    }
}

/// What each field of `PyOffsets` is in the C structures of a version.
fn expected(t: &Types, minor: u8) -> Vec<(&'static str, u32)> {
    let o = |ty: &str, path: &str| t.offset(ty, path) as u32;
    let mut v = vec![
        ("interp_head", o("_PyRuntimeState", "interpreters.head")),
        ("ts_next", o("PyThreadState", "next")),
        ("ts_thread_id", o("PyThreadState", "thread_id")),
        ("co_filename", o("PyCodeObject", "co_filename")),
        ("co_firstlineno", o("PyCodeObject", "co_firstlineno")),
        ("co_linetable", o("PyCodeObject", "co_linetable")),
        ("ascii_size", t.size_of("PyASCIIObject") as u32),
        ("compact_size", t.size_of("PyCompactUnicodeObject") as u32),
    ];
    if minor == 10 {
        v.extend([
            ("tstate_head", o("PyInterpreterState", "tstate_head")),
            ("ts_frame", o("PyThreadState", "frame")),
            ("fr_back", o("PyFrameObject", "f_back")),
            ("fr_code", o("PyFrameObject", "f_code")),
            ("fr_pos", o("PyFrameObject", "f_lasti")),
            ("co_name", o("PyCodeObject", "co_name")),
            ("gil_holder", o("_PyRuntimeState", "ceval.gil.last_holder")),
        ]);
        return v;
    }
    v.extend([
        ("tstate_head", o("PyInterpreterState", "threads.head")),
        ("ts_native", o("PyThreadState", "native_thread_id")),
        ("fr_back", o("_PyInterpreterFrame", "previous")),
        ("fr_owner", o("_PyInterpreterFrame", "owner")),
        // The qualified name, as tracebacks print it from 3.11 on.
        ("co_name", o("PyCodeObject", "co_qualname")),
        ("co_adaptive", o("PyCodeObject", "co_code_adaptive")),
    ]);
    if minor <= 12 {
        v.extend([
            ("ts_frame", o("PyThreadState", "cframe")),
            ("cf_current", o("_PyCFrame", "current_frame")),
            ("fr_code", o("_PyInterpreterFrame", "f_code")),
            ("fr_pos", o("_PyInterpreterFrame", "prev_instr")),
        ]);
    } else {
        v.extend([
            ("ts_frame", o("PyThreadState", "current_frame")),
            ("fr_code", o("_PyInterpreterFrame", "f_executable")),
            ("fr_pos", o("_PyInterpreterFrame", "instr_ptr")),
        ]);
    }
    if minor == 11 {
        v.extend([
            ("fr_is_entry", o("_PyInterpreterFrame", "is_entry")),
            ("gil_holder", o("_PyRuntimeState", "ceval.gil.last_holder")),
        ]);
    }
    v
}

fn field(p: &PyOffsets, name: &str) -> u32 {
    match name {
        "interp_head" => p.interp_head,
        "tstate_head" => p.tstate_head,
        "ts_next" => p.ts_next,
        "ts_frame" => p.ts_frame,
        "cf_current" => p.cf_current,
        "ts_thread_id" => p.ts_thread_id,
        "ts_native" => p.ts_native,
        "fr_back" => p.fr_back,
        "fr_code" => p.fr_code,
        "fr_pos" => p.fr_pos,
        "fr_owner" => p.fr_owner,
        "fr_is_entry" => p.fr_is_entry,
        "co_filename" => p.co_filename,
        "co_name" => p.co_name,
        "co_firstlineno" => p.co_firstlineno,
        "co_linetable" => p.co_linetable,
        "co_adaptive" => p.co_adaptive,
        "ascii_size" => p.ascii_size,
        "compact_size" => p.compact_size,
        "gil_holder" => p.gil_holder,
        other => panic!("unknown field {other}"),
    }
}

/// Fields the walker reads for any version: each must be checked above, or be PY_NONE
/// (absent in that version) or a constant that is no struct offset.
const ALL: [&str; 20] = [
    "interp_head",
    "tstate_head",
    "ts_next",
    "ts_frame",
    "cf_current",
    "ts_thread_id",
    "ts_native",
    "fr_back",
    "fr_code",
    "fr_pos",
    "fr_owner",
    "fr_is_entry",
    "co_filename",
    "co_name",
    "co_firstlineno",
    "co_linetable",
    "co_adaptive",
    "ascii_size",
    "compact_size",
    "gil_holder",
];

#[test]
fn layouts_match_dwarf() {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    // The machines this project runs on have pyenv's 3.10-3.13 (built with -g).
    for v in ["3.10.13", "3.11.7", "3.12.1", "3.13.0"] {
        let minor: u8 = v[2..4].parse().unwrap();
        let lib = format!("{home}/.pyenv/versions/{v}/lib/libpython3.{minor}.so.1.0");
        assert!(
            Path::new(&lib).exists(),
            "{lib} is missing: the layout check needs pyenv's CPython {v}"
        );
        let types = Types::load(Path::new(&lib));
        let layout = offsets((3, minor)).unwrap();
        let checked = expected(&types, minor);
        for (name, want) in &checked {
            assert_eq!(
                field(&layout, name),
                *want,
                "CPython 3.{minor}: {name} is {} in the layout, {want} in the DWARF of {lib}",
                field(&layout, name)
            );
        }
        for name in ALL {
            if !checked.iter().any(|(n, _)| *n == name) {
                assert_eq!(
                    field(&layout, name),
                    PY_NONE,
                    "CPython 3.{minor}: {name} is set but not checked against the DWARF"
                );
            }
        }
        eprintln!("CPython 3.{minor}: {} offsets match {lib}", checked.len());
    }
}

//! Crash signatures: what groups the same crash across runs, hosts and install paths.
//! The rules are data (docs/signature-rules.toml, replaceable with --signature-rules);
//! this stage applies them to a report. No I/O.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::{CrashReport, Frame, Signature};

/// The rules crashtrace ships with; the file documents each.
pub const DEFAULT_RULES: &str = include_str!("../../../docs/signature-rules.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    frames: usize,
    skip_prefixes: Vec<String>,
    collapse: BTreeMap<String, Vec<String>>,
    python: PythonRules,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PythonRules {
    library_paths: Vec<String>,
}

/// A rules file: every key optional, a missing one keeps the default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    frames: Option<usize>,
    skip_prefixes: Option<Vec<String>>,
    collapse: Option<BTreeMap<String, Vec<String>>>,
    python: Option<PythonRules>,
}

impl Default for Rules {
    fn default() -> Self {
        toml::from_str(DEFAULT_RULES).expect("the shipped signature rules parse")
    }
}

impl Rules {
    /// Rules from a file's text, on top of the defaults.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let f: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut r = Self::default();
        if let Some(n) = f.frames {
            if !(1..=16).contains(&n) {
                return Err(format!("`frames` = {n}: from 1 to 16"));
            }
            r.frames = n;
        }
        if let Some(s) = f.skip_prefixes {
            r.skip_prefixes = s;
        }
        if let Some(c) = f.collapse {
            r.collapse = c;
        }
        if let Some(p) = f.python {
            r.python = p;
        }
        Ok(r)
    }
}

/// The report's signature under `rules`.
pub fn signature(r: &CrashReport, rules: &Rules) -> Signature {
    let cause = cause(r);
    let frames = native_frames(&r.frames, rules);
    let python = python_frame(r, rules);
    let mut text = format!("{cause}\n");
    for f in &frames {
        text.push_str(f);
        text.push('\n');
    }
    text.push_str(python.as_deref().unwrap_or(""));
    let digest = sha256(text.as_bytes());
    let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Signature {
        id,
        cause,
        frames,
        python,
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// The cause class: how the process died, with what varies between runs taken out.
fn cause(r: &CrashReport) -> String {
    let sig = &r.signal;
    if r.oom.is_some() {
        return "oom".into();
    }
    if sig.external {
        return format!("killed by {}", sig.name);
    }
    if sig.number == libc::SIGABRT {
        if r.thread_role.as_deref() == Some("nccl-watchdog") {
            return "SIGABRT: NCCL watchdog".into();
        }
        if let Some(m) = &r.abort_message {
            return format!("SIGABRT: {}", abort_class(m));
        }
    }
    match &sig.code_name {
        Some(code) if !code.starts_with("SI_") => format!("{} {code}", sig.name),
        _ => sig.name.clone(),
    }
}

/// An abort message without what changes between runs: an assertion is one class per
/// expression (its file, line and function change with the code around it); other
/// messages lose their numbers (`tcache 2`).
fn abort_class(m: &str) -> String {
    if let Some(rest) = m.split_once("Assertion `").map(|x| x.1) {
        let expr = rest.rsplit_once("' failed").map_or(rest, |x| x.0);
        return format!("assertion `{expr}' failed");
    }
    let mut out = String::with_capacity(m.len());
    let mut in_number = false;
    for c in m.chars().take(200) {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// The first meaningful frames of the crashing thread, named.
fn native_frames(frames: &[Frame], rules: &Rules) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut last_group: Option<&str> = None;
    for f in frames {
        let module = f
            .module
            .as_deref()
            .map(|m| m.rsplit('/').next().unwrap_or(m));
        if let Some(g) = module.and_then(|m| group_of(m, rules)) {
            if last_group != Some(g) {
                out.push(format!("[{g}]"));
                last_group = Some(g);
            }
        } else {
            last_group = None;
            // Inlined functions first, innermost first, then the function holding them.
            let names = f
                .inlined
                .iter()
                .map(|i| i.function.as_str())
                .chain(f.function.as_deref());
            let mut named = false;
            for n in names {
                named = true;
                let n = normalize(n);
                if !rules
                    .skip_prefixes
                    .iter()
                    .any(|p| n.starts_with(p.as_str()))
                {
                    out.push(n);
                }
                if out.len() >= rules.frames {
                    break;
                }
            }
            if !named {
                out.push(unnamed(f, module));
            }
        }
        if out.len() >= rules.frames {
            break;
        }
    }
    out.truncate(rules.frames);
    out
}

fn group_of<'a>(module: &str, rules: &'a Rules) -> Option<&'a str> {
    rules
        .collapse
        .iter()
        .find(|(_, prefixes)| prefixes.iter().any(|p| module.starts_with(p.as_str())))
        .map(|(g, _)| g.as_str())
}

/// An unnamed frame as its module's file name, build ID and offset: never an address
/// or a path, which change with ASLR and installs.
fn unnamed(f: &Frame, module: Option<&str>) -> String {
    let module = module.unwrap_or("??");
    let id = f
        .build_id
        .as_deref()
        .map(|b| format!("@{}", &b[..b.len().min(16)]))
        .unwrap_or_default();
    match f.module_offset {
        Some(off) => format!("{module}{id}+0x{off:x}"),
        None => format!("{module}{id}"),
    }
}

/// A function name without what differs between builds of the same code: argument
/// lists, return types, compiler clone suffixes, Rust's symbol hash, the CPU variant
/// of a libc string function.
pub fn normalize(name: &str) -> String {
    let mut n = name.trim();
    // C++ clones as demanglers show them: `f(int) [clone .cold]`.
    while let Some(i) = n.rfind(" [clone ") {
        n = n[..i].trim_end();
    }
    let mut n = n.to_string();
    // Rust: `path::to::f::h0123456789abcdef`.
    if let Some(i) = n.rfind("::h")
        && n.len() - i == 19
        && n[i + 3..].bytes().all(|b| b.is_ascii_hexdigit())
    {
        n.truncate(i);
    }
    // ELF clone suffixes: `.cold`, `.isra.0`, `.constprop.3`, `.part.1`, `.lto_priv.0`.
    for s in [
        ".cold",
        ".isra",
        ".constprop",
        ".part",
        ".lto_priv",
        ".localalias",
    ] {
        if let Some(i) = n.find(s) {
            n.truncate(i);
        }
    }
    let n = strip_arguments(&n);
    let n = strip_return_type(n);
    strip_cpu_variant(n).to_string()
}

/// `ns::f(int, char const*) const` → `ns::f`; `(anonymous namespace)` stays.
fn strip_arguments(n: &str) -> &str {
    let t = n.strip_suffix(" const").unwrap_or(n);
    if !t.ends_with(')') || t.ends_with("(anonymous namespace)") {
        return n;
    }
    let mut depth = 0i32;
    for (i, c) in t.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    return if i == 0 { n } else { &t[..i] };
                }
            }
            _ => {}
        }
    }
    n
}

/// `void ns::f<int>` → `ns::f<int>`: a space outside template brackets ends a return type.
fn strip_return_type(n: &str) -> &str {
    let mut depth = 0i32;
    let mut cut = None;
    let b = n.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'<' | b'(' => depth += 1,
            b'>' | b')' => depth -= 1,
            b' ' if depth == 0 && !n[..i].ends_with("operator") => cut = Some(i),
            _ => {}
        }
    }
    match cut {
        Some(i) if i + 1 < n.len() => &n[i + 1..],
        _ => n,
    }
}

/// glibc picks a string function per CPU (`__strlen_avx2`, `__memmove_evex_unaligned_erms`):
/// one crash, whichever CPU it ran on.
fn strip_cpu_variant(n: &str) -> &str {
    const VARIANTS: [&str; 12] = [
        "_sse2",
        "_ssse3",
        "_sse4_1",
        "_sse4_2",
        "_avx",
        "_avx2",
        "_avx512",
        "_evex",
        "_evex512",
        "_erms",
        "_unaligned",
        "_rtm",
    ];
    if !n.starts_with("__") {
        return n;
    }
    let mut n = n;
    loop {
        match VARIANTS.iter().find(|v| n.ends_with(*v)) {
            Some(v) => n = &n[..n.len() - v.len()],
            None => return n,
        }
    }
}

/// The innermost Python frame of the user's own code: `file.py:function` (the file's
/// base name, so that install paths do not matter).
fn python_frame(r: &CrashReport, rules: &Rules) -> Option<String> {
    let py = r.python.as_ref()?;
    let t = py.threads.iter().find(|t| t.crashing)?;
    t.frames
        .iter()
        .find(|f| {
            !rules
                .python
                .library_paths
                .iter()
                .any(|p| f.file.contains(p.as_str()))
        })
        .map(|f| {
            let file = f.file.rsplit('/').next().unwrap_or(&f.file);
            format!("{file}:{}", f.function)
        })
}

#[cfg(test)]
mod tests;

//! The line-table decoder against CPython's own `co_lines()`, over real code objects of
//! every local interpreter (pyenv's 3.10-3.13 and Debian's 3.11 on these machines).

use std::process::Command;

use crashtrace::python::linetable::line_for;

fn interpreters() -> Vec<String> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mut found = vec!["/usr/bin/python3.11".to_string()];
    for v in ["3.10", "3.11", "3.12", "3.13", "3.14"] {
        if let Ok(dir) = std::fs::read_dir(format!("{home}/.pyenv/versions")) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{v}.")) {
                    found.push(format!("{home}/.pyenv/versions/{name}/bin/python{v}"));
                }
            }
        }
    }
    found.retain(|p| std::path::Path::new(p).exists());
    found
}

#[test]
fn decoder_matches_co_lines() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dump_linetables.py"
    );
    let pythons = interpreters();
    assert!(!pythons.is_empty(), "no CPython interpreter found");
    let mut versions = std::collections::BTreeSet::new();
    for py in &pythons {
        let out = Command::new(py)
            .arg(script)
            .output()
            .expect("running python");
        assert!(
            out.status.success(),
            "{py}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (mut codes, mut checked) = (0, 0);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let version = (
                v["version"][0].as_u64().unwrap() as u8,
                v["version"][1].as_u64().unwrap() as u8,
            );
            versions.insert(version);
            let table: Vec<u8> = (0..v["linetable"].as_str().unwrap().len() / 2)
                .map(|i| {
                    u8::from_str_radix(&v["linetable"].as_str().unwrap()[2 * i..2 * i + 2], 16)
                        .unwrap()
                })
                .collect();
            let first = v["firstlineno"].as_i64().unwrap() as i32;
            for r in v["lines"].as_array().unwrap() {
                let (start, end) = (r[0].as_i64().unwrap() as i32, r[1].as_i64().unwrap() as i32);
                let want = r[2].as_i64().map(|l| l as i32);
                for unit in start / 2..end / 2 {
                    let got = line_for(version, &table, first, unit);
                    assert_eq!(
                        got, want,
                        "{py}: unit {unit} of a code object at line {first}"
                    );
                    checked += 1;
                }
            }
            codes += 1;
        }
        eprintln!("{py}: {codes} code objects, {checked} instructions agree");
        assert!(codes > 100);
    }
    eprintln!("versions checked: {versions:?}");
}

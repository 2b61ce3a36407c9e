//! `crashtrace summary FILE.jsonl...`: JSON-lines reports collected from many hosts,
//! grouped by signature and counted, and with `--flamegraph OUT.svg` the crash stacks
//! across crashes as a flame graph. Grouping and drawing do no I/O; `run` reads and
//! writes.

mod flamegraph;

use std::{
    collections::{BTreeSet, HashMap},
    io::BufRead as _,
    path::PathBuf,
};

use clap::Parser;

use crate::{
    model::{CrashReport, Signature},
    report::signature::{Rules, signature},
    sys::escape,
};
pub use flamegraph::flamegraph;

/// Lines longer than this are not reports crashtrace wrote.
const MAX_LINE: usize = 64 << 20;

/// Summarize crash reports collected from many hosts (JSON lines from --output, the
/// journal's CRASHTRACE_JSON, or --json), by signature.
#[derive(Parser, Debug)]
#[command(name = "crashtrace summary")]
pub struct SummaryArgs {
    /// JSON-lines files of reports (`-` for stdin).
    #[arg(required = true, value_name = "FILE.jsonl")]
    pub files: Vec<PathBuf>,
    /// How many signatures to show, most frequent first.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Also draw the crash stacks across crashes as a flame graph (SVG).
    #[arg(long, value_name = "OUT.svg")]
    pub flamegraph: Option<PathBuf>,
    /// Signature rules for reports that carry none (older ones).
    #[arg(long, value_name = "FILE")]
    pub signature_rules: Option<PathBuf>,
}

/// One signature's crashes.
#[derive(Debug, PartialEq)]
pub struct Group {
    pub signature: Signature,
    pub count: usize,
    pub first_seen: String,
    pub last_seen: String,
    pub hosts: BTreeSet<String>,
    pub ranks: BTreeSet<u32>,
    /// One of its crashes: pid and host.
    pub example: (u32, Option<String>),
}

/// Reports grouped by signature, most frequent first (ties: first seen first).
pub fn group(reports: &[CrashReport], rules: &Rules) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in reports {
        let sig = r.signature.clone().unwrap_or_else(|| signature(r, rules));
        let i = *index.entry(sig.id.clone()).or_insert_with(|| {
            groups.push(Group {
                signature: sig.clone(),
                count: 0,
                first_seen: r.time.clone(),
                last_seen: r.time.clone(),
                hosts: BTreeSet::new(),
                ranks: BTreeSet::new(),
                example: (r.pid, r.host.clone()),
            });
            groups.len() - 1
        });
        let g = &mut groups[i];
        g.count += 1;
        // RFC 3339 in UTC, as crashtrace writes it: text order is time order.
        if r.time < g.first_seen {
            g.first_seen = r.time.clone();
        }
        if r.time > g.last_seen {
            g.last_seen = r.time.clone();
        }
        if let Some(h) = &r.host {
            g.hosts.insert(h.clone());
        }
        if let Some(rank) = r.job.as_ref().and_then(|j| j.rank) {
            g.ranks.insert(rank);
        }
    }
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.first_seen.cmp(&b.first_seen)));
    groups
}

/// The table `crashtrace summary` prints.
pub fn table(groups: &[Group], top: usize, total: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{total} crashes, {} signatures{}",
        groups.len(),
        if groups.len() > top {
            format!(" (the {top} most frequent below)")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "{:>7}  {:<16}  {:<24}  {:<24}  {:>5}  {:<12}  EXAMPLE",
        "COUNT", "SIGNATURE", "FIRST SEEN", "LAST SEEN", "HOSTS", "RANKS"
    );
    for g in groups.iter().take(top) {
        let ranks: Vec<String> = g.ranks.iter().map(u32::to_string).collect();
        let ranks = if ranks.is_empty() {
            "-".to_string()
        } else {
            ranks.join(",")
        };
        let example = match &g.example.1 {
            Some(h) => format!("pid {} on {}", g.example.0, escape::text(h)),
            None => format!("pid {}", g.example.0),
        };
        let _ = writeln!(
            s,
            "{:>7}  {:<16}  {:<24}  {:<24}  {:>5}  {:<12}  {example}",
            g.count,
            g.signature.id,
            escape::text(&g.first_seen),
            escape::text(&g.last_seen),
            g.hosts.len(),
            ranks
        );
        let sig = &g.signature;
        let mut what = escape::text(&sig.cause);
        if !sig.frames.is_empty() {
            what.push_str(" in ");
            what.push_str(&escape::text(&sig.frames.join(" < ")));
        }
        if let Some(p) = &sig.python {
            what.push_str(&format!(" (Python {})", escape::text(p)));
        }
        let _ = writeln!(s, "{:>7}  {what}", "");
    }
    s
}

/// Reads every file's reports; lines that are not reports are counted and the first
/// one said, the rest of the file is still read.
fn read(files: &[PathBuf]) -> anyhow::Result<(Vec<CrashReport>, Vec<String>)> {
    let mut reports = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        let shown = path.display().to_string();
        let reader: Box<dyn std::io::BufRead> = if shown == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let f =
                std::fs::File::open(path).map_err(|e| anyhow::anyhow!("reading {shown}: {e}"))?;
            Box::new(std::io::BufReader::new(f))
        };
        let mut bad = 0usize;
        let mut first_bad = None;
        for (n, line) in reader.split(b'\n').enumerate() {
            let line = line.map_err(|e| anyhow::anyhow!("reading {shown}: {e}"))?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = if line.len() > MAX_LINE {
                Err("longer than any report".to_string())
            } else {
                serde_json::from_slice::<CrashReport>(&line).map_err(|e| e.to_string())
            };
            match parsed {
                Ok(r) => reports.push(r),
                Err(e) => {
                    bad += 1;
                    first_bad.get_or_insert((n + 1, e));
                }
            }
        }
        if let Some((n, e)) = first_bad {
            problems.push(format!(
                "{shown}: {bad} lines are not crash reports (the first, line {n}: {})",
                escape::text(&e)
            ));
        }
    }
    Ok((reports, problems))
}

/// `crashtrace summary`: prints the table, writes the flame graph; returns the exit code.
pub fn run(args: SummaryArgs) -> anyhow::Result<i32> {
    let rules = match &args.signature_rules {
        Some(p) => Rules::from_toml(&std::fs::read_to_string(p)?)
            .map_err(|e| anyhow::anyhow!("signature rules {}: {e}", p.display()))?,
        None => Rules::default(),
    };
    let (reports, problems) = read(&args.files)?;
    for p in &problems {
        say!("crashtrace: {p}");
    }
    let groups = group(&reports, &rules);
    print!("{}", table(&groups, args.top, reports.len()));
    if let Some(out) = &args.flamegraph {
        std::fs::write(out, flamegraph(&reports))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
        say!(
            "crashtrace: flame graph of {} crashes in {}",
            reports.len(),
            out.display()
        );
    }
    Ok(if reports.is_empty() { 1 } else { 0 })
}

#[cfg(test)]
mod tests;

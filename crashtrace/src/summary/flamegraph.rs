//! The crash stacks of many crashes as one flame graph (SVG): the outermost frames at
//! the bottom, each frame as wide as the crashes that passed through it. Drawn here:
//! the flame graph crates are under licences this project does not take in, and the
//! drawing is a few rectangles.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{model::CrashReport, sys::escape};

const WIDTH: f64 = 1200.0;
const ROW: f64 = 17.0;
const PAD_TOP: f64 = 40.0;
/// Approximate width of one character of the 12 px monospace text.
const CHAR: f64 = 7.2;
/// Frames drawn at most per stack (a runaway recursion is cut).
const MAX_DEPTH: usize = 200;

#[derive(Default)]
struct Node {
    count: usize,
    children: BTreeMap<String, Node>,
}

/// A crash's stack, outermost first: native frames, the functions inlined in them, and
/// the Python frames the eval loop ran, each named.
fn stack(r: &CrashReport) -> Vec<String> {
    let mut leaf_first = Vec::new();
    for f in &r.frames {
        for p in &f.python {
            let file = p.file.rsplit('/').next().unwrap_or(&p.file);
            leaf_first.push(format!("{} ({file})", p.function));
        }
        for i in &f.inlined {
            leaf_first.push(format!("{} (inlined)", i.function));
        }
        leaf_first.push(match (&f.function, &f.module) {
            (Some(n), _) => n.clone(),
            (None, Some(m)) => format!(
                "{}+0x{:x}",
                m.rsplit('/').next().unwrap_or(m),
                f.module_offset.unwrap_or(0)
            ),
            (None, None) => format!("0x{:x}", f.address),
        });
    }
    leaf_first.reverse();
    leaf_first.truncate(MAX_DEPTH);
    leaf_first
}

fn xml(s: &str) -> String {
    escape::text(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A warm colour from the name, the same for the same function in every graph.
fn colour(name: &str) -> String {
    let h = name
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    let r = 205 + (h % 50);
    let g = 80 + ((h >> 8) % 150);
    let b = (h >> 16) % 55;
    format!("rgb({r},{g},{b})")
}

/// The SVG.
pub fn flamegraph(reports: &[CrashReport]) -> String {
    let mut root = Node::default();
    let mut depth = 0;
    for r in reports {
        let st = stack(r);
        depth = depth.max(st.len());
        root.count += 1;
        let mut n = &mut root;
        for name in st {
            n = n.children.entry(name).or_default();
            n.count += 1;
        }
    }
    let height = PAD_TOP + (depth as f64 + 1.0) * ROW + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="monospace" font-size="12">
<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#f8f8f8"/>
<text x="{}" y="24" text-anchor="middle" font-size="16">Crash stacks: {} crashes</text>"##,
        WIDTH / 2.0,
        reports.len()
    );
    if root.count > 0 {
        let y = height - 10.0 - ROW;
        draw(&mut s, "all crashes", &root, 0.0, WIDTH, y, root.count);
    }
    s.push_str("</svg>\n");
    s
}

fn draw(s: &mut String, name: &str, n: &Node, x: f64, w: f64, y: f64, total: usize) {
    let pct = 100.0 * n.count as f64 / total as f64;
    let label = xml(name);
    let _ = writeln!(
        s,
        r#"<g><title>{label} ({} crashes, {pct:.1}%)</title><rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}" rx="2"/>"#,
        n.count,
        (w - 1.0).max(0.5),
        ROW - 1.0,
        colour(name)
    );
    let fits = ((w - 6.0) / CHAR).floor() as usize;
    if fits >= 3 {
        let chars: Vec<char> = name.chars().collect();
        let shown: String = if chars.len() <= fits {
            name.to_string()
        } else {
            chars[..fits - 2].iter().collect::<String>() + ".."
        };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            x + 3.0,
            y + ROW - 5.0,
            xml(&shown)
        );
    }
    s.push_str("</g>\n");
    let mut cx = x;
    for (child, c) in &n.children {
        let cw = w * c.count as f64 / n.count as f64;
        draw(s, child, c, cx, cw, y - ROW, total);
        cx += cw;
    }
}

//! Bytes that came from a traced process (its names, paths, symbols, Python strings),
//! made safe to show: nothing a user controls may move the terminal's cursor, change its
//! state (OSC titles, clipboard), start a new line, or reorder text (bidi overrides).

use std::fmt::Write as _;

/// A character that must not reach a terminal or a log raw: C0 and C1 controls and DEL
/// (`char::is_control`), bidi embeddings, overrides, isolates and marks, and the Unicode
/// line and paragraph separators.
pub fn is_hostile(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// A character that may appear in rendered text: hostile ones but the renderer's own
/// newlines are not.
pub fn is_hostile_in_text(c: char) -> bool {
    c != '\n' && is_hostile(c)
}

/// For text: each hostile character as `\xNN` (below U+0100) or `\u{NNNN}`.
pub fn text(s: &str) -> String {
    if !s.chars().any(is_hostile) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_hostile(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
    out
}

/// For a JSON text that serde_json wrote: it escapes C0 controls already; the other
/// hostile characters (DEL, C1, bidi, separators) become `\uNNNN` escapes too. They can
/// only stand inside strings there, where the escape means the same character.
pub fn json(s: String) -> String {
    if !s.chars().any(is_hostile) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_hostile(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_characters_are_shown_escaped() {
        let cases = [
            ("python3", "python3"),
            ("日本 ünïcode", "日本 ünïcode"),
            ("a\x1b]0;title\x07b", "a\\x1b]0;title\\x07b"),
            ("line\n=== crashtrace", "line\\x0a=== crashtrace"),
            ("tab\there\r", "tab\\x09here\\x0d"),
            ("del\x7f", "del\\x7f"),
            ("c1\u{9b}2J", "c1\\x9b2J"),
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
            ("iso\u{2066}x\u{2069}", "iso\\u{2066}x\\u{2069}"),
            ("sep\u{2028}", "sep\\u{2028}"),
        ];
        for (raw, shown) in cases {
            assert_eq!(text(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn json_keeps_its_meaning_and_loses_the_raw_characters() {
        let value = serde_json::json!({ "name": "a\u{9b}b\u{202e}c\x1bd\x7f" });
        let line = json(serde_json::to_string(&value).unwrap());
        assert!(!line.chars().any(is_hostile), "{line}");
        assert!(line.contains("\\u009b") && line.contains("\\u202e") && line.contains("\\u007f"));
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
    }
}

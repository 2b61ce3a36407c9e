//! crashtrace's own status lines on stderr: plain text for a person, or with
//! `--log-format json` one JSON object per line (`time`, `msg`) for log collectors.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// One status line as written, at `time` (RFC 3339).
fn render(msg: &str, json: bool, time: &str) -> String {
    if !json {
        return msg.to_string();
    }
    let msg = msg.strip_prefix("crashtrace: ").unwrap_or(msg);
    let v = serde_json::json!({ "time": time, "msg": msg });
    crate::sys::escape::json(v.to_string())
}

/// Writes one line; when stderr is closed or full the line is lost, not crashtrace.
pub fn line(msg: &str) {
    use std::io::Write as _;
    let json = JSON.load(Ordering::Relaxed);
    let time = if json {
        humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
    } else {
        String::new()
    };
    // A multi-line message (the run-mode summary) stays one record in JSON.
    let _ = writeln!(std::io::stderr(), "{}", render(msg, json, &time));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_or_one_json_object() {
        let t = "2026-12-01T10:00:00.000Z";
        assert_eq!(
            render("crashtrace: attached", false, t),
            "crashtrace: attached"
        );
        let j = render("crashtrace: two\nlines \u{9b}", true, t);
        assert!(!j.contains('\n') && !j.contains('\u{9b}'), "{j}");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["msg"], "two\nlines \u{9b}");
        assert_eq!(v["time"], t);
    }
}

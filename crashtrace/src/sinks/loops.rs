//! Crash loops: a process that crashes the same way again and again (a crash-looping pod)
//! gets its first reports in full, then a count. Per signature and window; time comes in.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// Signatures tracked at most; past it, the oldest window is closed early.
const MAX_SIGNATURES: usize = 4096;

/// A window whose reports were held back: said when it closes.
#[derive(Debug, PartialEq, Eq)]
pub struct Suppressed {
    pub signature: String,
    /// What the signature stands for, for the summary line.
    pub what: String,
    pub reported: u32,
    pub suppressed: u32,
    pub window: Duration,
}

struct Window {
    start: Instant,
    reported: u32,
    suppressed: u32,
    what: String,
}

pub struct LoopGuard {
    /// Full reports per signature and window; 0 lets every report through.
    per_window: u32,
    window: Duration,
    windows: HashMap<String, Window>,
}

impl LoopGuard {
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            windows: HashMap::new(),
        }
    }

    /// Whether a crash with `signature` at `now` gets a full report. `what` describes
    /// the signature for the summary.
    pub fn admit(&mut self, signature: &str, what: &str, now: Instant) -> bool {
        if self.per_window == 0 {
            return true;
        }
        if !self.windows.contains_key(signature) && self.windows.len() >= MAX_SIGNATURES {
            let oldest = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.windows.remove(&k);
            }
        }
        let w = self
            .windows
            .entry(signature.to_string())
            .or_insert_with(|| Window {
                start: now,
                reported: 0,
                suppressed: 0,
                what: what.to_string(),
            });
        if w.reported < self.per_window {
            w.reported += 1;
            true
        } else {
            w.suppressed += 1;
            false
        }
    }

    /// Windows over at `now`; those that held reports back are returned to be said.
    pub fn close_due(&mut self, now: Instant) -> Vec<Suppressed> {
        let window = self.window;
        let mut out = Vec::new();
        self.windows.retain(|sig, w| {
            if now.duration_since(w.start) < window {
                return true;
            }
            if w.suppressed > 0 {
                out.push(Suppressed {
                    signature: sig.clone(),
                    what: std::mem::take(&mut w.what),
                    reported: w.reported,
                    suppressed: w.suppressed,
                    window,
                });
            }
            false
        });
        out.sort_by(|a, b| a.signature.cmp(&b.signature));
        out
    }

    /// Every open window that held reports back, at the stop.
    pub fn close_all(&mut self) -> Vec<Suppressed> {
        let far = Instant::now() + self.window * 2;
        self.close_due(far)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reports_of_a_window_then_a_count() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut g = LoopGuard::new(2, Duration::from_secs(60));
        let admitted: Vec<bool> = (0..5).map(|i| g.admit("aa", "x", t0 + s * i)).collect();
        assert_eq!(admitted, [true, true, false, false, false]);
        // Another signature has its own window.
        assert!(g.admit("bb", "y", t0 + s * 5));
        assert!(g.close_due(t0 + s * 59).is_empty());
        let said = g.close_due(t0 + s * 60);
        assert_eq!(
            said,
            [Suppressed {
                signature: "aa".into(),
                what: "x".into(),
                reported: 2,
                suppressed: 3,
                window: Duration::from_secs(60),
            }]
        );
        // A new window starts over; "bb" held nothing back and is not said.
        assert!(g.admit("aa", "x", t0 + s * 61));
        assert!(g.close_all().is_empty());
        // 0: no limit.
        let mut off = LoopGuard::new(0, Duration::from_secs(60));
        assert!((0..100).all(|_| off.admit("aa", "x", t0)));
    }
}

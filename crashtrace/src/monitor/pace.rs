//! How often the event loop wakes by itself.
//!
//! Mapping records are drained on a short tick so that a new process's files are pinned,
//! and a new interpreter registered, within milliseconds. On a quiet machine that tick
//! is most of crashtrace's CPU (about 1.6 % of a CPU for 200 wakeups a second on the
//! development machine), so after a while with nothing to read the tick slows down and
//! the kernel's next record of any kind wakes the loop instead (`MappingStream::arm_waker`).

use std::time::Duration;

/// The tick while anything happens.
pub const FAST: Duration = Duration::from_millis(5);
/// The tick while nothing does: stop requests, statistics and expiries are looked at
/// this often.
pub const SLOW: Duration = Duration::from_millis(100);
/// Fast ticks with nothing to read before the tick slows down.
const QUIET_TICKS: u32 = 20;

#[derive(Debug, Default)]
pub struct Pace {
    quiet: u32,
    slow: bool,
}

impl Pace {
    #[cfg(test)]
    fn is_slow(&self) -> bool {
        self.slow
    }

    /// After a tick that read something (`active`) or nothing: the new period, when it
    /// changes.
    pub fn after_tick(&mut self, active: bool) -> Option<Duration> {
        if active {
            self.quiet = 0;
            return self.woke();
        }
        self.quiet = self.quiet.saturating_add(1);
        if !self.slow && self.quiet >= QUIET_TICKS {
            self.slow = true;
            return Some(SLOW);
        }
        None
    }

    /// Something woke the loop between ticks: the new period, when it changes.
    pub fn woke(&mut self) -> Option<Duration> {
        self.quiet = 0;
        if self.slow {
            self.slow = false;
            return Some(FAST);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slows_after_quiet_ticks_and_speeds_up_at_the_first_record() {
        let mut p = Pace::default();
        // (what happens, the period it sets, slow after it)
        let mut steps: Vec<(&str, Option<Duration>, bool)> = vec![];
        for _ in 0..QUIET_TICKS - 1 {
            steps.push(("quiet", None, false));
        }
        steps.extend([
            ("quiet", Some(SLOW), true),
            ("quiet", None, true),
            ("active", Some(FAST), false),
            ("active", None, false),
            ("quiet", None, false),
            ("woke", None, false),
        ]);
        for _ in 0..QUIET_TICKS - 1 {
            steps.push(("quiet", None, false));
        }
        steps.extend([
            ("quiet", Some(SLOW), true),
            ("woke", Some(FAST), false),
            ("woke", None, false),
        ]);
        for (i, (what, period, slow)) in steps.into_iter().enumerate() {
            let got = match what {
                "quiet" => p.after_tick(false),
                "active" => p.after_tick(true),
                _ => p.woke(),
            };
            assert_eq!((got, p.is_slow()), (period, slow), "step {i}: {what}");
        }
    }

    #[test]
    fn a_wake_restarts_the_count_of_quiet_ticks() {
        let mut p = Pace::default();
        for _ in 0..QUIET_TICKS - 1 {
            assert_eq!(p.after_tick(false), None);
        }
        assert_eq!(p.woke(), None);
        assert_eq!(p.after_tick(false), None);
        assert!(!p.is_slow());
    }
}

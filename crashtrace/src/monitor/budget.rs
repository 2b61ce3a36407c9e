//! The resource budgets crashtrace holds itself to. Memory: past `--memory-budget` the
//! symbolization caches are dropped (they are what grows; they are rebuilt as needed)
//! and that is said. CPU: the analysis thread, where the CPU goes, is held to
//! `--cpu-budget` percent of one CPU by pausing between crashes; reports come later,
//! none is dropped, the draining of the kernel's buffers is never slowed, and that too
//! is said.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

/// Set by the loop when crashtrace is over its memory budget; taken by the threads
/// that hold caches.
pub struct Shed {
    analysis: AtomicBool,
    registration: AtomicBool,
}

impl Shed {
    pub const fn new() -> Self {
        Self {
            analysis: AtomicBool::new(false),
            registration: AtomicBool::new(false),
        }
    }

    pub fn request(&self) {
        self.analysis.store(true, Ordering::Relaxed);
        self.registration.store(true, Ordering::Relaxed);
    }

    pub fn take_analysis(&self) -> bool {
        self.analysis.swap(false, Ordering::Relaxed)
    }

    pub fn take_registration(&self) -> bool {
        self.registration.swap(false, Ordering::Relaxed)
    }
}

impl Default for Shed {
    fn default() -> Self {
        Self::new()
    }
}

/// How long to pause after spending `cpu` so that the thread's share of one CPU stays
/// at `share` (0 < share ≤ 1): busy `cpu`, then idle `cpu × (1/share − 1)`.
pub fn pause_for(cpu: Duration, share: f64) -> Duration {
    if share >= 1.0 || share <= 0.0 {
        return Duration::ZERO;
    }
    cpu.mul_f64(1.0 / share - 1.0)
}

/// The CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    // SAFETY: plain old data, filled by the call.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and a pointer to our timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Past `limit` bytes of RSS, asks the threads to drop their caches and says so; at
/// most every 10 s (`last` is when it last did), so that a dropped cache can show.
pub fn check_memory(limit: u64, shed: &Shed, last: &mut Option<std::time::Instant>) {
    let rss = own_rss();
    if rss <= limit || last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
        return;
    }
    *last = Some(std::time::Instant::now());
    shed.request();
    say!(
        "crashtrace: RSS {:.1} MiB is over its memory budget of {:.1} MiB: symbolization \
         caches dropped (rebuilt as needed)",
        rss as f64 / (1 << 20) as f64,
        limit as f64 / (1 << 20) as f64
    );
}

/// Returns memory freed on the heap to the kernel (glibc keeps it otherwise): after
/// loading, which parses the kernel's BTF, and after parsing glibc's debug file.
pub fn release_freed() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

/// crashtrace's resident set size, in bytes.
pub fn own_rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_keep_the_share() {
        let ms = Duration::from_millis;
        let cases = [
            (ms(10), 1.0, ms(0)),
            (ms(10), 0.5, ms(10)),
            (ms(10), 0.25, ms(30)),
            (ms(30), 0.1, ms(270)),
            (ms(10), 0.0, ms(0)),
        ];
        for (cpu, share, want) in cases {
            let got = pause_for(cpu, share);
            assert!(
                got.abs_diff(want) < Duration::from_micros(1),
                "{cpu:?} {share}: {got:?}"
            );
        }
        let s = Shed::new();
        assert!(!s.take_analysis());
        s.request();
        assert!(s.take_analysis() && s.take_registration() && !s.take_analysis());
    }

    #[test]
    fn reads_its_own_costs() {
        let before = thread_cpu();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu() > before);
        assert!(own_rss() > 1 << 20);
    }
}

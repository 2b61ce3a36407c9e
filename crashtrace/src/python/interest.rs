//! Which process lifecycles the Python registry needs to hear about.
//!
//! The registry (on its own thread) only acts on the fork, exec and exit of processes it
//! tracks. Sending it every lifecycle woke that thread at every drain of a fork+exec
//! storm; the event loop keeps this superset of its processes instead and sends only
//! what concerns them.

use std::collections::HashSet;

use crate::capture::perf::Lifecycle;

/// Processes kept at most: past it (exits lost), the set starts again.
const MAX_PIDS: usize = 65_536;

#[derive(Default)]
pub struct Interest {
    pids: HashSet<u32>,
}

impl Interest {
    /// The registry was told of `pid` (an interpreter mapping, a capture).
    pub fn note(&mut self, pid: u32) {
        if self.pids.len() >= MAX_PIDS {
            self.pids.clear();
        }
        self.pids.insert(pid);
    }

    /// The lifecycles, in order, that concern the registry's processes: a fork of one
    /// (whose child it then tracks too), an exec or exit of one.
    pub fn filter(&mut self, events: Vec<Lifecycle>) -> Vec<Lifecycle> {
        let mut out = Vec::new();
        for e in events {
            let wanted = match e {
                Lifecycle::Fork(child, parent) => {
                    let w = self.pids.contains(&parent);
                    if w {
                        self.note(child);
                    }
                    w
                }
                Lifecycle::Exec(pid) | Lifecycle::Exit(pid) => self.pids.remove(&pid),
            };
            if wanted {
                out.push(e);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(e: &Lifecycle) -> String {
        match e {
            Lifecycle::Fork(c, p) => format!("fork {c}<{p}"),
            Lifecycle::Exec(p) => format!("exec {p}"),
            Lifecycle::Exit(p) => format!("exit {p}"),
        }
    }

    #[test]
    fn only_the_registrys_processes_and_their_children() {
        use Lifecycle::*;
        let mut i = Interest::default();
        i.note(10);
        // (events of one drain, what passes)
        let cases: Vec<(Vec<Lifecycle>, &[&str])> = vec![
            (vec![Fork(20, 1), Exec(20), Exit(20)], &[]),
            (
                vec![Fork(11, 10), Fork(12, 11)],
                &["fork 11<10", "fork 12<11"],
            ),
            // An exec ends what the registry knew; a later fork of it is not Python.
            (vec![Exec(11), Fork(13, 11)], &["exec 11"]),
            (vec![Exit(12), Exit(12)], &["exit 12"]),
            (vec![Exit(10), Exit(13)], &["exit 10"]),
            (vec![Fork(14, 10)], &[]),
        ];
        for (n, (events, want)) in cases.into_iter().enumerate() {
            let got: Vec<String> = i.filter(events).iter().map(short).collect();
            assert_eq!(got, want, "drain {n}");
        }
    }
}

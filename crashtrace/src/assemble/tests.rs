//! Table tests: record sequences in, a summary of what assembly hands on out.

use super::*;
use crashtrace_common::{RecordHeader, RecordKind};

const MS: u64 = 1_000_000;
const SEGV: i32 = 11;
const ABRT: i32 = 6;
const KILL: i32 = 9;
const BUS: i32 = 7;
/// si_code values: a fault (SEGV_MAPERR), raise()/tgkill (SI_TKILL), kill() (SI_USER).
const MAPERR: i32 = 1;
const TKILL: i32 = -6;
const USER: i32 = 0;

fn header(kind: RecordKind, pid: u32, tid: u32, t: u64) -> RecordHeader {
    RecordHeader {
        kind: kind as u32,
        size: 0,
        ktime_ns: t,
        pid,
        tid,
    }
}

/// A signal capture; `handler` when the program had a handler installed for it.
fn sig(pid: u32, tid: u32, signo: i32, si_code: i32, handler: bool, t: u64) -> Event {
    Event::Signal(Box::new(Capture {
        ktime_ns: t,
        pid,
        tid,
        signo,
        si_code,
        has_siginfo: true,
        default_action: !handler,
        handler: if handler { 0x5555_0000 } else { 0 },
        ..Default::default()
    }))
}

fn fault(pid: u32, tid: u32, t: u64) -> Event {
    sig(pid, tid, SEGV, MAPERR, false, t)
}

fn kill_from(pid: u32, signo: i32, sender: u32, t: u64) -> Event {
    let Event::Signal(mut c) = sig(pid, pid, signo, USER, false, t) else {
        unreachable!()
    };
    c.sender_pid = sender;
    c.sender_name = "kill".into();
    Event::Signal(c)
}

fn thread(pid: u32, tid: u32, t: u64) -> Event {
    let Event::Signal(c) = sig(pid, tid, KILL, USER, false, t) else {
        unreachable!()
    };
    Event::Thread(c)
}

fn exit(pid: u32, t: u64) -> Event {
    Event::Exit(ProcessExit {
        header: header(RecordKind::ProcessExit, pid, pid, t),
        exit_code: 0x8b,
        ..Default::default()
    })
}

/// The main thread's exit, with a failure status, soon after a handled signal.
fn exit_after_handler(pid: u32, t: u64) -> Event {
    Event::Exit(ProcessExit {
        header: header(RecordKind::ProcessExit, pid, pid, t),
        exit_code: 2 << 8,
        flags: EXIT_AFTER_HANDLER,
        ..Default::default()
    })
}

fn fault_maps(pid: u32, tid: u32, t: u64) -> Event {
    Event::FaultMaps(FaultMaps {
        header: header(RecordKind::FaultMaps, pid, tid, t),
        ..Default::default()
    })
}

fn oom(pid: u32, t: u64) -> Event {
    // SAFETY: a plain-old-data record; all zeroes is a valid value.
    let mut o: OomVictim = unsafe { std::mem::zeroed() };
    o.header = header(RecordKind::OomVictim, pid, pid, t);
    Event::Oom(o)
}

fn py_thread(pid: u32, thread_id: u64, t: u64) -> Event {
    // SAFETY: as above.
    let mut p: PyThread = unsafe { std::mem::zeroed() };
    p.header = header(RecordKind::PyThread, pid, pid, t);
    p.thread_id = thread_id;
    Event::PyThread(Box::new(p))
}

fn py_code(pid: u32, code: u64, t: u64) -> Event {
    // SAFETY: as above.
    let mut c: PyCode = unsafe { std::mem::zeroed() };
    c.header = header(RecordKind::PyCode, pid, pid, t);
    c.code = code;
    Event::PyCode(Box::new(c))
}

enum Step {
    /// A record, received at `at` ns.
    Rec(u64, Event),
    /// The periodic expiry, at this time.
    Tick(u64),
}
use Step::{Rec, Tick};

fn summary(a: &Assembled) -> String {
    match a {
        Assembled::Crash(c) => {
            let s = &c.subject;
            let mut out = format!(
                "crash {} tid {} sig {}/{}",
                s.pid, s.tid, s.signo, s.si_code
            );
            if let Some(r) = &c.reraise {
                out += &format!(" reraise {}/{} tid {}", r.signo, r.si_code, r.tid);
            }
            if !c.threads.is_empty() {
                let tids: Vec<String> = c.threads.iter().map(|t| t.tid.to_string()).collect();
                out += &format!(" threads {}", tids.join(","));
            }
            out += if c.exit.is_some() {
                " exit"
            } else {
                " no-exit"
            };
            if c.fault_maps.is_some() {
                out += " fault-maps";
            }
            if c.oom.is_some() {
                out += " oom";
            }
            if s.sender_pid != 0 {
                out += &format!(" sender {}", s.sender_pid);
            }
            if let Some(p) = &c.python {
                out += &format!(" python {}t/{}c", p.threads.len(), p.codes.len());
            }
            out
        }
        Assembled::CaptureLost(e) => format!("lost {}", e.header.pid),
        Assembled::OrphanThread { pid, tid } => format!("orphan {pid}/{tid}"),
        Assembled::Recovered { pid, tid, signo } => format!("recovered {pid}/{tid} sig {signo}"),
    }
}

fn run(steps: Vec<Step>) -> Vec<String> {
    let mut a = Assembler::new();
    let mut out = Vec::new();
    for step in steps {
        match step {
            Rec(at, e) => out.extend(a.push(e, at)),
            Tick(at) => out.extend(a.expire(at)),
        }
    }
    out.iter().map(summary).collect()
}

#[test]
fn assembles_record_sequences() {
    let late = EXIT_WAIT_NS + MS;
    let cases: Vec<(&str, Vec<Step>, Vec<&str>)> = vec![
        (
            "a plain fault, then the exit",
            vec![Rec(1, fault(10, 10, 1)), Rec(2, exit(10, 2))],
            vec!["crash 10 tid 10 sig 11/1 exit"],
        ),
        (
            "a handled fault re-raised with raise(): one crash whose subject is the fault",
            vec![
                Rec(1, sig(10, 11, SEGV, MAPERR, true, 1)),
                Rec(2, sig(10, 11, SEGV, TKILL, false, 2)),
                Rec(3, exit(10, 3)),
            ],
            vec!["crash 10 tid 11 sig 11/1 reraise 11/-6 tid 11 exit"],
        ),
        (
            "a re-raise sent to the process lands on another thread: still paired",
            vec![
                Rec(1, sig(10, 11, SEGV, MAPERR, true, 1)),
                Rec(2, sig(10, 10, SEGV, USER, false, 2)),
                Rec(3, exit(10, 3)),
            ],
            vec!["crash 10 tid 11 sig 11/1 reraise 11/0 tid 10 exit"],
        ),
        (
            "a handler that calls abort(): the fault is the subject, SIGABRT its end",
            vec![
                Rec(1, sig(10, 11, SEGV, MAPERR, true, 1)),
                Rec(2, sig(10, 11, ABRT, TKILL, false, 2)),
                Rec(3, exit(10, 3)),
            ],
            vec!["crash 10 tid 11 sig 11/1 reraise 6/-6 tid 11 exit"],
        ),
        (
            "another signal from another thread is not the handled one's",
            vec![
                Rec(1, sig(10, 11, SEGV, MAPERR, true, 1)),
                Rec(2, sig(10, 12, ABRT, TKILL, false, 2)),
                Rec(3, exit(10, 3)),
            ],
            vec!["crash 10 tid 12 sig 6/-6 exit"],
        ),
        (
            "another signal long after the handled one is the process's own",
            vec![
                Rec(1, sig(10, 11, SEGV, MAPERR, true, 1)),
                Rec(2, sig(10, 11, ABRT, TKILL, false, HANDLED_END_NS + 2)),
                Rec(3, exit(10, HANDLED_END_NS + 3)),
            ],
            vec!["crash 10 tid 11 sig 6/-6 exit"],
        ),
        (
            "a handler that exits with status 2 (Go): the latest handled fault, with the exit",
            vec![
                Rec(1, sig(10, 11, SEGV, MAPERR, true, 1)),
                Rec(2, sig(10, 12, SEGV, MAPERR, true, 2)),
                Rec(3, exit_after_handler(10, 3)),
                Tick(HANDLED_WAIT_NS + 4),
            ],
            vec!["crash 10 tid 12 sig 11/1 exit"],
        ),
        (
            "an exit long after the handled fault: it recovered, nothing reported",
            vec![
                Rec(1, sig(10, 11, SEGV, MAPERR, true, 1)),
                Rec(2, exit_after_handler(10, HANDLED_END_NS + 2)),
                Tick(HANDLED_WAIT_NS + 4),
            ],
            vec![],
        ),
        (
            "an exit after a handler whose capture never came: nothing to say",
            vec![Rec(1, exit_after_handler(10, 1))],
            vec![],
        ),
        (
            "a second fault in the same thread (kernel si_code) is no re-raise",
            vec![
                Rec(1, sig(10, 11, SEGV, MAPERR, true, 1)),
                Rec(2, sig(10, 11, SEGV, MAPERR, false, 2)),
                Rec(3, exit(10, 3)),
            ],
            vec!["crash 10 tid 11 sig 11/1 exit"],
        ),
        (
            "a handler that recovers: nothing reported, said at housekeeping",
            vec![
                Rec(1, sig(10, 11, SEGV, MAPERR, true, 1)),
                Tick(HANDLED_WAIT_NS + 2),
            ],
            vec!["recovered 10/11 sig 11"],
        ),
        (
            "a re-raise after the wait is no longer paired",
            vec![
                Rec(1, sig(10, 11, SEGV, MAPERR, true, 1)),
                Rec(2, sig(10, 11, SEGV, TKILL, false, HANDLED_WAIT_NS + 2)),
                Rec(3, exit(10, HANDLED_WAIT_NS + 3)),
            ],
            vec!["crash 10 tid 11 sig 11/-6 exit"],
        ),
        (
            "a fault whose exit never comes: reported at the deadline, not before",
            vec![
                Rec(1, fault(10, 10, 1)),
                Tick(EXIT_WAIT_NS),
                Tick(late),
                Tick(late + 1),
            ],
            vec!["crash 10 tid 10 sig 11/1 no-exit"],
        ),
        (
            "the other threads at the group exit join the crash",
            vec![
                Rec(1, fault(10, 12, 1)),
                Rec(2, thread(10, 11, 2)),
                Rec(2, thread(10, 10, 2)),
                Rec(3, exit(10, 3)),
            ],
            vec!["crash 10 tid 12 sig 11/1 threads 11,10 exit"],
        ),
        (
            "a second thread dying of a fatal signal before the exit is one more thread",
            vec![
                Rec(1, fault(10, 12, 1)),
                Rec(2, fault(10, 13, 2)),
                Rec(3, exit(10, 3)),
            ],
            vec!["crash 10 tid 12 sig 11/1 threads 13 exit"],
        ),
        (
            "a thread capture without its crash is said, not attached elsewhere",
            vec![
                Rec(1, thread(20, 21, 1)),
                Rec(2, fault(10, 10, 2)),
                Rec(3, exit(10, 3)),
            ],
            vec!["orphan 20/21", "crash 10 tid 10 sig 11/1 exit"],
        ),
        (
            "an exit whose capture was lost",
            vec![Rec(1, exit(10, 1))],
            vec!["lost 10"],
        ),
        (
            "the fault's mapping goes with its own thread's capture only",
            vec![
                Rec(1, fault(10, 10, 5)),
                Rec(1, fault_maps(10, 10, 5)),
                Rec(1, fault_maps(30, 31, 5)),
                Rec(2, exit(10, 6)),
            ],
            vec!["crash 10 tid 10 sig 11/1 exit fault-maps"],
        ),
        (
            "fault maps older than the capture belong to an earlier fault",
            vec![
                Rec(1, fault_maps(10, 10, 1)),
                Rec(2, fault(10, 10, 5)),
                Rec(3, exit(10, 6)),
            ],
            vec!["crash 10 tid 10 sig 11/1 exit"],
        ),
        (
            "an OOM victim's SIGKILL carries the OOM record",
            vec![
                Rec(1, oom(10, 1)),
                Rec(2, kill_from(10, KILL, 0, 2)),
                Rec(3, exit(10, 3)),
            ],
            vec!["crash 10 tid 10 sig 9/0 exit oom"],
        ),
        (
            "an OOM record does not explain a SIGSEGV",
            vec![
                Rec(1, oom(10, 1)),
                Rec(2, fault(10, 10, 2)),
                Rec(3, exit(10, 3)),
            ],
            vec!["crash 10 tid 10 sig 11/1 exit"],
        ),
        (
            "a kill from another process keeps its sender",
            vec![Rec(1, kill_from(10, KILL, 99, 1)), Rec(2, exit(10, 2))],
            vec!["crash 10 tid 10 sig 9/0 exit sender 99"],
        ),
        (
            "Python records go to their own process's crash only",
            vec![
                Rec(1, fault(10, 10, 1)),
                Rec(1, py_thread(10, 0x7f00, 1)),
                Rec(1, py_thread(10, 0x7f01, 1)),
                Rec(1, py_code(10, 0xc0de, 1)),
                Rec(1, py_thread(20, 0x7f00, 1)),
                Rec(2, exit(10, 2)),
            ],
            vec!["crash 10 tid 10 sig 11/1 exit python 2t/1c"],
        ),
        (
            "a re-raise's second Python batch does not replace the fault's",
            vec![
                Rec(1, sig(10, 10, ABRT, TKILL, true, 1)),
                Rec(1, py_thread(10, 0x7f00, 1)),
                Rec(2, sig(10, 10, ABRT, TKILL, false, 2)),
                Rec(2, py_thread(10, 0x7f00, 2)),
                Rec(2, py_thread(10, 0x7f01, 2)),
                Rec(3, exit(10, 3)),
            ],
            vec!["crash 10 tid 10 sig 6/-6 reraise 6/-6 tid 10 exit python 1t/0c"],
        ),
        (
            "a pid reused after the exit: two crashes, each with its own records",
            vec![
                Rec(1, fault(10, 10, 1)),
                Rec(1, fault_maps(10, 10, 1)),
                Rec(2, exit(10, 2)),
                Rec(3, sig(10, 10, BUS, 2, false, 3)),
                Rec(4, thread(10, 11, 4)),
                Rec(5, exit(10, 5)),
            ],
            vec![
                "crash 10 tid 10 sig 11/1 exit fault-maps",
                "crash 10 tid 10 sig 7/2 threads 11 exit",
            ],
        ),
        (
            "crashes of two processes interleaved",
            vec![
                Rec(1, fault(10, 10, 1)),
                Rec(1, fault(20, 21, 1)),
                Rec(2, thread(20, 20, 2)),
                Rec(2, thread(10, 11, 2)),
                Rec(3, exit(20, 3)),
                Rec(4, exit(10, 4)),
            ],
            vec![
                "crash 20 tid 21 sig 11/1 threads 20 exit",
                "crash 10 tid 10 sig 11/1 threads 11 exit",
            ],
        ),
    ];
    let n = cases.len();
    assert!(n >= 15);
    for (name, steps, expected) in cases {
        assert_eq!(run(steps), expected, "case: {name}");
    }
}

#[test]
fn pending_crashes_are_listed_until_their_exit() {
    let mut a = Assembler::new();
    assert!(a.push(fault(10, 10, 1), 1).is_none());
    assert_eq!(a.pending_pids().collect::<Vec<_>>(), [10]);
    assert!(matches!(a.push(exit(10, 2), 2), Some(Assembled::Crash(_))));
    assert_eq!(a.pending_pids().count(), 0);
}

#[test]
fn stale_side_records_are_pruned() {
    let mut a = Assembler::new();
    a.push(fault_maps(10, 10, 1), 1);
    a.push(oom(10, 1), 1);
    a.push(py_thread(10, 1, 1), 1);
    assert!(a.expire(SIDE_RECORD_NS + 2).is_empty());
    // A crash of the same pid long after gets none of them.
    a.push(
        kill_from(10, KILL, 0, SIDE_RECORD_NS + 3),
        SIDE_RECORD_NS + 3,
    );
    let got: Vec<String> = a
        .push(exit(10, SIDE_RECORD_NS + 4), SIDE_RECORD_NS + 4)
        .iter()
        .map(summary)
        .collect();
    assert_eq!(got, ["crash 10 tid 10 sig 9/0 exit"]);
}

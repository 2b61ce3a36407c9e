//! A live process's threads, as `crashtrace dump` read them: the thread and traceback
//! parts of a crash report, with each thread's state where a crash has its signal.
//! No I/O: the frames come symbolized, the time and what /proc said come as arguments.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{
    model::{PythonReport, ThreadReport, ThreadState},
    report::attribution,
    sys::cgroups,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DumpReport {
    pub schema_version: u32,
    /// `dump`: tells a dump from a crash report in one stream.
    pub kind: String,
    pub time: String,
    pub host: Option<String>,
    pub pid: u32,
    pub process_name: String,
    pub executable: Option<String>,
    pub namespace_pid: Option<u32>,
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    pub threads: Vec<ThreadReport>,
    /// Threads listed when the dump began and gone when their turn came.
    pub threads_exited: Vec<u32>,
    /// The process exited before or while it was read: this is all that could be.
    pub exited: bool,
    pub python: Option<PythonReport>,
    pub notes: Vec<String>,
    /// How long the kernel's pass over the threads took (the target runs on meanwhile).
    pub read_ms: f64,
}

/// One thread as read, already unwound and symbolized.
pub struct DumpedThread {
    pub report: ThreadReport,
    pub task_state: u32,
    pub on_cpu: bool,
    /// `orig_rax` of its saved registers: the system call it is in, or negative.
    pub syscall_nr: i64,
    pub ns_pid: u32,
}

pub struct DumpInput {
    pub pid: u32,
    pub process_name: String,
    pub executable: Option<String>,
    pub cgroup: Option<String>,
    pub host: Option<String>,
    /// The thread ids /proc listed before the pass.
    pub listed: Vec<u32>,
    pub threads: Vec<DumpedThread>,
    pub python: Option<PythonReport>,
    /// Whether the process still existed after the pass.
    pub alive_after: bool,
    /// Records the ring buffer had no room for, over the whole pass.
    pub ring_lost: u64,
    pub time: SystemTime,
    pub read_ms: f64,
}

pub fn build(input: DumpInput) -> DumpReport {
    let mut threads: Vec<ThreadReport> = input
        .threads
        .iter()
        .map(|t| {
            let mut r = t.report.clone();
            r.role = attribution::thread_role(&r.name, r.tid == input.pid).map(str::to_string);
            r.state = Some(thread_state(t.task_state, t.on_cpu, t.syscall_nr));
            r
        })
        .collect();
    threads.sort_by_key(|t| (attribution::thread_rank(t.role.as_deref()), t.tid));
    let read: Vec<u32> = threads.iter().map(|t| t.tid).collect();
    let threads_exited: Vec<u32> = input
        .listed
        .iter()
        .copied()
        .filter(|t| !read.contains(t))
        .collect();
    let exited = !input.alive_after || threads.is_empty();
    let mut notes = Vec::new();
    if threads.is_empty() {
        notes.push(format!(
            "process {} exited before its threads could be read: nothing of its stacks is here",
            input.pid
        ));
    } else if !input.alive_after {
        notes.push(format!(
            "process {} exited during the dump: {} of its threads were read before it went",
            input.pid,
            threads.len()
        ));
    }
    if !threads_exited.is_empty() && !threads.is_empty() {
        notes.push(format!(
            "{} thread(s) listed when the dump began had exited when it reached them",
            threads_exited.len()
        ));
    }
    if input.ring_lost > 0 {
        notes.push(format!(
            "{} record(s) did not fit the dump's buffer: some threads are missing",
            input.ring_lost
        ));
    }
    let container_id = input.cgroup.as_deref().and_then(cgroups::container_id);
    DumpReport {
        schema_version: 1,
        kind: "dump".into(),
        time: humantime::format_rfc3339_millis(input.time).to_string(),
        host: input.host,
        pid: input.pid,
        process_name: input.process_name,
        executable: input.executable,
        namespace_pid: input
            .threads
            .iter()
            .find(|t| t.ns_pid != 0 && t.ns_pid != input.pid)
            .map(|t| t.ns_pid),
        cgroup: input.cgroup,
        container_id,
        threads,
        threads_exited,
        exited,
        python: input.python,
        notes,
        read_ms: input.read_ms,
    }
}

/// What a thread was doing when read, from its `__state`, whether it was on a CPU and
/// the system call its saved registers are in.
pub fn thread_state(task_state: u32, on_cpu: bool, syscall_nr: i64) -> ThreadState {
    // TASK_INTERRUPTIBLE, TASK_UNINTERRUPTIBLE, __TASK_STOPPED, __TASK_TRACED.
    let state = match task_state {
        0 if on_cpu => "running",
        0 => "runnable",
        s if s & 0x8 != 0 => "traced",
        s if s & 0x4 != 0 => "stopped",
        s if s & 0x2 != 0 => "disk-sleep",
        _ => "sleeping",
    };
    let consistency = if on_cpu {
        "may-tear"
    } else if task_state == 0 {
        "preempted"
    } else {
        "consistent"
    };
    ThreadState {
        state: state.into(),
        syscall: (syscall_nr >= 0).then(|| syscall_name(syscall_nr as u64)),
        consistency: consistency.into(),
    }
}

/// x86-64 system call names a blocked thread is commonly in; the number for the rest.
/// The numbers are the kernel's fixed ABI (arch/x86/entry/syscalls/syscall_64.tbl).
fn syscall_name(nr: u64) -> String {
    let name = match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        23 => "select",
        34 => "pause",
        35 => "nanosleep",
        42 => "connect",
        43 => "accept",
        44 => "sendto",
        45 => "recvfrom",
        46 => "sendmsg",
        47 => "recvmsg",
        61 => "wait4",
        128 => "rt_sigtimedwait",
        130 => "rt_sigsuspend",
        202 => "futex",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        247 => "waitid",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        426 => "io_uring_enter",
        441 => "epoll_pwait2",
        449 => "futex_waitv",
        _ => return format!("syscall {nr}"),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (`__state`, on a CPU, orig_rax) and the state, system call and consistency said.
    type Case = (
        u32,
        bool,
        i64,
        &'static str,
        Option<&'static str>,
        &'static str,
    );

    #[test]
    fn states_and_how_far_to_trust_them() {
        let cases: [Case; 7] = [
            (0x1, false, 202, "sleeping", Some("futex"), "consistent"),
            (
                0x402,
                false,
                288,
                "disk-sleep",
                Some("accept4"),
                "consistent",
            ),
            (
                0x1,
                false,
                230,
                "sleeping",
                Some("clock_nanosleep"),
                "consistent",
            ),
            (0x0, false, -1, "runnable", None, "preempted"),
            (0x0, true, -1, "running", None, "may-tear"),
            (0x4, false, 0, "stopped", Some("read"), "consistent"),
            (
                0x1,
                false,
                999,
                "sleeping",
                Some("syscall 999"),
                "consistent",
            ),
        ];
        for (st, cpu, nr, state, syscall, consistency) in cases {
            let got = thread_state(st, cpu, nr);
            assert_eq!(got.state, state, "{st:#x} {cpu}");
            assert_eq!(got.syscall.as_deref(), syscall, "{nr}");
            assert_eq!(got.consistency, consistency, "{st:#x} {cpu}");
        }
    }

    fn thread(tid: u32, name: &str) -> DumpedThread {
        DumpedThread {
            report: ThreadReport {
                tid,
                name: name.into(),
                role: None,
                frames: vec![],
                unwind: crate::model::UnwindReport {
                    method: "DWARF CFI".into(),
                    stack_bytes: 0,
                    stack_truncated: false,
                    stop_reason: String::new(),
                },
                state: None,
            },
            task_state: 1,
            on_cpu: false,
            syscall_nr: 202,
            ns_pid: 7,
        }
    }

    fn input(threads: Vec<DumpedThread>, listed: Vec<u32>, alive_after: bool) -> DumpInput {
        DumpInput {
            pid: 10,
            process_name: "p".into(),
            executable: None,
            cgroup: Some("/kubepods/pod1/cri-containerd-abc.scope".into()),
            host: None,
            listed,
            threads,
            python: None,
            alive_after,
            ring_lost: 0,
            time: SystemTime::UNIX_EPOCH,
            read_ms: 1.0,
        }
    }

    #[test]
    fn whole_partial_and_empty_dumps() {
        // Whole: main first, then by tid; its namespace pid; nothing exited.
        let r = build(input(
            vec![thread(12, "w"), thread(10, "p")],
            vec![10, 12],
            true,
        ));
        assert_eq!(
            r.threads.iter().map(|t| t.tid).collect::<Vec<_>>(),
            [10, 12]
        );
        assert_eq!(r.threads[0].role.as_deref(), Some("main"));
        assert_eq!(r.namespace_pid, Some(7));
        assert!(!r.exited && r.notes.is_empty() && r.threads_exited.is_empty());
        assert_eq!(
            r.threads[1].state.as_ref().unwrap().syscall.as_deref(),
            Some("futex")
        );
        // A thread listed before the pass and not read: named, and said.
        let r = build(input(vec![thread(10, "p")], vec![10, 11], true));
        assert_eq!(r.threads_exited, [11]);
        assert!(!r.exited);
        assert!(r.notes[0].contains("1 thread(s) listed"), "{:?}", r.notes);
        // The process went during the pass: what was read, and that it is partial.
        let r = build(input(vec![thread(10, "p")], vec![10, 11], false));
        assert!(r.exited);
        assert!(
            r.notes[0].contains("exited during the dump: 1 of its threads"),
            "{:?}",
            r.notes
        );
        // Gone before the pass: nothing read, said so.
        let r = build(input(vec![], vec![10], false));
        assert!(r.exited);
        assert!(
            r.notes[0].contains("exited before its threads could be read"),
            "{:?}",
            r.notes
        );
    }
}

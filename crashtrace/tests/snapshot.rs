//! Unwinding and symbolization on a recorded snapshot, without a kernel capture: a victim
//! records its own registers, stack and mappings at the fault (as the eBPF program does),
//! and the snapshot goes through the same analysis as a live capture.

use std::{path::PathBuf, process::Command};

use bytes::Bytes;
use crashtrace::{
    analyze::{ProcessView, analyze},
    assemble::Crash,
    capture::{pins::FilePins, records::Capture},
    symbolize::Symbolizer,
    sys::procfs::parse_proc_maps,
};
use crashtrace_common::UserRegs;

struct Snapshot {
    capture: Capture,
    maps: String,
    dir: PathBuf,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn record(cflags: &[&str], tag: &str) -> Snapshot {
    let dir =
        std::env::temp_dir().join(format!("crashtrace-snapshot-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("self_snapshot");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/self_snapshot.c");
    let st = Command::new("gcc")
        .args(cflags)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("gcc (cargo xtask setup installs it)");
    assert!(st.success());
    let out = dir.join("snap.bin");
    let st = Command::new(&exe).arg(&out).status().unwrap();
    assert!(st.success(), "victim did not record its snapshot");
    let raw = std::fs::read(&out).unwrap();
    let word = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap());
    let (rip, rsp, rbp, base, len) = (word(0), word(1), word(2), word(3), word(4) as usize);
    let stack = Bytes::copy_from_slice(&raw[40..40 + len]);
    let maps = String::from_utf8_lossy(&raw[40 + len..]).into_owned();
    let regs = UserRegs {
        rip,
        rsp,
        rbp,
        ..Default::default()
    };
    Snapshot {
        capture: Capture {
            ktime_ns: 0,
            pid: 1,
            tid: 1,
            signo: libc::SIGSEGV,
            si_code: 1,
            si_errno: 0,
            has_siginfo: true,
            si_addr: 0,
            si_pid: 0,
            si_uid: 0,
            default_action: true,
            handler: 0,
            thread_name: "self_snapshot".into(),
            process_name: "self_snapshot".into(),
            exe_name: "self_snapshot".into(),
            parent_pid: 0,
            parent_name: String::new(),
            ns_pid: 1,
            ns_tid: 1,
            cgroup_id: 0,
            sender_pid: 0,
            sender_uid: 0,
            sender_name: String::new(),
            regs: Some(regs),
            code: None,
            stack_start: base,
            stack,
            sp_page_skipped: false,
            stack_truncated: false,
            top: None,
            task_state: 0,
            on_cpu: false,
        },
        maps,
        // The executable must outlive the analysis: it is what gets symbolized.
        dir,
    }
}

fn names(s: &Snapshot, stack_limit: Option<usize>) -> (Vec<String>, String) {
    let mut c = s.capture.clone();
    if let Some(n) = stack_limit {
        c.stack = c.stack.slice(..n.min(c.stack.len()));
    }
    let maps = parse_proc_maps(&s.maps);
    let crash = Crash {
        subject: c,
        reraise: None,
        threads: vec![],
        exit: None,
        fault_maps: None,
        oom: None,
        python: None,
        memory: None,
    };
    let view = ProcessView {
        mappings: &maps,
        executable: None,
        cgroup: None,
        pins: &FilePins::new(),
        earlier_failure: None,
        xid: Vec::new(),
        host: None,
        kernel_note: None,
    };
    let r = analyze(
        &mut Symbolizer::new(&[], None),
        &crash,
        view,
        std::time::SystemTime::now(),
        0.0,
    );
    (
        r.frames
            .iter()
            .map(|f| f.function.clone().unwrap_or_else(|| "??".into()))
            .collect(),
        r.unwind.stop_reason,
    )
}

fn assert_chain(names: &[String]) {
    let want = ["crash_segv", "level3", "level2", "level1", "main"];
    assert_eq!(&names[..5], &want, "frames: {names:#?}");
    assert_eq!(names.last().unwrap(), "_start", "frames: {names:#?}");
}

#[test]
fn unwinds_code_without_frame_pointers() {
    let s = record(&["-O2", "-g", "-fomit-frame-pointer"], "nofp");
    let (names, stop) = names(&s, None);
    assert_chain(&names);
    assert_eq!(stop, "reached the outermost frame");
}

#[test]
fn unwinds_static_non_pie_binary() {
    let s = record(&["-O2", "-g", "-fomit-frame-pointer", "-static"], "static");
    let (names, _) = names(&s, None);
    assert_chain(&names);
}

#[test]
fn a_short_stack_copy_stops_with_a_reason() {
    let s = record(&["-O2", "-g", "-fomit-frame-pointer"], "short");
    // Only the bytes up to just above rsp: the first return address is out of reach.
    let keep = (s.capture.regs.unwrap().rsp - s.capture.stack_start) as usize;
    let (names, stop) = names(&s, Some(keep));
    assert_eq!(names, ["crash_segv"]);
    assert!(stop.contains("beyond the copied stack"), "{stop}");
}

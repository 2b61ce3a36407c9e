use std::io::Read as _;

use super::*;
use crate::model::{InlinedFrame, Location as Loc, PyFrameReport};

fn frame(function: &str, module: &str, offset: u64, base: u64) -> Frame {
    Frame {
        index: 0,
        address: base + offset,
        module: Some(module.into()),
        module_offset: Some(offset),
        build_id: Some("abcd".into()),
        function: Some(function.into()),
        function_offset: None,
        location: Some(Loc {
            file: "v.c".into(),
            line: Some(7),
            column: None,
        }),
        inlined: vec![],
        unnamed_reason: None,
        gap_before: None,
        python: vec![],
    }
}

fn decode(bytes: &[u8]) -> Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .unwrap();
    Profile::decode(raw.as_slice()).unwrap()
}

#[test]
fn one_sample_per_stack_counted_across_processes() {
    let mut p = CrashProfile::new(UNIX_EPOCH);
    let crash = |base: u64, pid: u32| {
        let mut r: CrashReport = serde_json::from_str(crate::report::text::tests::MINIMAL).unwrap();
        r.pid = pid;
        let mut top = frame("crash_segv", "/opt/v", 0x1130, base);
        top.inlined = vec![InlinedFrame {
            function: "helper".into(),
            location: None,
        }];
        let mut eval = frame(
            "_PyEval_EvalFrameDefault",
            "/usr/bin/python3.11",
            0x5000,
            base,
        );
        eval.python = vec![PyFrameReport {
            function: "train_step".into(),
            file: "train.py".into(),
            line: Some(12),
            entry: false,
        }];
        r.frames = vec![top, eval];
        r
    };
    // The same crash in two processes, at other addresses (ASLR).
    p.add(&crash(0x5555_0000_0000, 1));
    p.add(&crash(0x7777_0000_0000, 2));
    let mut other = crash(0, 3);
    other.signal.name = "SIGBUS".into();
    p.add(&other);
    let prof = decode(&p.encode(UNIX_EPOCH + std::time::Duration::from_secs(5)));
    let s = |i: i64| prof.string_table[i as usize].as_str();
    assert_eq!(s(0), "");
    assert_eq!(
        (s(prof.sample_type[0].r#type), s(prof.sample_type[0].unit)),
        ("crashes", "count")
    );
    assert_eq!(prof.duration_nanos, 5_000_000_000);
    assert_eq!(prof.sample.len(), 2);
    assert_eq!(prof.sample[0].value, [2]);
    assert_eq!(prof.sample[1].value, [1]);
    // Leaf first: the faulting frame (with its inlined function first), then the
    // Python frame the eval loop ran, then the eval loop.
    let names: Vec<Vec<&str>> = prof.sample[0]
        .location_id
        .iter()
        .map(|id| {
            let l = &prof.location[*id as usize - 1];
            l.line
                .iter()
                .map(|line| s(prof.function[line.function_id as usize - 1].name))
                .collect()
        })
        .collect();
    assert_eq!(
        names,
        [
            vec!["helper", "crash_segv"],
            vec!["train_step"],
            vec!["_PyEval_EvalFrameDefault"]
        ]
    );
    let top = &prof.location[prof.sample[0].location_id[0] as usize - 1];
    assert_eq!(
        top.address, 0x1130,
        "a file offset, the same in every process"
    );
    let m = &prof.mapping[top.mapping_id as usize - 1];
    assert_eq!((s(m.filename), s(m.build_id)), ("/opt/v", "abcd"));
    let labels: Vec<(&str, &str)> = prof.sample[1]
        .label
        .iter()
        .map(|l| (s(l.key), s(l.str)))
        .collect();
    assert!(labels.contains(&("signal", "SIGBUS")), "{labels:?}");
}

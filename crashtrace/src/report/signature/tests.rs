use super::*;
use crate::model::{InlinedFrame, PyFrameReport, PyThreadReport, PythonReport};

fn frame(function: Option<&str>, module: &str, offset: u64) -> Frame {
    Frame {
        index: 0,
        address: 0x7f00_0000_0000 + offset,
        module: Some(module.into()),
        module_offset: Some(offset),
        build_id: Some("0123456789abcdef0123456789abcdef01234567".into()),
        function: function.map(str::to_string),
        function_offset: Some(4),
        location: None,
        inlined: vec![],
        unnamed_reason: None,
        gap_before: None,
        python: vec![],
    }
}

fn report(frames: Vec<Frame>) -> CrashReport {
    let mut r: CrashReport =
        serde_json::from_str(crate::report::text::tests::MINIMAL).expect("the minimal report");
    r.frames = frames;
    r
}

#[test]
fn names_lose_what_differs_between_builds() {
    let cases = [
        ("crash_segv", "crash_segv"),
        ("level2.cold", "level2"),
        ("parse.isra.0", "parse"),
        ("step.constprop.3.part.1", "step"),
        (
            "ns::Tensor::add(at::Tensor const&, c10::Scalar) const",
            "ns::Tensor::add",
        ),
        ("void ns::run<int>(int)", "ns::run<int>"),
        (
            "std::vector<int, std::allocator<int> >::at(unsigned long)",
            "std::vector<int, std::allocator<int> >::at",
        ),
        (
            "(anonymous namespace)::worker(void*)",
            "(anonymous namespace)::worker",
        ),
        ("f(int) [clone .cold]", "f"),
        (
            "crash_rust::level1::h0123456789abcdef",
            "crash_rust::level1",
        ),
        ("crash_rust::level1::hello", "crash_rust::level1::hello"),
        ("__strlen_avx2", "__strlen"),
        ("__memmove_avx_unaligned_erms", "__memmove"),
        ("__strlen_evex", "__strlen"),
        ("operator new(unsigned long)", "operator new"),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize(raw), want, "{raw}");
    }
}

#[test]
fn the_abort_path_is_skipped_and_the_cause_is_classed() {
    let rules = Rules::default();
    let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    let mut r = report(vec![
        frame(Some("__pthread_kill_implementation"), libc, 0x8eeec),
        frame(Some("__GI_raise"), libc, 0x3bfb2),
        frame(Some("__GI_abort"), libc, 0x26472),
        frame(Some("__assert_fail_base"), libc, 0x26395),
        frame(Some("__GI___assert_fail"), libc, 0x34ec2),
        frame(Some("check_shape"), "/opt/a/why", 0x12fc),
        frame(Some("main"), "/opt/a/why", 0x11ac),
        frame(Some("__libc_start_call_main"), libc, 0x2724a),
    ]);
    r.signal.number = libc::SIGABRT;
    r.signal.name = "SIGABRT".into();
    r.signal.code_name = Some("SI_TKILL".into());
    r.abort_message = Some(
        "why: /opt/a/why.c:20: check_shape: Assertion `shape == 3 && \"mismatch\"' failed.".into(),
    );
    let s = signature(&r, &rules);
    assert_eq!(s.frames, ["check_shape", "main"]);
    assert_eq!(
        s.cause,
        "SIGABRT: assertion `shape == 3 && \"mismatch\"' failed"
    );
    // The same assertion built elsewhere (another path, another line): the same.
    r.abort_message = Some(
        "why: /home/u/src/why.c:31: check_shape: Assertion `shape == 3 && \"mismatch\"' failed."
            .into(),
    );
    assert_eq!(signature(&r, &rules), s);
    r.abort_message = Some("free(): double free detected in tcache 2".into());
    assert_eq!(
        signature(&r, &rules).cause,
        "SIGABRT: free(): double free detected in tcache N"
    );
    r.abort_message = None;
    assert_eq!(signature(&r, &rules).cause, "SIGABRT");
}

#[test]
fn unnamed_frames_cuda_runs_and_inlined_functions() {
    let rules = Rules::default();
    let mut inl = frame(Some("outer"), "/srv/app", 0x2000);
    inl.inlined = vec![InlinedFrame {
        function: "inner_helper".into(),
        location: None,
    }];
    let mut stripped = frame(None, "/srv/lib/libvendor.so.1", 0x1a2b);
    stripped.unnamed_reason = Some("stripped".into());
    let r = report(vec![
        frame(
            Some("cuLaunchKernel_ptsz"),
            "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14",
            0x1,
        ),
        frame(
            Some("cudart::doLaunch"),
            "/venv/nvidia/cu13/lib/libcudart.so.13",
            0x2,
        ),
        frame(
            Some("cudaLaunchKernel"),
            "/venv/nvidia/cu13/lib/libcudart.so.13",
            0x3,
        ),
        stripped,
        inl,
    ]);
    let s = signature(&r, &rules);
    assert_eq!(
        s.frames,
        [
            "[cuda]",
            "libvendor.so.1@0123456789abcdef+0x1a2b",
            "inner_helper"
        ]
    );
    assert_eq!(s.cause, "SIGSEGV SEGV_MAPERR");
    assert_eq!(s.id.len(), 16);
}

#[test]
fn the_same_crash_anywhere_has_the_same_id_and_others_differ() {
    let rules = Rules::default();
    let at = |dir: &str, base: u64| {
        let mut r = report(vec![
            frame(Some("crash_segv"), &format!("{dir}/victim"), 0x1130),
            frame(Some("level2"), &format!("{dir}/victim"), 0x1150),
            frame(Some("level1"), &format!("{dir}/victim"), 0x1170),
        ]);
        for f in &mut r.frames {
            f.address += base;
        }
        r.pid = base as u32;
        r
    };
    let a = signature(&at("/opt/a", 0x1000), &rules);
    let b = signature(&at("/home/u/b", 0x7000_0000), &rules);
    assert_eq!(a, b);
    let mut other = at("/opt/a", 0);
    other.frames[0].function = Some("crash_bus".into());
    assert_ne!(signature(&other, &rules).id, a.id);
    let mut fpe = at("/opt/a", 0);
    fpe.signal.name = "SIGFPE".into();
    fpe.signal.code_name = Some("FPE_INTDIV".into());
    assert_ne!(signature(&fpe, &rules).id, a.id);
    let mut kill = at("/opt/a", 0);
    kill.signal.external = true;
    kill.signal.name = "SIGTERM".into();
    assert_eq!(signature(&kill, &rules).cause, "killed by SIGTERM");
}

#[test]
fn the_innermost_user_python_frame() {
    let rules = Rules::default();
    let mut r = report(vec![frame(Some("__strlen_avx2"), "/lib/libc.so.6", 0x10)]);
    let pf = |function: &str, file: &str| PyFrameReport {
        function: function.into(),
        file: file.into(),
        line: Some(3),
        entry: false,
    };
    r.python = Some(PythonReport {
        version: "3.11".into(),
        threads: vec![PyThreadReport {
            thread_id: "0x1".into(),
            native_id: None,
            crashing: true,
            name: None,
            gil: Some(true),
            truncated: false,
            frames: vec![
                pf("string_at", "/usr/lib/python3.11/ctypes/__init__.py"),
                pf(
                    "forward",
                    "/v/lib/python3.11/site-packages/torch/nn/module.py",
                ),
                pf("train_step", "/home/u/job/train.py"),
                pf("<module>", "/home/u/job/train.py"),
            ],
        }],
    });
    let s = signature(&r, &rules);
    assert_eq!(s.python.as_deref(), Some("train.py:train_step"));
    assert_eq!(s.frames, ["__strlen"]);
}

#[test]
fn rules_files_override_what_they_name() {
    let r = Rules::from_toml("frames = 1\nskip_prefixes = [\"crash_\"]\n").unwrap();
    let rep = report(vec![
        frame(Some("crash_segv"), "/a/v", 1),
        frame(Some("level2"), "/a/v", 2),
        frame(Some("level1"), "/a/v", 3),
    ]);
    assert_eq!(signature(&rep, &r).frames, ["level2"]);
    assert!(Rules::from_toml("frames = 0").is_err());
    assert!(Rules::from_toml("nope = 1").unwrap_err().contains("nope"));
    assert!(Rules::from_toml("[python]\nlibrary_paths = []\n").is_ok());
}

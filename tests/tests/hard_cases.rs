//! Where the easy approach fails: crash storms, deleted and replaced binaries, stripped
//! code with separate debug files, containers, frames without files.

use std::{collections::HashMap, process::Command, time::Instant};

use crashtrace_tests::{CrashReport, Crashtrace, Victim, assert_in_order, function_names, victim};

#[test]
fn two_hundred_crashes_in_two_seconds() {
    let ct = Crashtrace::start(&["--comm", "crash_"]);
    let start = Instant::now();
    let mut expect: HashMap<u32, &str> = HashMap::new();
    let mut victims = Vec::new();
    for i in 0..200 {
        // Two kinds, so a report attributed to the wrong process would show.
        let (cmd, kind) = if i % 2 == 0 {
            (
                Command::new(victim("crash_nofp")).arg("abort").spawn(),
                "SIGABRT",
            )
        } else {
            (
                Command::new(victim("crash_fp")).arg("segv").spawn(),
                "SIGSEGV",
            )
        };
        let child = cmd.expect("spawn");
        expect.insert(child.id(), kind);
        victims.push(child);
    }
    for mut v in victims {
        let _ = v.wait();
    }
    let spawned = start.elapsed();
    eprintln!("200 victims crashed within {spawned:?}");
    assert!(spawned.as_secs_f64() < 10.0);
    for (pid, kind) in &expect {
        let r = ct.report_for(*pid);
        assert_eq!(r.signal.name, *kind, "pid {pid}");
        let names = function_names(&r);
        let want = if *kind == "SIGABRT" {
            "crash_abort"
        } else {
            "crash_segv"
        };
        assert_in_order(&names, &[want, "level3", "level2", "level1", "main"]);
    }
    for pid in expect.keys() {
        assert_eq!(ct.reports_for(*pid).len(), 1, "pid {pid} reported twice");
    }
    let lost: Vec<String> = ct
        .stderr()
        .into_iter()
        .filter(|l| l.contains("lost"))
        .collect();
    assert!(lost.is_empty(), "{lost:?}");
}

/// A scratch directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("crashtrace-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a victim that waits for its trigger; once crashtrace has pinned the file whose
/// path ends with `pinned`, runs `meanwhile` (a delete, a deploy), then crashes the victim
/// and returns its report.
fn crash_after(
    ct: &Crashtrace,
    cmd: &mut Command,
    pinned: &str,
    meanwhile: impl FnOnce(),
) -> CrashReport {
    let mut v = Victim::spawn(cmd);
    v.wait_ready();
    ct.wait_pinned(pinned);
    meanwhile();
    v.trigger();
    assert_eq!(v.wait_signal(), Some(libc::SIGSEGV));
    ct.report_for(v.pid())
}

#[test]
fn deleted_executable_and_library_are_still_named() {
    let dir = TempDir::new("deleted");
    let exe = dir.0.join("doomed");
    std::fs::copy(victim("crash_nofp"), &exe).unwrap();
    let lib = dir.0.join("libdoomed.so");
    std::fs::copy(victim("libvictim.so"), &lib).unwrap();
    let ct = Crashtrace::start(&["--comm", "doomed", "--comm", "use_dlopen", "-v"]);

    let r = crash_after(&ct, Command::new(&exe).arg("wait-segv"), "/doomed", || {
        std::fs::remove_file(&exe).unwrap()
    });
    assert_in_order(
        &function_names(&r),
        &["crash_segv", "level3", "level2", "level1", "main"],
    );

    let r = crash_after(
        &ct,
        Command::new(victim("use_dlopen")).arg(&lib).arg("wait"),
        "/libdoomed.so",
        || std::fs::remove_file(&lib).unwrap(),
    );
    assert_in_order(&function_names(&r), &["dl_crash", "dl_entry", "main"]);
}

#[test]
fn replaced_executable_is_read_as_it_was_mapped() {
    let dir = TempDir::new("replaced");
    let exe = dir.0.join("deployed");
    std::fs::copy(victim("crash_nofp"), &exe).unwrap();
    let ct = Crashtrace::start(&["--comm", "deployed", "-v"]);
    let r = crash_after(
        &ct,
        Command::new(&exe).arg("wait-segv"),
        "/deployed",
        || {
            // A deploy: a different build renamed over the running one (new inode, same path).
            let next = dir.0.join("deployed.new");
            std::fs::copy(victim("crash_fp"), &next).unwrap();
            std::fs::rename(&next, &exe).unwrap();
        },
    );
    // Read from the path, the -O0 build would give other names at these offsets.
    assert_in_order(
        &function_names(&r),
        &["crash_segv", "level3", "level2", "level1", "main"],
    );
    assert_eq!(r.frames[0].function_offset, Some(0), "{:?}", r.frames[0]);
}

#[test]
fn container_process_uses_its_own_files() {
    // A chroot with the victim at /app/victim, which does not exist on the host, in new
    // mount and pid namespaces, in a cgroup named like a Docker container's.
    let root = TempDir::new("container");
    std::fs::create_dir_all(root.0.join("app")).unwrap();
    std::fs::copy(victim("crash_static"), root.0.join("app/victim")).unwrap();
    assert!(!std::path::Path::new("/app/victim").exists());
    let id = "c0ffee00".repeat(8);
    // The machines this project runs on have cgroup v2 (cargo xtask setup checks it).
    let cg = crashtrace_tests::Cgroup2::new(&format!("docker-{id}.scope"))
        .expect("a cgroup v2 group (is cgroup2 mounted?)");
    let ct = Crashtrace::start(&["--comm", "victim", "-v"]);
    let enter = format!("echo $$ > {}/cgroup.procs && ", cg.path.display());
    let mut v = Victim::spawn(Command::new("sh").arg("-c").arg(format!(
        "{enter}exec unshare --mount --pid --fork chroot {} /app/victim wait-segv",
        root.0.display()
    )));
    v.wait_ready();
    ct.wait_pinned("/app/victim");
    v.trigger();
    v.wait_exit();
    let r = ct.report_where("the container victim's report", |r| {
        r.process_name == "victim"
    });
    assert_eq!(r.namespace_pid, Some(1), "{r:?}");
    assert_eq!(
        r.frames[0].module.as_deref(),
        Some("/app/victim"),
        "{:?}",
        r.frames[0]
    );
    assert_in_order(
        &function_names(&r),
        &["crash_segv", "level3", "level2", "level1", "main"],
    );
    assert!(
        r.cgroup
            .as_deref()
            .is_some_and(|c| c.ends_with(&format!("docker-{id}.scope"))),
        "{r:?}"
    );
    assert_eq!(r.container_id.as_deref(), Some(id.as_str()));
}

fn build_id(path: &std::path::Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .expect("build ID")
}

#[test]
fn stripped_binaries_and_their_debug_files() {
    // A debug directory holding crash_stripped's debug file under its build ID, and
    // crash_debuglink's under the name its .gnu_debuglink gives.
    let dbg = TempDir::new("debugdir");
    let id = build_id(&victim("crash_stripped"));
    let under = dbg.0.join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&under).unwrap();
    std::fs::copy(
        victim("crash_stripped.debug"),
        under.join(format!("{}.debug", &id[2..])),
    )
    .unwrap();
    std::fs::copy(
        victim("crash_debuglink.debug"),
        dbg.0.join("crash_debuglink.debug"),
    )
    .unwrap();
    let dir = dbg.0.to_str().unwrap().to_string();
    let ct = Crashtrace::start(&["--comm", "crash_", "--debug-dir", &dir]);
    let chain = ["crash_segv", "level3", "level2", "level1", "main"];
    for v in ["crash_stripped", "crash_debuglink"] {
        let r =
            crashtrace_tests::crash_and_report(&ct, &mut Command::new(victim(v)), libc::SIGSEGV);
        assert_in_order(&function_names(&r), &chain);
        // Full DWARF from the debug file: file and line too.
        assert!(
            r.frames[0]
                .location
                .as_ref()
                .is_some_and(|l| l.file.ends_with("crash.c")),
            "{v}: {:?}",
            r.frames[0]
        );
    }
    // MiniDebugInfo: function names from the xz-compressed .gnu_debugdata, no lines.
    let r = crashtrace_tests::crash_and_report(
        &ct,
        &mut Command::new(victim("crash_minidebug")),
        libc::SIGSEGV,
    );
    assert_in_order(&function_names(&r), &chain);
    // Nothing left: module + offset + build ID, and never a wrong nearby name. (Without the
    // debug directory: crash_bare shares crash_stripped's build ID, so it would be named.)
    drop(ct);
    let ct = Crashtrace::start(&["--comm", "crash_"]);
    let r = crashtrace_tests::crash_and_report(
        &ct,
        &mut Command::new(victim("crash_bare")),
        libc::SIGSEGV,
    );
    let f0 = &r.frames[0];
    assert!(f0.function.is_none(), "{f0:?}");
    assert_eq!(f0.build_id.as_deref(), Some(id.as_str()));
    assert!(f0.module_offset.is_some_and(|o| o > 0), "{f0:?}");
    assert!(
        f0.unnamed_reason
            .as_deref()
            .is_some_and(|w| w.contains("stripped")),
        "{f0:?}"
    );
}

#[test]
fn debuginfod_is_asked_when_asked_and_never_blocks() {
    // A debuginfod server on loopback: python's http.server over the buildid layout.
    let srv = TempDir::new("debuginfod-srv");
    let id = build_id(&victim("crash_stripped"));
    let d = srv.0.join("buildid").join(&id);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(victim("crash_stripped.debug"), d.join("debuginfo")).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut server = Victim::spawn(
        Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(&srv.0),
    );
    // http.server prints its banner once it listens.
    let banner = server.lines().next_line("http.server banner");
    assert!(banner.contains("Serving HTTP"), "{banner}");
    let cache = TempDir::new("debuginfod-cache");
    let url = format!("http://127.0.0.1:{port}");
    let ct = Crashtrace::start_with_env(
        &["--comm", "crash_", "--debuginfod", "--debuginfod-url", &url],
        &[("CRASHTRACE_CACHE_DIR", cache.0.to_str().unwrap())],
    );
    let r = crashtrace_tests::crash_and_report(
        &ct,
        &mut Command::new(victim("crash_stripped")),
        libc::SIGSEGV,
    );
    assert_in_order(
        &function_names(&r),
        &["crash_segv", "level3", "level2", "level1", "main"],
    );
    drop(ct);

    // A server that accepts and never answers: the report still comes, unnamed, saying why.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", hang.local_addr().unwrap());
    let cache = TempDir::new("debuginfod-cache2");
    let ct = Crashtrace::start_with_env(
        &[
            "--comm",
            "crash_",
            "--debuginfod",
            "--debuginfod-url",
            &url,
            "--debuginfod-timeout",
            "0.5",
        ],
        &[("CRASHTRACE_CACHE_DIR", cache.0.to_str().unwrap())],
    );
    let r = crashtrace_tests::crash_and_report(
        &ct,
        &mut Command::new(victim("crash_stripped")),
        libc::SIGSEGV,
    );
    let why = r.frames[0].unnamed_reason.clone().unwrap_or_default();
    assert!(why.contains("debuginfod"), "{:?}", r.frames[0]);
    drop(hang);
}

#[test]
fn frames_without_files_vdso_jit_and_signal_frames() {
    let ct = Crashtrace::start(&["--comm", "=crash_nofp"]);
    let run = |mode: &str| {
        crashtrace_tests::crash_and_report(
            &ct,
            Command::new(victim("crash_nofp")).arg(mode),
            libc::SIGSEGV,
        )
    };
    // The fault is inside the vDSO: named from crashtrace's own copy of it, and unwound
    // through its CFI back into libc and the victim.
    let r = run("vdso");
    let names = function_names(&r);
    assert_eq!(r.frames[0].module.as_deref(), Some("[vdso]"));
    assert!(names[0].contains("clock_gettime"), "{names:?}");
    assert_in_order(&names, &["crash_vdso", "level3", "main", "_start"]);
    // JIT code: shown as anonymous memory with its range; the caller found on the stack.
    let r = run("jit");
    let f0 = &r.frames[0];
    assert_eq!(f0.module.as_deref(), Some("[anon]"));
    assert!(
        f0.unnamed_reason
            .as_deref()
            .is_some_and(|w| w.contains("anonymous executable memory 0x")),
        "{f0:?}"
    );
    assert_in_order(
        &function_names(&r),
        &["??", "crash_jit", "level3", "main", "_start"],
    );
    // A crash inside a signal handler unwinds through the signal frame (__restore_rt)
    // back into the code the signal interrupted.
    let r = run("handler");
    assert_in_order(
        &function_names(&r),
        &[
            "crash_in_handler",
            "__restore_rt",
            "raise|__GI_raise",
            "crash_handler",
            "level3",
            "main",
            "_start",
        ],
    );
}

#[test]
fn a_full_ring_buffer_is_counted_and_said() {
    // The smallest ring (room for three captures) and a burst of 100 crashes while
    // crashtrace is stopped: its drain, on a thread of its own, keeps up otherwise.
    let ct = Crashtrace::start(&["--comm", "=crash_fp", "--ring-buffer-size", "512K"]);
    // SAFETY: signalling the crashtrace we started.
    unsafe { libc::kill(ct.pid() as i32, libc::SIGSTOP) };
    let pids = crash_fp_at_once(100);
    // SAFETY: as above.
    unsafe { libc::kill(ct.pid() as i32, libc::SIGCONT) };
    // Let the per-second loss line come out, then stop for the closing summary.
    ct.stderr_line("the ring-buffer loss line", |l| {
        l.contains("lost because the ring buffer was full")
    });
    // Counted once crashtrace has exited: every report it made has been read by then.
    let all = ct.all_reports_when_stopped();
    let reported = pids
        .iter()
        .filter(|p| all.0.iter().any(|r| r.pid == **p))
        .count();
    let said = all.1;
    let summary = closing_summary(&said);
    // "... N signals matched, M captured, ..., L lost (ring buffer full)"
    let num = |word: &str| -> u64 {
        let head = summary.split(word).next().unwrap();
        head.rsplit(' ')
            .find(|t| !t.is_empty())
            .unwrap()
            .trim_end_matches(',')
            .parse()
            .unwrap()
    };
    let (matched, captured, lost) = (
        num(" signals matched"),
        num(" captured,"),
        num(" lost (ring"),
    );
    eprintln!("{reported} reported; {summary}");
    assert!(lost > 0, "{summary}");
    // Nothing vanishes: every matched crash was either captured or counted as lost, and
    // every capture became a report.
    assert_eq!(matched, 100, "{summary}");
    assert!(captured + lost >= matched, "{summary}");
    assert_eq!(reported as u64, captured, "{summary}");
}

/// Starts `n` crash_fp victims at once and waits for them all; their pids.
fn crash_fp_at_once(n: usize) -> Vec<u32> {
    let kids: Vec<std::process::Child> = (0..n)
        .map(|_| Command::new(victim("crash_fp")).spawn().expect("spawn"))
        .collect();
    let pids = kids.iter().map(|k| k.id()).collect();
    for mut k in kids {
        let _ = k.wait();
    }
    pids
}

/// crash_fp's crashes at `--stack-size 8K` (records of about 24 KiB) in a 1 MiB ring.
fn small_records_in_a_1m_ring() -> Crashtrace {
    Crashtrace::start(&[
        "--comm",
        "=crash_fp",
        "--stack-size",
        "8K",
        "--ring-buffer-size",
        "1M",
    ])
}

/// The "detached; N signals matched, ..." line crashtrace closes with.
fn closing_summary(said: &[String]) -> &String {
    said.iter()
        .find(|l| l.contains("detached"))
        .expect("summary")
}

#[test]
fn records_that_wrap_around_the_ring_are_read_whole() {
    // The ring's data is mapped once: a record that runs past its end is read in two
    // pieces. 60 captures of about 24 KiB go through a 1 MiB ring, 20 at a time, so
    // records cross its end, and every report must still hold the whole stack.
    let ct = small_records_in_a_1m_ring();
    for _ in 0..3 {
        let pids = crash_fp_at_once(20);
        for pid in pids {
            let r = ct.report_for(pid);
            assert_in_order(&function_names(&r), &["crash_segv", "level3", "main"]);
            assert!(r.unwind.stack_bytes > 0, "{:?}", r.unwind);
        }
    }
    let said = ct.stop();
    let summary = closing_summary(&said);
    assert!(summary.contains(" 60 captured,"), "{summary}");
    assert!(summary.contains(" 0 lost (ring buffer full)"), "{summary}");
    assert!(!said.iter().any(|l| l.contains("undecodable")), "{said:#?}");
}

#[test]
fn the_ring_is_mapped_again_for_the_first_crash_after_a_quiet_while() {
    // With nothing to read for 2 s, crashtrace unmaps the ring buffer's data (1 MiB
    // here; the kernel keeps it). The next crash must map it again and come out whole.
    let ct = small_records_in_a_1m_ring();
    // The two position pages stay: this is how the maps file names the ring.
    assert!(
        ring_data_mappings(ct.pid(), 4096) >= 2,
        "no BPF map mappings found"
    );
    let data_mapped = || ring_data_mappings(ct.pid(), 1 << 20) > 0;
    crashtrace_tests::wait_until("the ring's data to be unmapped at rest", || !data_mapped());
    let pids = crash_fp_at_once(3);
    for pid in pids {
        let r = ct.report_for(pid);
        assert_in_order(&function_names(&r), &["crash_segv", "level3", "main"]);
    }
    let said = ct.stop();
    assert!(
        closing_summary(&said).contains(" 0 lost (ring buffer full)"),
        "{said:#?}"
    );
}

/// How many BPF map mappings of at least `bytes` the process has (the ring's data; the
/// positions are a page each).
fn ring_data_mappings(pid: u32, bytes: u64) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    maps.lines()
        .filter(|l| l.ends_with("anon_inode:bpf-map"))
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            let len = u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?;
            (len >= bytes).then_some(())
        })
        .count()
}

#[test]
fn records_are_sized_to_the_stack_size() {
    // Records of the 8K class (24 KiB with room for an overflow's top): 20 crashes at
    // once fit a 1 MiB ring even if nothing is drained meanwhile (at 144 KiB a record,
    // seven would).
    let ct = small_records_in_a_1m_ring();
    let pids = crash_fp_at_once(20);
    for pid in &pids {
        let r = ct.report_for(*pid);
        assert!(r.unwind.stack_bytes <= 8192, "{:?}", r.unwind);
        assert_in_order(&function_names(&r), &["crash_segv", "level3", "main"]);
    }
    let said = ct.stop();
    let summary = closing_summary(&said);
    assert!(summary.contains(" 0 lost (ring buffer full)"), "{summary}");

    // A stack overflow at --stack-size 16K: the innermost 16 KiB, and the top of the
    // stack after them in the same record.
    let ct = Crashtrace::start(&["--comm", "=crash_nofp", "--stack-size", "16K"]);
    let r = crashtrace_tests::crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).arg("overflow"),
        libc::SIGSEGV,
    );
    let names = function_names(&r);
    assert_eq!(names[0], "recurse", "{names:?}");
    let gap = r
        .frames
        .iter()
        .position(|f| f.gap_before.is_some())
        .unwrap_or_else(|| panic!("no marked gap: {:?} {:?} {names:?}", r.unwind, r.signal));
    assert_in_order(&names[gap..], &["main", "_start"]);
    assert!(r.unwind.stack_bytes <= 16384, "{:?}", r.unwind);
}

/// A debug store as an image layer or a symbol server keeps files: each under
/// `.build-id/xx/yyyy` by its build ID.
fn store_by_build_id(store: &std::path::Path, files: &[std::path::PathBuf]) {
    for f in files {
        let id = build_id(f);
        let dir = store.join(".build-id").join(&id[..2]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(f, dir.join(&id[2..])).unwrap();
    }
}

/// Every frame down to `last` is named; counts how each of the report's files whose path
/// contains `ours` was read: pinned in time (no note), a copy pinned for another process,
/// the debug store.
fn named_and_how(
    r: &CrashReport,
    last: &str,
    ours: &str,
    paths: &mut HashMap<&'static str, usize>,
) {
    let names = function_names(r);
    let end = names
        .iter()
        .position(|n| n == last)
        .unwrap_or_else(|| panic!("no {last} in {names:#?}\n{:#?}", r.frames));
    for f in &r.frames[..=end] {
        assert!(
            f.function.is_some(),
            "unnamed frame {f:?}; notes {:?}",
            r.notes
        );
    }
    let stand_ins: Vec<&String> = r
        .notes
        .iter()
        .filter(|n| n.contains("read from a file with the same build ID") && n.contains(ours))
        .collect();
    for n in &stand_ins {
        let how = if n.contains("(pinned for pid") {
            "a copy pinned for another process"
        } else if n.contains("(debug directory:") {
            "the debug store"
        } else {
            "debuginfod"
        };
        *paths.entry(how).or_default() += 1;
    }
    let modules: std::collections::HashSet<&str> = r.frames[..=end]
        .iter()
        .filter_map(|f| f.module.as_deref())
        .filter(|m| m.contains(ours))
        .collect();
    *paths.entry("its own file, pinned in time").or_default() +=
        modules.len().saturating_sub(stand_ins.len());
}

#[test]
fn crash_looping_containers_are_named() {
    // The image layer on the host holds the binary; each container gets a root of its
    // own, removed as soon as the container is gone, and crashes right after exec.
    let store = TempDir::new("image-layer");
    store_by_build_id(&store.0, &[victim("crash_static")]);
    let dir = store.0.to_str().unwrap().to_string();
    // --pin-on-exec: each exec wakes crashtrace, which pins the new program's files.
    let ct = Crashtrace::start(&["--comm", "=victim", "--debug-dir", &dir, "--pin-on-exec"]);
    let mut paths = HashMap::new();
    for i in 0..100 {
        let root = TempDir::new(&format!("pod-{i}"));
        std::fs::create_dir_all(root.0.join("app")).unwrap();
        std::fs::copy(victim("crash_static"), root.0.join("app/victim")).unwrap();
        let mut v = Victim::spawn(
            Command::new("unshare")
                .args(["--mount", "--pid", "--fork", "chroot"])
                .arg(&root.0)
                .arg("/app/victim"),
        );
        v.wait_exit();
        drop(root);
        let parent = v.pid();
        let r = ct.report_where(&format!("the report of container {i}"), |r| {
            r.parent_pid == parent
        });
        assert_eq!(r.namespace_pid, Some(1), "{r:?}");
        named_and_how(&r, "main", "/app/victim", &mut paths);
    }
    eprintln!("100 container crashes: files read from {paths:?}");
}

#[test]
fn self_deleting_programs_are_named() {
    let store = TempDir::new("self-delete-store");
    store_by_build_id(&store.0, &[victim("self_delete"), victim("libvictim.so")]);
    let dir = store.0.to_str().unwrap().to_string();
    let ct = Crashtrace::start(&["--comm", "=self_delete", "--debug-dir", &dir]);
    let mut paths = HashMap::new();
    for i in 0..100 {
        let d = TempDir::new(&format!("self-delete-{i}"));
        let (exe, lib) = (d.0.join("self_delete"), d.0.join("libplugin.so"));
        std::fs::copy(victim("self_delete"), &exe).unwrap();
        std::fs::copy(victim("libvictim.so"), &lib).unwrap();
        let mut v = Victim::spawn(Command::new(&exe).arg(&lib));
        assert_eq!(v.wait_signal(), Some(libc::SIGSEGV));
        assert!(!exe.exists() && !lib.exists());
        let r = ct.report_for(v.pid());
        assert_in_order(&function_names(&r), &["dl_crash", "dl_entry", "main"]);
        named_and_how(&r, "main", "/crashtrace-self-delete-", &mut paths);
    }
    eprintln!("100 self-deleting crashes: files read from {paths:?}");
}

#[test]
fn a_stop_reports_every_crash_already_captured() {
    // Crashes captured while crashtrace is stopped are still in the ring buffer when the
    // SIGINT arrives with the SIGCONT: the stop reads them and reports them all.
    let ct = Crashtrace::start(&["--comm", "=crash_fp"]);
    // SAFETY: signalling the crashtrace we started.
    unsafe { libc::kill(ct.pid() as i32, libc::SIGSTOP) };
    let pids: Vec<u32> = (0..3)
        .map(|_| {
            let mut c = Command::new(victim("crash_fp")).spawn().expect("spawn");
            let _ = c.wait();
            c.id()
        })
        .collect();
    // SAFETY: as above.
    unsafe {
        libc::kill(ct.pid() as i32, libc::SIGINT);
        libc::kill(ct.pid() as i32, libc::SIGCONT);
    }
    let (reports, said) = ct.all_reports_when_stopped();
    for pid in pids {
        let r = reports
            .iter()
            .find(|r| r.pid == pid)
            .unwrap_or_else(|| panic!("no report for {pid}: {said:?}"));
        // Its exit was read too: the outcome is known.
        assert_eq!(
            r.outcome.as_ref().and_then(|o| o.signal),
            Some(libc::SIGSEGV),
            "{:?}",
            r.outcome
        );
    }
}

//! The deployment files in `deploy/`: the systemd unit passes `systemd-analyze verify`
//! (with ExecStart pointing at the built binary), and the DaemonSet, read by a real YAML
//! parser, grants what crashtrace needs and no more; readiness and the watchdog reach
//! systemd's notify socket.

use std::{path::Path, process::Command};

use crashtrace_tests::{Crashtrace, Shared, WAIT, crash_and_report, crashtrace_bin, victim};

fn deploy(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy("crashtrace.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/sbin/crashtrace "));
    let dir = Shared::new("unit");
    let path = dir.0.join("crashtrace.service");
    let bin = crashtrace_bin();
    std::fs::write(
        &path,
        unit.replace("/usr/local/sbin/crashtrace", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd) is needed");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(needed), "{needed}");
    }
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("a bounded capability set");
    let mut caps: Vec<&str> = caps.split_whitespace().collect();
    caps.sort();
    assert_eq!(
        caps,
        [
            "CAP_BPF",
            "CAP_DAC_READ_SEARCH",
            "CAP_PERFMON",
            "CAP_SYS_ADMIN",
            "CAP_SYS_PTRACE",
            "CAP_SYS_RESOURCE"
        ]
    );
}

#[test]
fn daemonset_grants_what_crashtrace_needs() {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(deploy("daemonset.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ds = docs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mut add: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    add.sort();
    assert_eq!(
        add,
        [
            "BPF",
            "DAC_READ_SEARCH",
            "PERFMON",
            "SYS_ADMIN",
            "SYS_PTRACE",
            "SYS_RESOURCE"
        ]
    );
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for m in ["/sys/kernel/btf", "/sys/fs/cgroup", "/sys/kernel/tracing"] {
        assert!(mounts.contains(&m), "{m} not mounted: {mounts:?}");
    }
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--oom-score-adj=-900"), "{args:?}");
    // The arguments are ones crashtrace accepts.
    let check = Command::new(crashtrace_bin())
        .args(args.iter().filter(|a| !a.starts_with("--journal")))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn readiness_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = Shared::new("notify");
    let path = dir.0.join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(*WAIT)).unwrap();
    let next = || {
        let mut buf = [0u8; 256];
        let n = sock
            .recv(&mut buf)
            .expect("a notification within the bound");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ct = Crashtrace::start_with_env(
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    // Ready once attached (the harness has seen the attached line by now).
    assert_eq!(next(), "READY=1");
    assert_eq!(next(), "WATCHDOG=1");
    ct.stop();
    let mut last = next();
    while last == "WATCHDOG=1" {
        last = next();
    }
    assert_eq!(last, "STOPPING=1");
}

#[test]
fn check_config_reads_the_file_and_says_what_is_wrong() {
    let dir = Shared::new("config");
    let good = dir.0.join("good.toml");
    std::fs::write(
        &good,
        "output = \"/var/log/x.jsonl\"\njournal = true\ncomm = [\"python\"]\n",
    )
    .unwrap();
    let out = Command::new(crashtrace_bin())
        .arg("--config")
        .arg(&good)
        .args(["--comm", "java", "--check-config"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for opt in [
        "--output=/var/log/x.jsonl",
        "--journal",
        "--comm=python",
        "--comm java",
    ] {
        assert!(said.contains(opt), "{opt} missing from: {said}");
    }
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "outptu = \"/x\"\n").unwrap();
    let out = Command::new(crashtrace_bin())
        .env("CRASHTRACE_CONFIG", &bad)
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown key `outptu`") && err.contains("bad.toml"),
        "{err}"
    );
}

#[test]
fn status_lines_are_json_objects_with_log_format_json() {
    let ct = Crashtrace::start(&["--log-format", "json"]);
    let said = ct.stop();
    assert!(
        said.iter().any(|l| l.contains("attached")) && said.len() >= 2,
        "{said:?}"
    );
    for l in &said {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["time"].is_string() && v["msg"].is_string(), "{l}");
    }
}

#[test]
fn over_its_budgets_crashtrace_sheds_caches_and_delays_reports_but_drops_none() {
    let ct = Crashtrace::start(&["--memory-budget", "1M", "--cpu-budget", "5"]);
    ct.stderr_line("the memory budget said", |l| {
        l.contains("over its memory budget of 1.0 MiB")
    });
    let crash = || crash_and_report(&ct, &mut Command::new(victim("crash_nofp")), libc::SIGSEGV);
    let first = crash();
    ct.stderr_line("the CPU budget said", |l| {
        l.contains("held to its CPU budget (5% of a CPU)")
    });
    // Caches dropped and rebuilt, analysis paused: the next crash is still reported whole.
    let second = crash();
    assert_eq!(first.frames.len(), second.frames.len());
    assert_eq!(second.frames[0].function, first.frames[0].function);
}

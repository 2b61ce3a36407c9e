//! `--journal`: entries sent with journald's native protocol to a real systemd-journald
//! (its own namespace, started here, so the host's journal is untouched), read back with
//! `journalctl`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use crashtrace::sinks::journal::MESSAGE_ID;
use crashtrace_tests::{
    Crashtrace, check_report, crash_and_report, report_schema, victim, wait_until,
};

const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// A journald of its own namespace; stopped and its files removed when dropped.
struct Journald {
    child: Child,
    namespace: String,
}

impl Journald {
    fn start() -> Self {
        assert!(
            Path::new(JOURNALD).exists(),
            "systemd-journald is missing (Debian's systemd)"
        );
        let namespace = format!("crashtrace-test-{}", std::process::id());
        let child = Command::new(JOURNALD)
            .arg(&namespace)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting systemd-journald");
        let j = Self { child, namespace };
        wait_until("journald's socket", || j.socket().exists());
        j
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/systemd/journal.{}/socket", self.namespace))
    }

    /// The entries matching `matches`, as journalctl's JSON gives them (every field,
    /// however long).
    fn entries(&self, matches: &[String]) -> Vec<serde_json::Value> {
        let out = Command::new("journalctl")
            .arg(format!("--namespace={}", self.namespace))
            .args(["-o", "json", "--all", "--no-pager"])
            .args(matches)
            .output()
            .expect("running journalctl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
        let id = id.trim();
        for dir in [
            format!("/run/systemd/journal.{}", self.namespace),
            format!("/var/log/journal/{id}.{}", self.namespace),
            format!("/run/log/journal/{id}.{}", self.namespace),
        ] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A field's value: journalctl writes a string, or an array of bytes for a value that
/// is not printable UTF-8.
fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(bytes) => {
            let b: Vec<u8> = bytes
                .iter()
                .map(|x| x.as_u64().unwrap_or(0) as u8)
                .collect();
            String::from_utf8_lossy(&b).into_owned()
        }
        other => panic!("a field journalctl did not give whole: {other}"),
    }
}

fn entry_for(j: &Journald, pid: u32) -> serde_json::Value {
    let matches = [
        format!("MESSAGE_ID={MESSAGE_ID}"),
        format!("CRASHTRACE_PID={pid}"),
    ];
    wait_until("the crash's journal entry", || {
        !j.entries(&matches).is_empty()
    });
    let mut e = j.entries(&matches);
    assert_eq!(e.len(), 1, "one entry per crash");
    e.remove(0)
}

#[test]
fn crashes_reach_journald_with_crashtrace_fields() {
    let j = Journald::start();
    let socket = j.socket();
    let ct = Crashtrace::start(&[
        "--journal",
        "--journal-socket",
        socket.to_str().unwrap(),
        "--stdout",
    ]);
    let r = crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).envs([("RANK", "2"), ("SLURM_JOB_ID", "99")]),
        libc::SIGSEGV,
    );
    let e = entry_for(&j, r.pid);
    assert_eq!(text(&e["CRASHTRACE_SIGNAL_NAME"]), "SIGSEGV");
    assert_eq!(text(&e["CRASHTRACE_RANK"]), "2");
    assert_eq!(text(&e["CRASHTRACE_SLURM_JOB_ID"]), "99");
    assert_eq!(text(&e["CRASHTRACE_RUN_ID"]), "99");
    assert_eq!(text(&e["CRASHTRACE_KIND"]), "fault");
    assert_eq!(text(&e["PRIORITY"]), "2");
    assert_eq!(text(&e["SYSLOG_IDENTIFIER"]), "crashtrace");
    let top = r.frames.iter().find_map(|f| f.function.clone()).unwrap();
    assert_eq!(text(&e["CRASHTRACE_FUNCTION"]), top);
    assert!(text(&e["MESSAGE"]).contains(&format!("Process {} (", r.pid)));
    let json = check_report(&report_schema(), &text(&e["CRASHTRACE_JSON"])).unwrap();
    assert_eq!(json.pid, r.pid);
    assert!(text(&e["CRASHTRACE_REPORT"]).contains(&top));

    // A report too big for one datagram travels in a sealed memory file.
    let mut many = Command::new(victim("threads"));
    many.args(["many", "120"]);
    let big = crash_and_report(&ct, &mut many, libc::SIGSEGV);
    let line = ct.json_line_where(|x| x.pid == big.pid).unwrap();
    let e = entry_for(&j, big.pid);
    let size = text(&e["CRASHTRACE_JSON"]).len() + text(&e["CRASHTRACE_REPORT"]).len();
    assert!(
        size > 256 * 1024,
        "the entry must exceed a datagram: {size} bytes"
    );
    assert_eq!(text(&e["CRASHTRACE_JSON"]), line);
}

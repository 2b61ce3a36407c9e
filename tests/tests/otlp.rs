//! `--otlp-endpoint`: crash records to an OTLP/HTTP receiver that decodes them with the
//! official schema (the opentelemetry-proto package, in the test venv `cargo xtask
//! setup` makes); a collector that is down, then slow, then back. Only the victims'
//! name is watched where counts matter: other processes on the machine may crash.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use crashtrace_tests::{
    Crashtrace, Shared, crash_and_report, otel_python, source, victim, wait_until,
};

/// The receiver, killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, port: u16, delay_ms: u32) -> Self {
        let port_file = dir.join(format!("port-{port}"));
        let out = dir.join("received.jsonl");
        let child = Command::new(otel_python())
            .arg(source("otlp_receiver.py"))
            .arg(&port_file)
            .arg(&out)
            .args([
                "--port",
                &port.to_string(),
                "--delay-ms",
                &delay_ms.to_string(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the OTLP receiver");
        wait_until("the receiver to listen", || port_file.exists());
        let port = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Self { child, port, out }
    }

    /// Every record received so far.
    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn pids(&self) -> Vec<u64> {
        self.records()
            .iter()
            .filter_map(|r| r["attributes"]["process.pid"].as_u64())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn crash(ct: &Crashtrace) -> u32 {
    crash_and_report(ct, &mut Command::new(victim("crash_nofp")), libc::SIGSEGV).pid
}

#[test]
fn otlp_records_carry_the_crash_the_resource_and_the_headers() {
    let dir = Shared::new("otlp");
    let rx = Receiver::start(&dir.0, 0, 0);
    let ct = Crashtrace::start_with_env(
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", rx.port),
            "--stdout",
        ],
        &[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test,k8s.cluster.name=c%2C1",
            ),
            ("OTEL_SERVICE_NAME", "crash-watch"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0k"),
        ],
    );
    // In a pod's container, as the kubelet's systemd driver and containerd lay it out.
    let (uid, id) = (
        "1d2e3f40-5a6b-4c7d-8e9f-a0b1c2d3e4f5",
        "0aced".repeat(13)[..64].to_string(),
    );
    let cg = crashtrace_tests::Cgroup2::new(&format!(
        "kubepods.slice/kubepods-pod{}.slice/cri-containerd-{id}.scope",
        uid.replace('-', "_")
    ))
    .expect("a cgroup v2 group");
    let r = crashtrace_tests::crash_and_report(
        &ct,
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec {}",
                cg.path.display(),
                victim("crash_nofp").display()
            ))
            .envs([
                ("RANK", "3"),
                ("WORLD_SIZE", "4"),
                ("TORCHELASTIC_RUN_ID", "run-otlp"),
            ]),
        libc::SIGSEGV,
    );
    wait_until("the record at the receiver", || {
        rx.pids().contains(&(r.pid as u64))
    });
    let recs = rx.records();
    let rec = recs
        .iter()
        .find(|x| x["attributes"]["process.pid"] == r.pid)
        .unwrap();
    let a = &rec["attributes"];
    assert_eq!(rec["event_name"], "app.crash");
    assert_eq!(rec["severity_number"], 21, "FATAL");
    assert_eq!(rec["content_type"], "application/x-protobuf");
    assert_eq!(rec["authorization"], "Bearer t0k");
    assert_eq!(a["exception.type"], "SIGSEGV");
    let top = r.frames.iter().find_map(|f| f.function.clone()).unwrap();
    assert!(
        a["exception.message"].as_str().unwrap().contains(&top),
        "{a}"
    );
    assert!(a["exception.stacktrace"].as_str().unwrap().contains(&top));
    assert_eq!(a["thread.id"], r.tid);
    assert_eq!(
        a["process.executable.path"],
        r.executable.clone().unwrap().as_str()
    );
    assert_eq!(a["crashtrace.kind"], "fault");
    assert_eq!(a["crashtrace.job.rank"], "3");
    assert_eq!(a["crashtrace.job.world_size"], "4");
    assert_eq!(a["crashtrace.job.run_id"], "run-otlp");
    assert_eq!(a["k8s.pod.uid"], uid);
    assert_eq!(a["container.id"], id.as_str());
    assert_eq!(a["container.runtime"], "containerd");
    let res = &rec["resource"];
    assert_eq!(res["service.name"], "crash-watch");
    assert_eq!(res["deployment.environment"], "test");
    assert_eq!(res["k8s.cluster.name"], "c,1");
    assert_eq!(res["os.type"], "linux");
    assert!(res["host.name"].as_str().is_some_and(|h| !h.is_empty()));
    // The whole report, structured.
    assert_eq!(rec["body"]["pid"], r.pid);
    assert_eq!(rec["body"]["schema_version"], 1);
    assert_eq!(rx.pids().iter().filter(|p| **p == r.pid as u64).count(), 1);
}

#[test]
fn a_collector_down_then_slow_gets_the_buffer_and_the_rest_is_counted() {
    let dir = Shared::new("otlp-outage");
    // A port nothing listens on yet: the collector is down.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ct = Crashtrace::start(&[
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{port}/v1/logs"),
        "--otlp-buffer",
        "3",
        "--stdout",
        "--comm",
        "=crash_nofp",
    ]);
    let pids: Vec<u32> = (0..5).map(|_| crash(&ct)).collect();
    ct.stderr_line("the overflow said", |l| {
        l.contains("not delivered") && l.contains("buffer is full") && l.contains("(2 in all)")
    });
    // Back, but slow: 200 ms a request.
    let rx = Receiver::start(&dir.0, port, 200);
    wait_until("the buffered records at the receiver", || {
        pids[..3].iter().all(|p| rx.pids().contains(&(*p as u64)))
    });
    // One more after the outage goes straight through.
    let later = crash(&ct);
    wait_until("a record after the outage", || {
        rx.pids().contains(&(later as u64))
    });
    let said = ct.stop();
    let got = rx.pids();
    for p in &pids[..3] {
        assert_eq!(
            got.iter().filter(|g| **g == *p as u64).count(),
            1,
            "{p} once: {got:?}"
        );
    }
    for p in &pids[3..] {
        assert!(
            !got.contains(&(*p as u64)),
            "{p} was over the buffer: {got:?}"
        );
    }
    assert!(
        said.iter()
            .any(|l| l.contains("2 not written (output errors)")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|l| l.contains("reachable again")),
        "{said:?}"
    );
}

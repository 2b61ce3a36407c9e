//! Who crashed and why, from what only the process's memory and cgroup say: its job and
//! rank (the allowlisted environment), its pod, container and Slurm job (cgroup paths),
//! glibc's abort message, and PyTorch's thread roles.

use std::process::Command;

use crashtrace_tests::{Cgroup2, Crashtrace, Victim, crash_and_report, victim};

const SIGSEGV: i32 = libc::SIGSEGV;
const SIGABRT: i32 = libc::SIGABRT;

/// A secret every environment below holds: it must appear in no output.
const SECRET: &str = "hf_sEcReT_tOkEn_8e1f";

#[test]
fn job_and_rank_come_from_the_environment_and_nothing_else_does() {
    let ct = Crashtrace::start_text(&["--env", "MY_*", "--comm", "=crash_nofp"]);
    let mut cmd = Command::new(victim("crash_nofp"));
    cmd.env_clear().envs([
        ("HF_TOKEN", SECRET),
        ("RANK", "1"),
        ("LOCAL_RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("TORCHELASTIC_RUN_ID", "run-7f3a"),
        ("CUDA_VISIBLE_DEVICES", "1"),
        ("MY_TAG", "blue"),
        ("MYSTERY", "not-allowlisted"),
    ]);
    let mut v = Victim::spawn(&mut cmd);
    assert_eq!(v.wait_signal(), Some(SIGSEGV));
    let text = ct.text_report_for(v.pid());
    assert!(
        text.contains("job:      rank 1 of 2, local rank 1, job run-7f3a, GPUs 1"),
        "{text}"
    );
    assert!(text.contains("MY_TAG=blue"), "{text}");
    assert!(
        !text.contains(SECRET) && !text.contains("MYSTERY"),
        "{text}"
    );
    drop(ct);

    let ct = Crashtrace::start(&["--env", "MY_*", "--comm", "=crash_nofp"]);
    let r = crash_and_report(&ct, &mut cmd, SIGSEGV);
    let j = r.job.as_ref().expect("the job");
    assert_eq!(
        (j.rank, j.local_rank, j.world_size),
        (Some(1), Some(1), Some(2))
    );
    assert_eq!(j.run_id.as_deref(), Some("run-7f3a"));
    assert_eq!(j.visible_devices.as_deref(), Some("1"));
    let names: Vec<&str> = j.environment.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "CUDA_VISIBLE_DEVICES",
            "LOCAL_RANK",
            "MY_TAG",
            "RANK",
            "TORCHELASTIC_RUN_ID",
            "WORLD_SIZE"
        ]
    );
    assert_eq!(j.environment_unread_bytes, 0);
    let line = ct.json_line_where(|x| x.pid == r.pid).unwrap();
    assert!(!line.contains(SECRET), "{line}");
}

#[test]
fn a_long_environment_keeps_the_variables_launchers_append() {
    // 100 KiB of service variables (Kubernetes injects one set per service) before the
    // launcher's: the copy holds the block's first and last pages.
    let ct = Crashtrace::start(&["--comm", "=crash_nofp"]);
    let mut cmd = Command::new(victim("crash_nofp"));
    cmd.env_clear();
    for i in 0..2500 {
        cmd.env(format!("A_SERVICE_{i:04}_PORT"), "tcp://10.96.0.1:443");
    }
    cmd.env("HF_TOKEN", SECRET);
    cmd.envs([("RANK", "5"), ("WORLD_SIZE", "8"), ("SLURM_JOB_ID", "4242")]);
    let r = crash_and_report(&ct, &mut cmd, SIGSEGV);
    let j = r.job.as_ref().expect("the job");
    assert_eq!((j.rank, j.world_size), (Some(5), Some(8)), "{j:?}");
    assert_eq!(j.slurm_job_id.as_deref(), Some("4242"));
    assert!(
        j.environment_unread_bytes > 50_000,
        "the middle of the block is said to be unread: {j:?}"
    );
    let line = ct.json_line_where(|x| x.pid == r.pid).unwrap();
    assert!(!line.contains(SECRET));
}

#[test]
fn abort_messages_of_assert_and_malloc_checks() {
    let ct = Crashtrace::start(&["--comm", "=why"]);
    let r = crash_and_report(&ct, Command::new(victim("why")).arg("assert"), SIGABRT);
    let m = r.abort_message.as_deref().expect("the assert's message");
    assert!(
        m.ends_with("check_shape: Assertion `shape == 3 && \"tensor shape mismatch\"' failed."),
        "{m}"
    );
    let r = crash_and_report(&ct, Command::new(victim("why")).arg("double-free"), SIGABRT);
    assert_eq!(
        r.abort_message.as_deref(),
        Some("free(): double free detected in tcache 2")
    );
    // A plain abort() sets no message.
    drop(ct);
    let ct = Crashtrace::start(&["--comm", "=crash_nofp"]);
    let r = crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).arg("abort"),
        SIGABRT,
    );
    assert_eq!(r.abort_message, None);
}

#[test]
fn a_watchdog_abort_is_labelled_and_main_and_autograd_threads_come_first() {
    let ct = Crashtrace::start_text(&["--comm", "=why"]);
    let mut v = Victim::spawn(Command::new(victim("why")).arg("watchdog"));
    assert_eq!(v.wait_signal(), Some(SIGABRT));
    let text = ct.text_report_for(v.pid());
    assert!(
        text.contains("raised by PyTorch's NCCL watchdog thread"),
        "{text}"
    );
    drop(ct);
    let ct = Crashtrace::start(&["--comm", "=why"]);
    let r = crash_and_report(&ct, Command::new(victim("why")).arg("watchdog"), SIGABRT);
    assert_eq!(r.thread_name, "pt_nccl_watchdg");
    assert_eq!(r.thread_role.as_deref(), Some("nccl-watchdog"));
    let roles: Vec<Option<&str>> = r.threads.iter().map(|t| t.role.as_deref()).collect();
    assert_eq!(roles, [Some("main"), Some("autograd")], "{:?}", r.threads);
}

/// Runs `crash_nofp` in cgroup `name` (under this process's own) and returns its report.
fn crash_in_cgroup(name: &str) -> crashtrace_tests::CrashReport {
    let cg = Cgroup2::new(name).expect("a cgroup v2 group (is cgroup2 mounted?)");
    let ct = Crashtrace::start(&["--comm", "=crash_nofp"]);
    let enter = format!("echo $$ > {}/cgroup.procs && ", cg.path.display());
    let mut v = Victim::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(format!("{enter}exec {}", victim("crash_nofp").display())),
    );
    assert_eq!(v.wait_signal(), Some(SIGSEGV));
    ct.report_for(v.pid())
}

#[test]
fn pods_containers_and_slurm_jobs_from_cgroup_layouts() {
    let id = "5eed".repeat(16);
    let uid = "8a1c2e3f-4b5d-4e6f-8a9b-0c1d2e3f4a5b";
    let sd_uid = uid.replace('-', "_");
    // The kubelet's systemd driver with containerd.
    let r = crash_in_cgroup(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{sd_uid}.slice/\
         cri-containerd-{id}.scope"
    ));
    assert_eq!(r.pod_uid.as_deref(), Some(uid), "{:?}", r.cgroup);
    assert_eq!(r.container_id.as_deref(), Some(id.as_str()));
    assert_eq!(r.container_runtime.as_deref(), Some("containerd"));
    // Slurm's cgroup v2 layout.
    let r = crash_in_cgroup("system.slice/slurmstepd.scope/job_31337/step_2/user/task_0");
    let j = r.job.as_ref().expect("the Slurm job");
    assert_eq!(j.slurm_job_id.as_deref(), Some("31337"), "{:?}", r.cgroup);
    assert_eq!(j.slurm_step_id.as_deref(), Some("2"));
    assert_eq!(j.run_id.as_deref(), Some("31337"));
}

/// A tmpfs of `size`, mounted on a fresh directory and unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("crashtrace-shm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs");
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn sigbus_from_a_full_shared_memory_tmpfs_says_so() {
    // /dev/shm in a container is a 64 MiB tmpfs; this one is 1 MiB.
    let shm = Tmpfs::mount("1m");
    let ct = Crashtrace::start(&["--comm", "=why"]);
    let r = crash_and_report(
        &ct,
        Command::new(victim("why")).arg("shm").arg(&shm.0),
        libc::SIGBUS,
    );
    assert_eq!(r.signal.code_name.as_deref(), Some("BUS_ADRERR"));
    let cause = r.signal.cause.as_deref().expect("the SIGBUS's cause");
    assert!(
        cause.starts_with(
            "shared memory exhausted: the tmpfs holding torch_tensor (/dev/shm or another) is \
             full, 1.0 MiB of 1.0 MiB used"
        ),
        "{cause}"
    );
    assert_eq!(r.frames[0].function.as_deref(), Some("fill_shared_tensor"));
}

#[test]
fn gpu_devices_and_the_drivers_xid_lines() {
    // The UVM device is known by its name (its major is dynamic): a node named so,
    // opened by the victim, stands in for it on a machine without a GPU.
    let dir = std::env::temp_dir().join(format!("crashtrace-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uvm = dir.join("nvidia-uvm");
    let _ = std::fs::remove_file(&uvm);
    let st = Command::new("mknod")
        .arg(&uvm)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success(), "mknod");
    let ct = Crashtrace::start_text(&["--comm", "=crash_nofp"]);
    let mut v = Victim::spawn(Command::new("sh").arg("-c").arg(format!(
        "exec 3<{}; exec {} wait-segv",
        uvm.display(),
        victim("crash_nofp").display()
    )));
    v.wait_ready();
    // What the driver logs when a GPU fails under a process (root can write the log),
    // and a line about another process, which is not this crash's.
    // One write a record: the kernel log makes a record of each write().
    let log = |line: String| {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap()
    };
    log(format!(
        "NVRM: Xid (PCI:0000:3b:00): 79, pid={}, name=crash_nofp, GPU has fallen off the bus.",
        v.pid()
    ));
    log(format!(
        "NVRM: Xid (PCI:0000:3b:00): 31, pid={}, name=other, MMU Fault",
        v.pid() + 100_000
    ));
    v.trigger();
    assert_eq!(v.wait_signal(), Some(SIGSEGV));
    let text = ct.text_report_for(v.pid());
    assert!(text.contains("gpu:      /dev/nvidia-uvm open"), "{text}");
    let xid: Vec<&str> = text.lines().filter(|l| l.starts_with("xid:")).collect();
    assert_eq!(xid.len(), 1, "{text}");
    assert!(
        xid[0].starts_with("xid:      79 on 0000:3b:00, ")
            && xid[0].contains(&format!(
                " the signal: NVRM: Xid (PCI:0000:3b:00): 79, pid={}, name=crash_nofp, GPU has \
                 fallen off the bus.",
                v.pid()
            )),
        "{}",
        xid[0]
    );
    drop(ct);
    let _ = std::fs::remove_dir_all(&dir);
}

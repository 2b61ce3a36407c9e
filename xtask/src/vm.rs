//! `cargo xtask vm-test`: the smoke tests on Debian's packaged kernels, each booted under
//! qemu with TCG (no KVM needed) and the host's root file system shared read-only over
//! 9p, so that the release binary, the test binaries and their victims run unchanged,
//! at the same paths, on another kernel.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{output, status};

/// Kernels the matrix can boot: a label and the package's name, as an `apt-cache search`
/// pattern (Debian renames a kernel package at each ABI change; the newest one is taken).
pub const KERNELS: &[(&str, &str)] = &[
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$"),
    ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$"),
];

/// The kernel `cargo xtask test` adds to the machine's own.
pub const IN_TEST: &str = "6.1";

/// The smoke suite: (test binary, test) from the integration tests.
const SMOKE: &[(&str, &str)] = &[
    ("crashes", "c_with_frame_pointers"),
    ("crashes", "every_stack_class_loads_and_captures"),
    ("crashes", "c_without_frame_pointers"),
    ("python", "text_report_reads_like_faulthandler"),
    // The programs with the records after a capture switched off, as on 5.15.
    ("python", "without_bpf_loop_reports_say_what_they_lack"),
    ("whole_crash", "oom_kill_in_a_memory_cgroup"),
    ("whole_crash", "kill_9_is_reported_with_every_thread"),
    // The exit record: on 6.1 sched_process_exit runs after the mm is gone.
    ("whole_crash", "outcome_agrees_with_usr_bin_time"),
    ("hard_cases", "container_process_uses_its_own_files"),
];

/// Modules the boot needs where the kernel has them as modules: the PCI transport, and
/// 9p over virtio (their dependencies come from their own `depends=`).
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// Bound on one kernel's whole run: boot, nine tests, power-off (about 4 minutes on 2
/// emulated cores).
const VM_TIMEOUT: Duration = Duration::from_secs(900);

/// One kernel's outcome.
pub struct Outcome {
    pub release: String,
    pub passed: usize,
    pub failed: Vec<String>,
    pub seconds: f64,
}

/// Boots each kernel in `labels` in turn and runs the smoke suite there.
pub fn run(root: &Path, labels: &[String]) -> Result<Vec<Outcome>> {
    let tests = build_tests(root)?;
    let mut outcomes = Vec::new();
    for label in labels {
        let Some(&(_, pattern)) = KERNELS.iter().find(|(l, _)| l == label) else {
            bail!(
                "unknown kernel `{label}`: one of {}",
                KERNELS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
            );
        };
        let kernel = fetch_kernel(pattern)?;
        let o = boot_and_test(root, label, &kernel, &tests)?;
        println!(
            "kernel {}: {} passed, {} failed ({:.0} s){}",
            o.release,
            o.passed,
            o.failed.len(),
            o.seconds,
            if o.failed.is_empty() {
                String::new()
            } else {
                format!(": {}", o.failed.join(", "))
            }
        );
        outcomes.push(o);
    }
    Ok(outcomes)
}

/// The smoke suite's test binaries, built as `cargo xtask test` builds them.
fn build_tests(root: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).args([
        "test",
        "--no-run",
        "--message-format=json",
        "-p",
        "crashtrace-tests",
    ]);
    let mut names: Vec<&str> = SMOKE.iter().map(|s| s.0).collect();
    names.dedup();
    for n in &names {
        cmd.args(["--test", n]);
    }
    let out = output(cmd.stderr(Stdio::inherit()))?;
    let mut found = BTreeMap::new();
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (
            v.pointer("/target/name").and_then(|n| n.as_str()),
            v.get("executable").and_then(|e| e.as_str()),
        ) else {
            continue;
        };
        if names.contains(&name) {
            found.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    for n in names {
        if !found.contains_key(n) {
            bail!("cargo built no test binary `{n}`");
        }
    }
    Ok(found)
}

/// An unpacked kernel package: its image and its modules' directory.
struct Kernel {
    release: String,
    image: PathBuf,
    modules: PathBuf,
}

/// The newest package matching `pattern`, downloaded and unpacked once into the cache
/// (outside the checkout, so that fresh clones share it).
fn fetch_kernel(pattern: &str) -> Result<Kernel> {
    let found = output(Command::new("apt-cache").args(["search", "--names-only", pattern]))?;
    let mut packages: Vec<String> = found
        .lines()
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    packages.sort_by_key(|p| version_key(p));
    let Some(package) = packages.pop() else {
        bail!(
            "no Debian package matches {pattern} (is the package index current? `apt-get update`)"
        );
    };
    let cache = crate::cache_dir().join("kernels");
    let dir = cache.join(&package);
    let boot = dir.join("boot");
    if !boot.exists() {
        std::fs::create_dir_all(&cache)?;
        eprintln!("vm: downloading {package}");
        status(Command::new("apt-get").current_dir(&cache).args([
            "-o",
            "APT::Sandbox::User=root",
            "download",
            "-q",
            &package,
        ]))?;
        let deb = std::fs::read_dir(&cache)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
            .with_context(|| format!("apt-get download left no {package} .deb"))?;
        let tmp = cache.join(format!("{package}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
        std::fs::rename(&tmp, &dir)?;
        std::fs::remove_file(&deb)?;
    }
    let image = std::fs::read_dir(&boot)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{package} has no vmlinuz"))?;
    let release = image.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_string();
    let modules = dir.join("lib/modules").join(&release);
    Ok(Kernel {
        release,
        image,
        modules,
    })
}

/// Orders `linux-image-6.1.0-9-...` before `linux-image-6.1.0-50-...`.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn boot_and_test(
    root: &Path,
    label: &str,
    kernel: &Kernel,
    tests: &BTreeMap<String, PathBuf>,
) -> Result<Outcome> {
    let work = root.join("target/vm").join(label);
    let _ = std::fs::remove_dir_all(&work);
    let (initrd_dir, out) = (work.join("initrd"), work.join("out"));
    std::fs::create_dir_all(initrd_dir.join("modules"))?;
    std::fs::create_dir_all(&out)?;
    let script = work.join("smoke.sh");
    std::fs::write(&script, smoke_script(root, tests))?;
    let order = modules_into(kernel, &initrd_dir.join("modules"))?;
    std::fs::write(initrd_dir.join("modules/order"), order.join("\n"))?;
    // What the guest must see of the host where a tmpfs goes over it (a checkout or a
    // target directory under /tmp).
    let mut keep: Vec<PathBuf> = vec![root.to_path_buf(), crate::binary()];
    keep.extend(tests.values().cloned());
    let mut keep: Vec<PathBuf> = keep
        .iter()
        .map(|p| {
            if p.is_dir() {
                p.clone()
            } else {
                p.parent().unwrap_or(p).to_path_buf()
            }
        })
        .collect();
    keep.sort();
    keep.dedup();
    if keep.iter().any(|p| p.to_string_lossy().contains('\'')) {
        bail!("a path with a single quote cannot be shared with the guest: {keep:?}");
    }
    std::fs::write(initrd_dir.join("init"), init_script(&script, &keep))?;
    make_initrd(&initrd_dir, &work.join("initrd.gz"))?;

    let console = std::fs::File::create(work.join("console.log"))?;
    let t = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "q35",
            "-accel",
            "tcg,thread=multi",
            "-smp",
            "2",
            "-m",
            "3072",
        ])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(work.join("initrd.gz"))
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=out,security_model=none",
            out.display()
        ))
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .spawn()
        .context("starting qemu-system-x86_64 (cargo xtask setup installs it)")?;
    let finished = loop {
        if let Some(st) = qemu.try_wait()? {
            break st.success();
        }
        if t.elapsed() > VM_TIMEOUT {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let seconds = t.elapsed().as_secs_f64();
    let release = std::fs::read_to_string(out.join("release"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| kernel.release.clone());
    let (mut passed, mut failed) = (0, Vec::new());
    for (binary, test) in SMOKE {
        let log = std::fs::read_to_string(out.join(format!("{binary}.log"))).unwrap_or_default();
        if log.lines().any(|l| l == format!("test {test} ... ok")) {
            passed += 1;
        } else {
            failed.push(format!("{binary}::{test}"));
        }
    }
    if !finished {
        failed.push(format!(
            "the VM did not finish within {} s (see {})",
            VM_TIMEOUT.as_secs(),
            work.join("console.log").display()
        ));
    }
    if !failed.is_empty() {
        eprintln!("vm: logs of kernel {release} are in {}", out.display());
    }
    Ok(Outcome {
        release,
        passed,
        failed,
        seconds,
    })
}

/// Copies the boot modules and what they depend on, uncompressed, into `dir`; returns
/// their names in load order.
fn modules_into(kernel: &Kernel, dir: &Path) -> Result<Vec<String>> {
    let builtin =
        std::fs::read_to_string(kernel.modules.join("modules.builtin")).unwrap_or_default();
    let mut files = BTreeMap::new();
    index_modules(&kernel.modules.join("kernel"), &mut files)?;
    let mut order = Vec::new();
    for m in BOOT_MODULES {
        add_module(m, &builtin, &files, dir, &mut order)?;
    }
    Ok(order)
}

fn add_module(
    name: &str,
    builtin: &str,
    files: &BTreeMap<String, PathBuf>,
    dir: &Path,
    order: &mut Vec<String>,
) -> Result<()> {
    let name = name.replace('-', "_");
    if order.contains(&name) || builtin.lines().any(|l| module_name(l) == name) {
        return Ok(());
    }
    let src = files
        .get(&name)
        .with_context(|| format!("the kernel has module {name} neither built in nor as a file"))?;
    let dst = dir.join(format!("{name}.ko"));
    if src.extension().is_some_and(|e| e == "xz") {
        let o = Command::new("xz").arg("-dc").arg(src).output()?;
        if !o.status.success() {
            bail!("xz -dc {} failed", src.display());
        }
        std::fs::write(&dst, o.stdout)?;
    } else {
        std::fs::copy(src, &dst)?;
    }
    for dep in depends(&std::fs::read(&dst)?) {
        add_module(&dep, builtin, files, dir, order)?;
    }
    order.push(name);
    Ok(())
}

/// `name` of a modules.builtin line or a module file (`kernel/fs/9p/9p.ko[.xz]`).
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

fn index_modules(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if e.file_type()?.is_dir() {
            index_modules(&p, files)?;
        } else if let Some(n) = p.file_name().and_then(|n| n.to_str())
            && n.contains(".ko")
        {
            files.insert(module_name(n), p);
        }
    }
    Ok(())
}

/// A module's dependencies: its `.modinfo` section holds NUL-separated `key=value`
/// strings, `depends=a,b` among them. Read by hand because kmod's modinfo is not on a
/// minimal host, and one key needs no ELF parse (the key occurs nowhere else).
fn depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// busybox and the modules, as a gzip'd newc cpio (busybox writes it).
fn make_initrd(dir: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("bin"))?;
    for d in ["proc", "sys", "dev", "newroot"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .context("busybox-static is missing (cargo xtask setup installs it)")?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.join("init"), std::fs::Permissions::from_mode(0o755))?;
    let sh = format!(
        "cd {} && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > {}",
        dir.display(),
        out.display()
    );
    status(Command::new("sh").args(["-c", &sh]))
}

/// PID 1: the modules, the host's root at /newroot (read-only) with the kernel's own
/// file systems and fresh tmpfs where the tests write (`keep` bound back over them), the
/// output share, then the suite.
fn init_script(smoke: &Path, keep: &[PathBuf]) -> String {
    let (mut save, mut restore) = (String::new(), String::new());
    for (i, dir) in keep.iter().enumerate() {
        let d = dir.display();
        let _ = writeln!(
            save,
            "  $B mkdir -p /keep/{i} && $B mount --bind '/newroot{d}' /keep/{i}"
        );
        let _ = writeln!(
            restore,
            "  $B mkdir -p '/newroot{d}' && $B mount --bind /keep/{i} '/newroot{d}'"
        );
    }
    format!(
        r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules/order); do $B insmod /modules/$m.ko || echo "vm: insmod $m failed"; done
R=/newroot
if $B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose host $R; then
  $B mount -t proc proc $R/proc
{save}  $B mount -t sysfs sys $R/sys
  $B mount -t devtmpfs dev $R/dev
  $B mkdir -p $R/dev/pts $R/dev/shm
  $B mount -t devpts devpts $R/dev/pts
  $B mount -t tmpfs shm $R/dev/shm
  $B mount -t tmpfs tmp $R/tmp
  $B mount -t tmpfs run $R/run
  $B mount -t tracefs tracefs $R/sys/kernel/tracing
  $B mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
{restore}  $B mkdir -p $R/tmp/vm-out
  $B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out $R/tmp/vm-out
  $B chroot $R /bin/sh {}
else
  echo "vm: the host's root did not mount"
fi
$B poweroff -f
"#,
        smoke.display(),
    )
}

/// Runs in the guest, in the host's root: each smoke test binary with its tests.
fn smoke_script(root: &Path, tests: &BTreeMap<String, PathBuf>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n\
         export CRASHTRACE_BIN={} CRASHTRACE_TEST_WAIT_SECS=240\n\
         uname -r > /tmp/vm-out/release\n\
         # The tests' memory cgroups sit under the root group.\n\
         echo +memory > /sys/fs/cgroup/cgroup.subtree_control\n\
         cd {}",
        crate::binary().display(),
        root.join("tests").display()
    );
    for (binary, exe) in tests {
        let names: Vec<&str> = SMOKE
            .iter()
            .filter(|(b, _)| b == binary)
            .map(|(_, t)| *t)
            .collect();
        let _ = writeln!(
            s,
            "echo \"vm: {binary}\"\n{} --exact --test-threads=1 {} > /tmp/vm-out/{binary}.log 2>&1",
            exe.display(),
            names.join(" ")
        );
    }
    s
}

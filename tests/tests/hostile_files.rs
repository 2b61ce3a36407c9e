//! An unprivileged user (`nobody`) hands crashtrace hostile files: ELF headers that lie,
//! decompression bombs, debug links to FIFOs and to root-only files, a file truncated
//! under a mapping. crashtrace must keep running, keep reporting, and open nothing it
//! should not.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::Path,
    process::Command,
};

use crashtrace_tests::{Crashtrace, Shared, Victim, as_nobody, victim};

/// inotify watches on files crashtrace must never open.
struct OpenWatch(i32);

impl OpenWatch {
    fn new(paths: &[&Path]) -> Self {
        // SAFETY: plain syscalls; paths are NUL-terminated.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0);
        for p in paths {
            let c = CString::new(p.as_os_str().as_bytes()).unwrap();
            // SAFETY: plain syscall on our descriptor and a NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN) };
            assert!(wd >= 0, "watching {}", p.display());
        }
        Self(fd)
    }

    /// How many opens were seen since the watch began.
    fn opens(&self) -> usize {
        let mut buf = [0u8; 4096];
        let mut n = 0;
        loop {
            // SAFETY: reading into our buffer from our descriptor.
            let got = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                return n;
            }
            let mut at = 0;
            while at < got as usize {
                // SAFETY: the kernel wrote whole events; inotify_event is plain old data.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                n += 1;
                at += std::mem::size_of::<libc::inotify_event>() + ev.len as usize;
            }
        }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        // SAFETY: our descriptor.
        unsafe { libc::close(self.0) };
    }
}

#[test]
fn hostile_elf_files_neither_stop_nor_fool_crashtrace() {
    // A root-only file the links aim at.
    let vault = Shared::new("vault");
    std::fs::set_permissions(&vault.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = vault.0.join("secret");
    std::fs::write(&secret, b"root only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    let dir = Shared::writable("hostile-elf");
    let src = dir.0.join("ct-src");
    std::fs::copy(victim("crash_nofp"), &src).unwrap();
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody("python3")
        .arg(crashtrace_tests::source("hostile_elf.py"))
        .arg(&src)
        .arg(&dir.0)
        .arg(&secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 9, "{names:?}");
    let watch = OpenWatch::new(&[
        &secret,
        &dir.0.join("fifo.debug"),
        &dir.0.join(".debug/fifo.debug"),
    ]);

    let ct = Crashtrace::start(&[
        "--comm",
        "ct-",
        "--debuginfod",
        "--debuginfod-url",
        "http://127.0.0.1:9",
        "--debuginfod-timeout",
        "0.5",
    ]);
    for name in &names {
        // Named ct-<attack> so the comm filter takes them and nothing else.
        let exe = dir.0.join(name);
        let mut v = Victim::spawn(as_nobody(exe.to_str().unwrap()).arg("segv"));
        v.wait_exit();
        let parent = v.pid();
        let r = ct.report_where(&format!("the report of {name}"), |r| r.parent_pid == parent);
        assert_eq!(r.signal.name, "SIGSEGV", "{name}");
        // The program's own symbol table still names the crashing function (the xz
        // bomb has none: libc's frames are named, its own are unnamed with a reason).
        let (want, why) = if name.ends_with("xzbomb") {
            ("__libc_start_main_impl", "stripped")
        } else {
            ("crash_segv", "")
        };
        assert!(
            r.frames.iter().any(|f| f.function.as_deref() == Some(want))
                && r.frames.iter().all(|f| f.function.is_some()
                    || f.unnamed_reason.as_deref().is_some_and(|w| w.contains(why))),
            "{name}: {:?}",
            r.frames
        );
        // No checksum of any file is shown.
        let said = serde_json::to_string(&r.frames).unwrap();
        assert!(!said.contains("(actual)"), "{name}: {said}");
    }
    // Truncated under a mapping, then mapped again: the Python registry reads files
    // named like interpreters.
    let st = as_nobody("python3")
        .args([
            "-c",
            "import mmap, os, shutil, sys, time\n\
             p = os.path.join(sys.argv[1], 'python3.11')\n\
             for i in range(3):\n\
             \x20   shutil.copy('/bin/true', p)\n\
             \x20   f = open(p, 'rb')\n\
             \x20   a = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_EXEC)\n\
             \x20   time.sleep(0.3)\n\
             \x20   os.truncate(p, 4096)\n\
             \x20   b = mmap.mmap(f.fileno(), 4096, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_EXEC)\n\
             \x20   time.sleep(0.3)\n",
        ])
        .arg(&dir.0)
        .status()
        .unwrap();
    assert!(st.success());

    // Still running, still reporting an ordinary crash.
    let plain = dir.0.join("ct-plain");
    std::fs::copy(victim("crash_nofp"), &plain).unwrap();
    let mut v = Victim::spawn(Command::new(&plain).arg("segv"));
    v.wait_exit();
    let r = ct.report_for(v.pid());
    assert!(
        r.frames
            .iter()
            .any(|f| f.function.as_deref() == Some("level1"))
    );
    let mut ct = ct;
    assert!(ct.is_running());
    assert_eq!(watch.opens(), 0, "a file the links aim at was opened");
    assert!(ct.stop_on_request(), "crashtrace did not stop on SIGINT");
}

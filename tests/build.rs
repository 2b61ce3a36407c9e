//! Builds the victim programs (tests/victims) in their variants: with and without frame
//! pointers, a shared library, a dlopen'ed library, C++ and Rust.

use std::{env, path::PathBuf, process::Command};

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run `cargo xtask setup`)"));
    assert!(status.success(), "{cmd:?} failed");
}

fn main() {
    let src = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("victims");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("victims");
    std::fs::create_dir_all(&out).unwrap();
    println!("cargo:rerun-if-changed=victims");
    println!("cargo:rustc-env=VICTIMS_DIR={}", out.display());

    let s = |f: &str| src.join(f);
    let o = |f: &str| out.join(f);
    let gcc = |args: &[&str], input: PathBuf, output: PathBuf| {
        run(Command::new("gcc")
            .args(args)
            .arg(input)
            .arg("-o")
            .arg(output));
    };
    gcc(
        &["-O0", "-g", "-fno-omit-frame-pointer"],
        s("crash.c"),
        o("crash_fp"),
    );
    gcc(
        &["-O2", "-g", "-fomit-frame-pointer"],
        s("crash.c"),
        o("crash_nofp"),
    );
    gcc(
        &["-O2", "-g", "-fomit-frame-pointer"],
        s("handlers.c"),
        o("handlers"),
    );
    // Static: runs in an empty chroot (the container test).
    gcc(
        &["-O2", "-g", "-fomit-frame-pointer", "-static"],
        s("crash.c"),
        o("crash_static"),
    );
    gcc(
        &["-O2", "-g", "-fomit-frame-pointer", "-pthread"],
        s("threads.c"),
        o("threads"),
    );
    gcc(
        &["-O2", "-g", "-fomit-frame-pointer", "-fPIC", "-shared"],
        s("shlib.c"),
        o("libvictim.so"),
    );
    run(Command::new("gcc")
        .args(["-O2", "-g", "-fomit-frame-pointer"])
        .arg(s("use_shlib.c"))
        .arg("-o")
        .arg(o("use_shlib"))
        .arg(format!("-L{}", out.display()))
        .arg("-lvictim")
        .arg(format!("-Wl,-rpath,{}", out.display())));
    run(Command::new("gcc")
        .args(["-O2", "-g"])
        .arg(s("use_dlopen.c"))
        .arg("-o")
        .arg(o("use_dlopen"))
        .arg("-ldl"));
    run(Command::new("g++")
        .args(["-O2", "-g", "-fomit-frame-pointer"])
        .arg(s("crash.cpp"))
        .arg("-o")
        .arg(o("crash_cpp")));
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    run(Command::new(rustc)
        .args([
            "--edition=2021",
            "--crate-name=crash_rust",
            "-C",
            "opt-level=2",
            "-C",
            "debuginfo=2",
        ])
        .arg(s("crash.rs"))
        .arg("-o")
        .arg(o("crash_rust")));
}

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
    gcc(&["-O2", "-g"], s("dump_ephemeral.c"), o("dump_ephemeral"));
    // Static: runs in an empty chroot (the container test).
    gcc(
        &["-O2", "-g", "-fomit-frame-pointer", "-static"],
        s("crash.c"),
        o("crash_static"),
    );
    // Deletes its own files, then crashes at once.
    run(Command::new("gcc")
        .args(["-O2", "-g", "-fomit-frame-pointer"])
        .arg(s("self_delete.c"))
        .arg("-o")
        .arg(o("self_delete"))
        .arg("-ldl"));
    // A two-deep inline chain at the fault.
    gcc(
        &["-O2", "-g", "-fomit-frame-pointer"],
        s("inline.c"),
        o("inline"),
    );
    gcc(
        &["-O2", "-g", "-fomit-frame-pointer", "-pthread"],
        s("threads.c"),
        o("threads"),
    );
    gcc(
        &["-O2", "-g", "-fomit-frame-pointer", "-pthread"],
        s("why.c"),
        o("why"),
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
    stripped_variants(&out);
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // What `cargo build --release` passes with `debug = true` and `panic = "abort"` in the
    // release profile: no frame pointers, 16 codegen units.
    run(Command::new(&rustc)
        .args([
            "--edition=2021",
            "--crate-name=rust_panic",
            "-C",
            "opt-level=3",
            "-C",
            "debuginfo=2",
            "-C",
            "panic=abort",
            "-C",
            "codegen-units=16",
            "-C",
            "embed-bitcode=no",
        ])
        .arg(s("rust_panic.rs"))
        .arg("-o")
        .arg(o("rust_panic")));
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

fn sh(script: &str, dir: &std::path::Path) {
    run(Command::new("sh").arg("-ec").arg(script).current_dir(dir));
}

/// Stripped builds of crash_nofp, with their debug info kept the ways distributions do:
/// - crash_stripped + crash_stripped.debug: the debug file for a .build-id directory;
/// - crash_debuglink + crash_debuglink.debug: found through .gnu_debuglink;
/// - crash_minidebug: symbols in an xz-compressed .gnu_debugdata (Fedora's MiniDebugInfo);
/// - crash_bare: nothing left but .dynsym.
fn stripped_variants(out: &std::path::Path) {
    sh(
        "for v in stripped debuglink minidebug bare; do cp crash_nofp crash_$v; done
         objcopy --only-keep-debug crash_stripped crash_stripped.debug
         strip --strip-all crash_stripped
         objcopy --only-keep-debug crash_debuglink crash_debuglink.debug
         strip --strip-all crash_debuglink
         objcopy --add-gnu-debuglink=crash_debuglink.debug crash_debuglink
         strip --strip-all crash_bare
         nm -D crash_minidebug --format=posix --defined-only | awk '{ print $1 }' | sort > dynsyms
         nm crash_minidebug --format=posix --defined-only \
           | awk '{ if ($2 == \"T\" || $2 == \"t\") print $1 }' | sort > funcsyms
         comm -13 dynsyms funcsyms > keep_symbols
         objcopy --only-keep-debug crash_minidebug mini.debug
         objcopy -S --remove-section .gdb_index --remove-section .comment \
           --keep-symbols=keep_symbols mini.debug mini_debuginfo
         rm -f mini_debuginfo.xz && xz mini_debuginfo
         strip --strip-all -R .comment crash_minidebug
         objcopy --add-section .gnu_debugdata=mini_debuginfo.xz crash_minidebug
         rm -f dynsyms funcsyms keep_symbols mini.debug mini_debuginfo.xz",
        out,
    );
}

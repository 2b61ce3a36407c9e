use which::which;

/// Rebuild the eBPF object when bpf-linker changes: cargo cannot see that dependency.
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found in PATH: run `cargo xtask setup` (it installs it against LLVM 22)",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}

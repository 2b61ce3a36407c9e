use anyhow::Context as _;

/// Builds the eBPF object (crashtrace-ebpf, for the BPF target with the nightly
/// toolchain and bpf-linker) so that `cargo build` produces a complete binary.
fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .context("workspace root")?
        .join("crashtrace-ebpf");
    let root = root.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "crashtrace-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs (see `cargo xtask setup` for the prerequisites)")
}

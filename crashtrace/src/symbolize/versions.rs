//! Which CUDA, cuDNN, NCCL and driver libraries a process had loaded, and their versions:
//! from the file's own name where it has one (`libcudart.so.12.4.127`, the driver's
//! `libcuda.so.550.54.14`), else from the pip package that installed it
//! (`site-packages/nvidia_cudnn_cu13-9.26.0.51.dist-info`).

use std::{collections::HashMap, os::unix::fs::MetadataExt as _, path::Path};

use crate::{model::GpuLibrary, sys::procfs::Mapping};

/// Entries read at most from one site-packages directory.
const MAX_DIR_ENTRIES: usize = 4096;

/// What a library is, by its file name; None for anything else.
pub fn kind(name: &str) -> Option<(&'static str, &'static str)> {
    // (stem before `.so`, what to call it, pip distribution prefix)
    const KINDS: [(&str, &str, &str); 5] = [
        ("libcudart", "CUDA runtime", "nvidia_cuda_runtime"),
        ("libcuda", "CUDA driver", ""),
        ("libcudnn", "cuDNN", "nvidia_cudnn"),
        ("libnccl", "NCCL", "nvidia_nccl"),
        ("libcublas", "cuBLAS", "nvidia_cublas"),
    ];
    let stem = name.split_once(".so")?.0;
    KINDS
        .iter()
        .find(|(s, _, _)| *s == stem)
        .map(|(_, what, dist)| (*what, *dist))
}

/// The version in a library's file name, when it says more than the soname's major.
pub fn version_in_name(name: &str) -> Option<String> {
    let v = name.split_once(".so.")?.1;
    (v.split('.').count() >= 2
        && v.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
    .then(|| v.to_string())
}

/// The version of pip distribution `prefix` among a site-packages directory's entries.
pub fn version_in_dist_info(prefix: &str, entries: &[String]) -> Option<String> {
    if prefix.is_empty() {
        return None;
    }
    entries.iter().find_map(|e| {
        let rest = e.strip_suffix(".dist-info")?.strip_prefix(prefix)?;
        // `nvidia_cudnn_cu13-9.26.0.51`: an optional `_cuNN` tag, then `-VERSION`.
        let (tag, version) = rest.split_once('-')?;
        (tag.is_empty() || tag.starts_with("_cu")).then(|| version.to_string())
    })
}

/// The GPU libraries among `mappings`, each once.
pub fn gpu_libraries(mappings: &[Mapping]) -> Vec<GpuLibrary> {
    let mut out: Vec<GpuLibrary> = Vec::new();
    let mut listings: HashMap<String, Vec<String>> = HashMap::new();
    for m in mappings {
        let name = m.path.rsplit('/').next().unwrap_or(&m.path);
        let Some((what, dist)) = kind(name) else {
            continue;
        };
        if out.iter().any(|l| *l.path == *m.path) {
            continue;
        }
        let version = version_in_name(name).or_else(|| {
            let site = site_packages(&m.path)?;
            // Only where this path is the very file that was mapped: a container's path
            // may name another file on the host.
            let md = std::fs::metadata(&*m.path).ok()?;
            if md.ino() != m.inode {
                return None;
            }
            let entries = listings
                .entry(site.to_string())
                .or_insert_with(|| list(site));
            version_in_dist_info(dist, entries)
        });
        out.push(GpuLibrary {
            name: what.to_string(),
            version,
            path: m.path.to_string(),
        });
    }
    out
}

/// The site-packages (or dist-packages) directory a path lies in.
fn site_packages(path: &str) -> Option<&str> {
    ["/site-packages/", "/dist-packages/"].iter().find_map(|d| {
        let i = path.find(d)?;
        Some(&path[..i + d.len() - 1])
    })
}

fn list(dir: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(Path::new(dir)) else {
        return Vec::new();
    };
    rd.flatten()
        .take(MAX_DIR_ENTRIES)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dist-info"))
        .collect()
}

/// The NVIDIA kernel module's version, from the host's /proc/driver/nvidia/version.
pub fn driver_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    parse_driver_version(&text)
}

fn parse_driver_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .find(|w| w.split('.').count() >= 2 && w.split('.').all(|p| p.parse::<u32>().is_ok()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_kinds_and_versions() {
        assert_eq!(kind("libcudart.so.13").unwrap().0, "CUDA runtime");
        assert_eq!(kind("libcuda.so.550.54.14").unwrap().0, "CUDA driver");
        assert_eq!(kind("libcudnn.so.9").unwrap().0, "cuDNN");
        assert_eq!(kind("libnccl.so.2").unwrap().0, "NCCL");
        assert_eq!(kind("libcudnn_ops.so.9"), None);
        assert_eq!(kind("libcudart_static.a"), None);
        assert_eq!(kind("libc.so.6"), None);
        assert_eq!(
            version_in_name("libcudart.so.12.4.127").as_deref(),
            Some("12.4.127")
        );
        assert_eq!(
            version_in_name("libcuda.so.550.54.14").as_deref(),
            Some("550.54.14")
        );
        assert_eq!(version_in_name("libcudnn.so.9"), None);
        assert_eq!(version_in_name("libnccl.so.2.x"), None);
        let entries: Vec<String> = [
            "nvidia_cuda_runtime-13.2.86.dist-info",
            "nvidia_cudnn_cu13-9.26.0.51.dist-info",
            "nvidia_nccl_cu13-2.30.7.dist-info",
            "nvidia_cuda_runtime_tools-1.0.dist-info",
            "torch-2.15.0.dist-info",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            version_in_dist_info("nvidia_cudnn", &entries).as_deref(),
            Some("9.26.0.51")
        );
        assert_eq!(
            version_in_dist_info("nvidia_nccl", &entries).as_deref(),
            Some("2.30.7")
        );
        assert_eq!(
            version_in_dist_info("nvidia_cuda_runtime", &entries).as_deref(),
            Some("13.2.86")
        );
        assert_eq!(version_in_dist_info("", &entries), None);
        assert_eq!(
            site_packages("/v/lib/python3.11/site-packages/nvidia/nccl/lib/libnccl.so.2"),
            Some("/v/lib/python3.11/site-packages")
        );
        assert_eq!(
            parse_driver_version(
                "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\nGCC version: gcc 12\n"
            )
            .as_deref(),
            Some("550.54.14")
        );
    }
}

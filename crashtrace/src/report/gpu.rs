//! What a crashing process had to do with GPUs: the NVIDIA devices it had open (read
//! from its descriptor table at the crash), the CUDA libraries it had loaded, the driver,
//! and the driver's Xid lines for it. No I/O: all of it comes in.

use crashtrace_common::{GPU_CTL, GPU_FDS_MORE, GPU_MODESET, GPU_UVM};

use crate::{
    assemble::ProcessMemory,
    model::{GpuLibrary, GpuReport, XidEvent},
    sys::kmsg::Xid,
};

/// An Xid this long before the fatal signal (or this long after) is about it.
const XID_BEFORE_NS: u64 = 120_000_000_000;
const XID_AFTER_NS: u64 = 10_000_000_000;

/// Device paths from the kernel side's bitmask and flags.
pub fn devices(minors: u64, flags: u32) -> Vec<String> {
    let mut out: Vec<String> = (0..64)
        .filter(|i| minors & (1u64 << i) != 0)
        .map(|i| format!("/dev/nvidia{i}"))
        .collect();
    for (bit, path) in [
        (GPU_CTL, "/dev/nvidiactl"),
        (GPU_MODESET, "/dev/nvidia-modeset"),
        (GPU_UVM, "/dev/nvidia-uvm"),
    ] {
        if flags & bit != 0 {
            out.push(path.to_string());
        }
    }
    out
}

/// The Xid lines of `recent` about process `pid` around its fatal signal at `signal_ns`:
/// those naming it, and those naming no process that a GPU it had open could have
/// caused (the driver leaves pid out for some codes).
pub fn xids_for<'a>(
    recent: impl Iterator<Item = &'a Xid>,
    pid: u32,
    signal_ns: u64,
    has_gpu: bool,
) -> Vec<XidEvent> {
    recent
        .filter(|x| x.time_ns + XID_BEFORE_NS >= signal_ns && x.time_ns <= signal_ns + XID_AFTER_NS)
        .filter(|x| x.pid == Some(pid) || (x.pid.is_none() && has_gpu))
        .map(|x| XidEvent {
            code: x.code,
            pci: x.pci.clone(),
            pid: x.pid,
            message: x.line.clone(),
            seconds_after_signal: (x.time_ns as f64 - signal_ns as f64) / 1e9,
        })
        .collect()
}

/// The report's GPU section; None for a process that touched no GPU.
pub fn gpu(
    memory: Option<&ProcessMemory>,
    libraries: Vec<GpuLibrary>,
    driver_version: Option<String>,
    xid: Vec<XidEvent>,
) -> Option<GpuReport> {
    let devices = memory.map_or_else(Vec::new, |m| devices(m.gpu_minors, m.gpu_flags));
    if devices.is_empty() && libraries.is_empty() && xid.is_empty() {
        return None;
    }
    let cuda_coredump = memory.filter(|m| m.env_unread == 0).map(|m| {
        m.env
            .iter()
            .any(|(n, v)| n == "CUDA_ENABLE_COREDUMP_ON_EXCEPTION" && v.trim() == "1")
    });
    Some(GpuReport {
        devices_incomplete: memory.is_some_and(|m| m.gpu_flags & GPU_FDS_MORE != 0),
        devices,
        driver_version: driver_version.or_else(|| {
            libraries
                .iter()
                .find(|l| l.name == "CUDA driver")
                .and_then(|l| l.version.clone())
        }),
        libraries,
        xid,
        cuda_coredump,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_from_the_descriptor_scan() {
        assert_eq!(
            devices(0b101, GPU_CTL | GPU_UVM),
            [
                "/dev/nvidia0",
                "/dev/nvidia2",
                "/dev/nvidiactl",
                "/dev/nvidia-uvm"
            ]
        );
        assert!(devices(0, 0).is_empty());
    }

    #[test]
    fn xid_lines_are_joined_by_pid_and_time() {
        let s = 1_000_000_000u64;
        let x = |t: u64, pid: Option<u32>, code: u32| Xid {
            time_ns: t,
            code,
            pci: "0000:3b:00".into(),
            pid,
            line: format!("NVRM: Xid (PCI:0000:3b:00): {code}"),
        };
        let recent = [
            x(500 * s, Some(42), 13),  // long before
            x(990 * s, Some(42), 31),  // 10 s before
            x(995 * s, Some(7), 43),   // another process
            x(999 * s, None, 79),      // no pid: only with a GPU open
            x(1030 * s, Some(42), 45), // long after
        ];
        let got = xids_for(recent.iter(), 42, 1000 * s, true);
        let codes: Vec<u32> = got.iter().map(|e| e.code).collect();
        assert_eq!(codes, [31, 79]);
        assert!((got[0].seconds_after_signal + 10.0).abs() < 1e-9);
        let codes: Vec<u32> = xids_for(recent.iter(), 42, 1000 * s, false)
            .iter()
            .map(|e| e.code)
            .collect();
        assert_eq!(codes, [31]);
    }

    #[test]
    fn gpu_section_only_for_gpu_processes() {
        assert_eq!(gpu(None, vec![], None, vec![]), None);
        let m = ProcessMemory {
            gpu_minors: 1,
            gpu_flags: GPU_CTL,
            env: vec![("CUDA_ENABLE_COREDUMP_ON_EXCEPTION".into(), "1".into())],
            ..ProcessMemory::default()
        };
        let lib = GpuLibrary {
            name: "CUDA driver".into(),
            version: Some("550.54.14".into()),
            path: "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.14".into(),
        };
        let g = gpu(Some(&m), vec![lib], None, vec![]).unwrap();
        assert_eq!(g.devices, ["/dev/nvidia0", "/dev/nvidiactl"]);
        assert_eq!(g.driver_version.as_deref(), Some("550.54.14"));
        assert_eq!(g.cuda_coredump, Some(true));
    }
}

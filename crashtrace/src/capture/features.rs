//! What the running kernel must offer the eBPF programs, checked before they load: a
//! kernel without one gets a sentence naming it and the first Linux that has it, not a
//! verifier log.

use btf_rs::Btf;

use super::btf::enum_value;

/// A kernel facility the programs use, and how its presence shows in the kernel's BTF.
#[derive(Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    /// The first mainline release that has it.
    pub since: (u32, u32),
    /// The `enum bpf_func_id` member of the helper, or the tracepoint's BTF type.
    probe: Probe,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    Helper(&'static str),
    /// `btf_trace_<name>`: the typedef a BTF-typed tracepoint attaches through.
    Tracepoint(&'static str),
}

/// What crash capture needs (`crashtrace` itself).
pub const CAPTURE: &[Feature] = &[
    Feature {
        name: "BTF-typed tracepoints (tp_btf) on signal_deliver",
        since: (5, 5),
        probe: Probe::Tracepoint("signal_deliver"),
    },
    Feature {
        name: "the BPF ring buffer",
        since: (5, 8),
        probe: Probe::Helper("BPF_FUNC_ringbuf_reserve"),
    },
    Feature {
        name: "bpf_get_current_task_btf",
        since: (5, 11),
        probe: Probe::Helper("BPF_FUNC_get_current_task_btf"),
    },
    Feature {
        name: "bpf_task_pt_regs",
        since: (5, 15),
        probe: Probe::Helper("BPF_FUNC_task_pt_regs"),
    },
];

/// What the records after a capture need (Python stacks, the memory map, the faulting
/// mapping, an overflowed stack's top): without it crashtrace still runs, without them.
pub const EXTRAS: &[Feature] = &[
    Feature {
        name: "bpf_loop",
        since: (5, 17),
        probe: Probe::Helper("BPF_FUNC_loop"),
    },
    Feature {
        name: "bpf_find_vma",
        since: (5, 17),
        probe: Probe::Helper("BPF_FUNC_find_vma"),
    },
];

/// What `crashtrace dump` needs besides (it reads other processes' memory).
pub const DUMP: &[Feature] = &[Feature {
    name: "bpf_copy_from_user_task",
    since: (5, 18),
    probe: Probe::Helper("BPF_FUNC_copy_from_user_task"),
}];

/// The features of `wanted` that `has` (a probe of the kernel's BTF) says are missing.
pub fn missing<'a>(wanted: &[&'a [Feature]], has: impl Fn(&Probe) -> bool) -> Vec<&'a Feature> {
    wanted
        .iter()
        .flat_map(|w| w.iter())
        .filter(|f| !has(&f.probe))
        .collect()
}

/// One sentence for a kernel (`release`) without `missing`; None when nothing is.
pub fn refusal(release: &str, missing: &[&Feature]) -> Option<String> {
    let newest = missing.iter().map(|f| f.since).max()?;
    let named: Vec<String> = missing
        .iter()
        .map(|f| format!("{} (Linux {}.{})", f.name, f.since.0, f.since.1))
        .collect();
    Some(format!(
        "this kernel ({release}) lacks {}, which crashtrace's eBPF programs need: run it on \
         Linux {}.{} or later",
        named.join(", "),
        newest.0,
        newest.1
    ))
}

/// What a report lacks on a kernel without `missing` extras; None when nothing is.
pub fn degradation(release: &str, missing: &[&Feature]) -> Option<String> {
    let newest = missing.iter().map(|f| f.since).max()?;
    let named: Vec<String> = missing
        .iter()
        .map(|f| format!("{} (Linux {}.{})", f.name, f.since.0, f.since.1))
        .collect();
    Some(format!(
        "this kernel ({release}) lacks {}: no Python frames, memory map, faulting mapping or \
         top of an overflowed stack in the reports (Linux {}.{} has them)",
        named.join(", "),
        newest.0,
        newest.1
    ))
}

/// Checks the running kernel for `required` (Err with the sentence when one is missing)
/// and for `extras`: the sentence of what reports will lack, if any.
pub fn check(
    btf: &Btf,
    required: &[&[Feature]],
    extras: &[Feature],
) -> anyhow::Result<Option<String>> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown release".into());
    // The tests run the degraded programs on a kernel that has everything by naming
    // helpers to take as missing.
    let pretend = std::env::var("CRASHTRACE_TEST_KERNEL_LACKS").unwrap_or_default();
    let has = |p: &Probe| match p {
        Probe::Helper(h) => {
            !pretend.split(',').any(|x| x == *h) && enum_value(btf, "bpf_func_id", h).is_ok()
        }
        Probe::Tracepoint(t) => btf
            .resolve_types_by_name(&format!("btf_trace_{t}"))
            .is_ok_and(|v| !v.is_empty()),
    };
    if let Some(sentence) = refusal(&release, &missing(required, has)) {
        anyhow::bail!("{sentence}");
    }
    Ok(degradation(&release, &missing(&[extras], has)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_with_everything_is_not_refused() {
        assert!(missing(&[CAPTURE, EXTRAS, DUMP], |_| true).is_empty());
        assert_eq!(degradation("6.1.0-57-amd64", &[]), None);
        assert_eq!(refusal("6.1.0-57-amd64", &[]), None);
    }

    #[test]
    fn one_sentence_names_each_missing_feature_and_the_release_needed() {
        // A 5.10 kernel: the ring buffer and tp_btf, none of the later helpers.
        let old = |p: &Probe| {
            matches!(
                p,
                Probe::Tracepoint(_) | Probe::Helper("BPF_FUNC_ringbuf_reserve")
            )
        };
        let gone = missing(&[CAPTURE], old);
        assert_eq!(
            refusal("5.10.0-32-amd64", &gone).unwrap(),
            "this kernel (5.10.0-32-amd64) lacks bpf_get_current_task_btf (Linux 5.11), \
             bpf_task_pt_regs (Linux 5.15), which crashtrace's eBPF programs need: run it on \
             Linux 5.15 or later"
        );
        // A 5.15 kernel (Ubuntu 22.04's): everything up to bpf_task_pt_regs. It runs, and
        // says what its reports lack.
        let lts = |p: &Probe| !matches!(p, Probe::Helper("BPF_FUNC_loop" | "BPF_FUNC_find_vma"));
        assert!(missing(&[CAPTURE], lts).is_empty());
        assert_eq!(
            degradation("5.15.0", &missing(&[EXTRAS], lts)).unwrap(),
            "this kernel (5.15.0) lacks bpf_loop (Linux 5.17), bpf_find_vma (Linux 5.17): no \
             Python frames, memory map, faulting mapping or top of an overflowed stack in the \
             reports (Linux 5.17 has them)"
        );
        // A 5.17 kernel can capture but not dump.
        let no_dump = |p: &Probe| !matches!(p, Probe::Helper("BPF_FUNC_copy_from_user_task"));
        assert!(missing(&[CAPTURE, EXTRAS], no_dump).is_empty());
        let gone = missing(&[CAPTURE, EXTRAS, DUMP], no_dump);
        assert_eq!(
            refusal("5.17.0", &gone).unwrap(),
            "this kernel (5.17.0) lacks bpf_copy_from_user_task (Linux 5.18), which \
             crashtrace's eBPF programs need: run it on Linux 5.18 or later"
        );
    }
}

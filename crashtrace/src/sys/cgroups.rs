//! Which cgroup (and so which container) a process ran in, from the cgroup v2 id the
//! kernel gave at the crash: the id is the inode number of the cgroup's directory.

use std::{collections::HashMap, os::unix::fs::MetadataExt as _, path::Path};

/// Cgroup names remembered at most; past it the cache starts over.
const MAX_CACHED: usize = 4096;

#[derive(Default)]
pub struct CgroupNames {
    mount: Option<String>,
    cache: HashMap<u64, Option<String>>,
}

impl CgroupNames {
    pub fn new() -> Self {
        let mount = std::fs::read_to_string("/proc/mounts").ok().and_then(|m| {
            m.lines()
                .find(|l| l.split(' ').nth(2) == Some("cgroup2"))
                .and_then(|l| l.split(' ').nth(1).map(str::to_string))
        });
        Self {
            mount,
            cache: HashMap::new(),
        }
    }

    /// The cgroup's path below the cgroup2 mount (`/` for the root), if it still exists.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.cache.get(&id) {
            return p.clone();
        }
        let mount = self.mount.clone()?;
        let mut budget = 100_000usize;
        let found = find(Path::new(&mount), id, 0, &mut budget).map(|p| {
            let rel = p
                .strip_prefix(&mount)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            if rel.is_empty() {
                "/".into()
            } else {
                format!("/{rel}")
            }
        });
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        self.cache.insert(id, found.clone());
        found
    }
}

/// Depth-first search for the directory whose inode is `id`, bounded in depth and size.
fn find(dir: &Path, id: u64, depth: usize, budget: &mut usize) -> Option<std::path::PathBuf> {
    if std::fs::metadata(dir).is_ok_and(|m| m.ino() == id) {
        return Some(dir.to_path_buf());
    }
    if depth >= 16 {
        return None;
    }
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        if e.file_type().is_ok_and(|t| t.is_dir())
            && let Some(p) = find(&e.path(), id, depth + 1, budget)
        {
            return Some(p);
        }
    }
    None
}

/// What a cgroup path says about who runs the process in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    pub container_id: Option<String>,
    /// `containerd`, `cri-o`, `docker`, `podman`: from the scope's prefix (systemd driver).
    pub runtime: Option<&'static str>,
    /// The Kubernetes pod's UID, with its dashes (the systemd driver writes `_`).
    pub pod_uid: Option<String>,
    pub slurm_job: Option<String>,
    pub slurm_step: Option<String>,
}

/// Reads a cgroup v2 path as the container runtimes and Slurm lay them out:
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
/// cri-containerd-<id>.scope` (systemd driver), `/kubepods/besteffort/pod<uid>/<id>`
/// (cgroupfs driver), `/system.slice/docker-<id>.scope`, and Slurm's
/// `/system.slice/slurmstepd.scope/job_<id>/step_<step>/...` (or `/slurm/uid_N/job_<id>/
/// step_<step>` on older layouts).
pub fn describe(path: &str) -> CgroupInfo {
    let mut info = CgroupInfo {
        container_id: container_id(path),
        ..CgroupInfo::default()
    };
    for part in path.split('/') {
        let unit = part
            .strip_suffix(".scope")
            .or_else(|| part.strip_suffix(".slice"))
            .unwrap_or(part);
        for (prefix, runtime) in [
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("docker-", "docker"),
            ("libpod-", "podman"),
        ] {
            if unit
                .strip_prefix(prefix)
                .is_some_and(|id| container_id(id).is_some())
            {
                info.runtime = Some(runtime);
            }
        }
        // `kubepods-burstable-pod<uid>` (systemd) or `pod<uid>` (cgroupfs).
        let pod = unit.rfind("-pod").map_or(unit, |i| &unit[i + 1..]);
        if path.contains("kubepods")
            && let Some(uid) = pod.strip_prefix("pod")
            && uid.len() == 36
            && uid
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
        {
            info.pod_uid = Some(uid.replace('_', "-"));
        }
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if let Some(id) = part.strip_prefix("job_").filter(|id| digits(id)) {
            info.slurm_job = Some(id.to_string());
        }
        if let Some(step) = part.strip_prefix("step_") {
            // Numbered steps, and Slurm's named ones (`batch`, `extern`, `interactive`).
            if digits(step) || matches!(step, "batch" | "extern" | "interactive") {
                info.slurm_step = Some(step.to_string());
            }
        }
    }
    if info.slurm_job.is_none() {
        info.slurm_step = None;
    }
    info
}

/// A container id in a cgroup path: the 64-hex-digit id Docker, containerd, CRI-O and
/// Podman put in their cgroup names (`docker-<id>.scope`, `cri-containerd-<id>.scope`, ...).
pub fn container_id(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut run = 0;
    for (i, c) in b.iter().enumerate() {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run += 1;
            let ends = i + 1 == b.len() || !b[i + 1].is_ascii_hexdigit();
            if run == 64 && ends {
                return Some(path[i + 1 - 64..=i].to_string());
            }
        } else {
            run = 0;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        let id = "3f2c1b0a".repeat(8);
        assert_eq!(
            container_id(&format!("/system.slice/docker-{id}.scope")).as_deref(),
            Some(id.as_str())
        );
        assert_eq!(
            container_id(&format!(
                "/kubepods/burstable/pod1234/cri-containerd-{id}.scope"
            ))
            .as_deref(),
            Some(id.as_str())
        );
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        // Longer hex runs are not ids.
        assert_eq!(container_id(&format!("/x/{id}ab")), None);
    }

    #[test]
    fn pods_containers_and_slurm_jobs_from_cgroup_paths() {
        let id = "3f2c1b0a".repeat(8);
        let uid = "0c4d1c6e-7a1b-4c2d-9e3f-112233445566";
        let sd_uid = uid.replace('-', "_");
        let info = |p: String| describe(&p);
        let k8s = |runtime: &'static str| CgroupInfo {
            container_id: Some(id.clone()),
            runtime: Some(runtime),
            pod_uid: Some(uid.into()),
            ..CgroupInfo::default()
        };
        let cases = [
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{sd_uid}.slice/cri-containerd-{id}.scope"
                ),
                k8s("containerd"),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{sd_uid}.slice/crio-{id}.scope"),
                k8s("cri-o"),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{sd_uid}.slice/docker-{id}.scope"
                ),
                k8s("docker"),
            ),
            (
                format!("/kubepods/besteffort/pod{uid}/{id}"),
                CgroupInfo {
                    container_id: Some(id.clone()),
                    pod_uid: Some(uid.into()),
                    ..CgroupInfo::default()
                },
            ),
            (
                format!("/system.slice/docker-{id}.scope"),
                CgroupInfo {
                    container_id: Some(id.clone()),
                    runtime: Some("docker"),
                    ..CgroupInfo::default()
                },
            ),
            (
                format!("/machine.slice/libpod-{id}.scope/container"),
                CgroupInfo {
                    container_id: Some(id.clone()),
                    runtime: Some("podman"),
                    ..CgroupInfo::default()
                },
            ),
            (
                "/system.slice/slurmstepd.scope/job_4242/step_0/user/task_1".into(),
                CgroupInfo {
                    slurm_job: Some("4242".into()),
                    slurm_step: Some("0".into()),
                    ..CgroupInfo::default()
                },
            ),
            (
                "/system.slice/node7_slurmstepd.scope/job_9/step_batch/user/task_0".into(),
                CgroupInfo {
                    slurm_job: Some("9".into()),
                    slurm_step: Some("batch".into()),
                    ..CgroupInfo::default()
                },
            ),
            (
                "/slurm/uid_1000/job_31/step_2".into(),
                CgroupInfo {
                    slurm_job: Some("31".into()),
                    slurm_step: Some("2".into()),
                    ..CgroupInfo::default()
                },
            ),
            // A user's own names that look alike are not taken for what they are not.
            (
                "/user.slice/user-1000.slice/podman-pod123.scope/step_0".into(),
                CgroupInfo::default(),
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope".into(),
                CgroupInfo::default(),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(info(path.clone()), want, "{path}");
        }
    }

    #[test]
    fn finds_this_process_cgroup() {
        let mut names = CgroupNames::new();
        let mount = names
            .mount
            .clone()
            .expect("a cgroup2 mount: crashtrace names containers from it");
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_string();
        let dir = Path::new(&mount).join(rel.trim_start_matches('/'));
        let ino = std::fs::metadata(&dir).unwrap().ino();
        assert_eq!(names.path(ino).as_deref(), Some(rel.as_str()));
        assert_eq!(names.path(0), None);
    }
}

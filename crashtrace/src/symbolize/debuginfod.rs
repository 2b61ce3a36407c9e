//! Fetching separate debug files by build ID from debuginfod servers (off by default).
//!
//! Each report gets a bounded time budget for downloads, so a slow or unreachable server
//! delays a report by at most that much and never blocks the ones after it. Failures are
//! remembered, so a build ID the servers do not have is asked for once.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub struct Debuginfod {
    urls: Vec<String>,
    /// Downloads go to `<cache>/.build-id/xx/yyyy.debug`, where the symbolizer looks.
    cache: PathBuf,
    budget: Duration,
    /// (build ID, what was asked for) the servers did not have.
    failed: HashSet<(Vec<u8>, Artifact)>,
}

/// What is fetched for a build ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Artifact {
    /// The separate debug file (`/buildid/ID/debuginfo`).
    DebugInfo,
    /// The file itself (`/buildid/ID/executable`), when the mapped one is gone.
    Executable,
}

impl Debuginfod {
    /// `urls` as in DEBUGINFOD_URLS: space-separated server base URLs.
    pub fn new(urls: &str, cache: PathBuf, budget: Duration) -> Option<Self> {
        let urls: Vec<String> = urls
            .split_whitespace()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        (!urls.is_empty()).then_some(Self {
            urls,
            cache,
            budget,
            failed: HashSet::new(),
        })
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Per-report deadline for downloads.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.budget
    }

    /// Downloads the debug file for `build_id` into the cache unless it failed before or
    /// the deadline has passed. Returns why it could not, if it could not.
    pub fn fetch(
        &mut self,
        build_id: &[u8],
        what: Artifact,
        deadline: Instant,
    ) -> Result<PathBuf, String> {
        use crate::sys::buildid;
        let hex = buildid::hex(build_id);
        let (dest, kind) = match what {
            Artifact::DebugInfo => (buildid::debug_path(&self.cache, build_id), "debuginfo"),
            Artifact::Executable => (
                buildid::executable_path(&self.cache, build_id),
                "executable",
            ),
        };
        let dest = dest.ok_or_else(|| format!("build ID {hex} is too short"))?;
        if dest.exists() {
            return Ok(dest);
        }
        if self.failed.contains(&(build_id.to_vec(), what)) {
            return Err("not on the debuginfod servers (asked before)".into());
        }
        let mut last = String::from("no server answered");
        for url in &self.urls {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("debuginfod: out of time for this report".into());
            }
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(left))
                .build()
                .into();
            match agent.get(format!("{url}/buildid/{hex}/{kind}")).call() {
                Ok(mut resp) => {
                    // Streamed to the file, never held in memory; at most MAX_BODY bytes.
                    let mut body = resp.body_mut().with_config().limit(MAX_BODY).reader();
                    match store(&dest, &mut body) {
                        Ok(()) => return Ok(dest),
                        Err(e) => last = format!("debuginfod {url}: {e}"),
                    }
                }
                Err(e) => last = format!("debuginfod {url}: {e}"),
            }
        }
        // Timeouts may be the server's bad moment: only remember definite misses.
        if !last.contains("imeout") && !last.contains("out of time") {
            if self.failed.len() >= MAX_FAILED {
                self.failed.clear();
            }
            self.failed.insert((build_id.to_vec(), what));
        }
        Err(last)
    }
}

/// Largest file accepted from a server.
const MAX_BODY: u64 = 2 << 30;
/// Definite misses remembered at most; past it they are asked again.
const MAX_FAILED: usize = 4096;

/// Writes a download to `<dest>.part` (created new: nothing that is there, a symlink
/// included, is followed or overwritten) and renames it into place.
fn store(dest: &Path, body: &mut impl std::io::Read) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dest.parent().unwrap_or(Path::new("/")))?;
    let tmp = dest.with_extension("part");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(&tmp)?;
    let r = std::io::copy(body, &mut f).and_then(|_| f.sync_data());
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return r;
    }
    std::fs::rename(&tmp, dest)
}

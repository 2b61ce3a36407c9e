//! `--output FILE`: one JSON object per line, appended; reopened after SIGHUP (logrotate
//! moves the file, then signals). A record is in the file whole or not at all.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
};

use super::Sink;
use crate::model::CrashReport;

/// Bumped on each SIGHUP; every file output reopens when it sees a new value.
static REOPEN_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Asks every file output to reopen its file (after the next report, or within a second).
pub fn request_reopen() {
    REOPEN_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The SIGHUP count so far: an output that sees it change has been asked to act.
pub fn reopen_generation() -> u64 {
    REOPEN_GENERATION.load(Ordering::SeqCst)
}

pub struct JsonFile {
    path: PathBuf,
    name: String,
    file: Option<File>,
    generation: u64,
}

impl JsonFile {
    /// Opens (creates) the file now, so a bad path is an error at start.
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = open_append(&path)?;
        Ok(Self {
            name: format!("{}", path.display()),
            path,
            file: Some(file),
            generation: REOPEN_GENERATION.load(Ordering::SeqCst),
        })
    }

    fn reopen_if_asked(&mut self) {
        let g = REOPEN_GENERATION.load(Ordering::SeqCst);
        if g == self.generation && self.file.is_some() {
            return;
        }
        self.generation = g;
        match open_append(&self.path) {
            Ok(f) => self.file = Some(f),
            Err(e) => {
                say!("crashtrace: cannot reopen {}: {e}", self.name);
                self.file = None;
            }
        }
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    // Reports hold what processes had in memory: readable by root only.
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

impl Sink for JsonFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    fn write(&mut self, report: &CrashReport) -> std::io::Result<()> {
        self.reopen_if_asked();
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("the file could not be reopened"));
        };
        let mut line = report.to_json_line();
        line.push('\n');
        let before = file.metadata()?.len();
        if let Err(e) = file.write_all(line.as_bytes()) {
            // A full disk may have taken part of the line: cut it off again, so a
            // reader never sees half a record (and the next one joined to it).
            let _ = file.set_len(before);
            return Err(std::io::Error::new(
                e.kind(),
                format!("{e}; the record was dropped whole"),
            ));
        }
        Ok(())
    }

    fn idle(&mut self) {
        self.reopen_if_asked();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(pid: u32) -> CrashReport {
        let mut r: CrashReport = serde_json::from_str(crate::report::text::tests::MINIMAL).unwrap();
        r.pid = pid;
        r
    }

    #[test]
    fn appends_whole_lines_and_reopens_after_a_rotation() {
        let dir = std::env::temp_dir().join(format!("ct-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("crashes.jsonl");
        let mut f = JsonFile::open(path.clone()).unwrap();
        f.write(&report(1)).unwrap();
        std::fs::rename(&path, dir.join("crashes.jsonl.1")).unwrap();
        // Until the reopen, reports still go to the moved file, as logrotate expects.
        f.write(&report(2)).unwrap();
        request_reopen();
        f.idle();
        f.write(&report(3)).unwrap();
        let pids = |p: &std::path::Path| -> Vec<u32> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<CrashReport>(l).unwrap().pid)
                .collect()
        };
        assert_eq!(pids(&dir.join("crashes.jsonl.1")), [1, 2]);
        assert_eq!(pids(&path), [3]);
        // A symlink planted in the file's place is not followed.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/null", &path).unwrap();
        assert!(JsonFile::open(path).is_err());
    }
}

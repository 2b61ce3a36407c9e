//! Standard output: the text report for a person, or one JSON object per line.

use std::io::Write as _;

use super::Sink;
use crate::{model::CrashReport, report::text};

pub struct Stdout {
    json: bool,
}

impl Stdout {
    pub fn new(json: bool) -> Self {
        Self { json }
    }
}

impl Sink for Stdout {
    fn name(&self) -> &str {
        if self.json { "stdout (JSON)" } else { "stdout" }
    }

    fn write(&mut self, report: &CrashReport) -> std::io::Result<()> {
        let text = if self.json {
            report.to_json_line() + "\n"
        } else {
            text::render(report) + "\n"
        };
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            // A closed stdout (`crashtrace | head`) ends the run, as it does for any
            // filter in a pipeline.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
            r => r,
        }
    }
}

//! Standard output: the text report for a person, or one JSON object per line.

use std::io::Write as _;

use super::Sink;
use crate::{model::CrashReport, report::text};

pub struct Stdout {
    json: bool,
    /// A write failed part-way (a full disk): the next report starts on a line of its
    /// own, so no reader takes the broken line and the next one for one record.
    broken_line: bool,
}

impl Stdout {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            broken_line: false,
        }
    }
}

impl Sink for Stdout {
    fn name(&self) -> &str {
        if self.json { "stdout (JSON)" } else { "stdout" }
    }

    fn kind(&self) -> &'static str {
        "stdout"
    }

    fn write(&mut self, report: &CrashReport) -> std::io::Result<()> {
        let mut text = if std::mem::take(&mut self.broken_line) {
            "\n".to_string()
        } else {
            String::new()
        };
        text += &if self.json {
            report.to_json_line()
        } else {
            text::render(report)
        };
        text.push('\n');
        let mut out = std::io::stdout().lock();
        let mut bytes = text.as_bytes();
        let r = loop {
            match out.write(bytes) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) if n == bytes.len() => break out.flush(),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if r.is_err() && bytes.len() < text.len() {
            self.broken_line = true;
        }
        match r {
            // A closed stdout (`crashtrace | head`) ends the run, as it does for any
            // filter in a pipeline.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
            r => r,
        }
    }
}

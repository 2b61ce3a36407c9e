//! The metrics endpoint's view of reports: each one counted by signal and kind, and
//! its latency observed.

use std::sync::Arc;

use super::Sink;
use crate::{metrics::Metrics, model::CrashReport};

pub struct Counting(pub Arc<Metrics>);

impl Sink for Counting {
    fn name(&self) -> &str {
        "metrics"
    }

    fn kind(&self) -> &'static str {
        "metrics"
    }

    fn write(&mut self, report: &CrashReport) -> std::io::Result<()> {
        self.0.observe_report(report);
        Ok(())
    }

    fn every_crash(&self) -> bool {
        true
    }
}

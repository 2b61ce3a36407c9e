//! What crashtrace says about itself: the filters at start, losses as they happen, the
//! counts at the end.

use crashtrace_common::Stat;

use super::workers::Analysis;
use crate::{capture::loader::Probes, cli::Args};

/// The closing lines: what was captured, lost and dropped, and with -v or trouble the
/// kernel side's counters and program costs.
pub fn closing(probes: &Probes, analysis: &Analysis, args: &Args) {
    if analysis.lost() > 0 {
        say!(
            "crashtrace: {} crashes not analysed (the analysis queue was full)",
            analysis.lost()
        );
    }
    say!(
        "crashtrace: detached; {} signals matched, {} captured, {} other threads captured, \
         {} lost (ring buffer full), {} reports dropped (outputs too slow), {} not written \
         (output errors)",
        probes.stat(Stat::Matched),
        probes.stat(Stat::Captured),
        probes.stat(Stat::ThreadsCaptured),
        probes.stat(Stat::RingFull),
        analysis.losses().queue_full(),
        analysis.losses().write_failed()
    );
    // The kernel side's other counters: said when something went wrong, or at -v.
    let (regs, exits, state, ooms, limited) = (
        probes.stat(Stat::RegsFailed),
        probes.stat(Stat::ExitsLost),
        probes.stat(Stat::StateFull),
        probes.stat(Stat::OomVictims),
        probes.stat(Stat::HandledLimited),
    );
    if args.verbose > 0 || regs + exits + state + limited > 0 {
        say!(
            "crashtrace: kernel side: {regs} captures without registers, {exits} exit records \
             lost, {state} crashes not followed to their exit (state map full), {ooms} OOM \
             victims, {limited} handled signals not captured (over {} a second per process)",
            crashtrace_common::HANDLED_PER_WINDOW
        );
    }
    if args.bpf_stats {
        for (name, runs, time) in probes.program_stats() {
            let mean = if runs > 0 {
                time.as_nanos() as f64 / runs as f64
            } else {
                0.0
            };
            say!(
                "crashtrace: program {name}: {runs} runs, {} ns in all, {mean:.0} ns per run",
                time.as_nanos()
            );
        }
    }
}

pub fn describe_filters(args: &Args) -> String {
    let mut parts = Vec::new();
    if !args.pids.is_empty() {
        let pids: Vec<String> = args.pids.iter().map(|p| p.to_string()).collect();
        parts.push(format!("pid {}", pids.join(",")));
    }
    if !args.comms.is_empty() {
        let names: Vec<String> = args
            .comms
            .iter()
            .map(|c| {
                if c.exact {
                    format!("={}", c.name)
                } else {
                    format!("{}*", c.name)
                }
            })
            .collect();
        parts.push(format!("processes named {}", names.join(",")));
    }
    if parts.is_empty() {
        "all processes".into()
    } else {
        parts.join(" and ")
    }
}

/// Says what was lost since the last tick: captures (the ring buffer was full) and
/// mapping records; `reported` holds the totals said so far.
pub fn new_losses(reported: &mut (u64, u64), now: (u64, u64)) {
    let (ring_full, maps_lost) = now;
    if ring_full > reported.0 {
        say!(
            "crashtrace: {} captures lost because the ring buffer was full \
             ({} in total; raise --ring-buffer-size)",
            ring_full - reported.0,
            ring_full
        );
    }
    if maps_lost > reported.1 {
        say!(
            "crashtrace: {} mapping records lost ({} in total): frames of processes \
             started then may be unnamed",
            maps_lost - reported.1,
            maps_lost
        );
    }
    *reported = now;
}

use super::*;
use crate::model::Frame;

fn report(pid: u32, host: &str, time: &str, top: &str, rank: Option<u32>) -> CrashReport {
    let mut r: CrashReport =
        serde_json::from_str(crate::report::text::tests::MINIMAL).expect("the minimal report");
    r.pid = pid;
    r.host = Some(host.into());
    r.time = time.into();
    r.frames[0].function = Some(top.into());
    r.frames[1].function = Some("main".into());
    if let Some(rank) = rank {
        r.job = Some(crate::model::JobReport {
            rank: Some(rank),
            ..Default::default()
        });
    }
    r
}

#[test]
fn signatures_counted_across_hosts_with_first_and_last_seen() {
    let reports = [
        report(1, "a", "2026-12-01T10:00:02.000Z", "crash_here", Some(1)),
        report(2, "b", "2026-12-01T10:00:01.000Z", "crash_here", Some(3)),
        report(3, "a", "2026-12-01T10:00:05.000Z", "other_bug", None),
        report(4, "c", "2026-12-01T10:00:09.000Z", "crash_here", Some(1)),
    ];
    let groups = group(&reports, &Rules::default());
    assert_eq!(groups.len(), 2);
    let g = &groups[0];
    assert_eq!(g.count, 3);
    assert_eq!(g.first_seen, "2026-12-01T10:00:01.000Z");
    assert_eq!(g.last_seen, "2026-12-01T10:00:09.000Z");
    assert_eq!(
        g.hosts.iter().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(g.ranks.iter().copied().collect::<Vec<_>>(), [1, 3]);
    assert_eq!(g.example, (1, Some("a".into())));
    assert_eq!(g.signature.frames[0], "crash_here");
    let t = table(&groups, 1, reports.len());
    assert!(
        t.starts_with("4 crashes, 2 signatures (the 1 most frequent below)\n"),
        "{t}"
    );
    assert!(t.contains("1,3"), "{t}");
    assert!(
        t.contains("SIGSEGV SEGV_MAPERR in crash_here < main"),
        "{t}"
    );
    assert!(!t.contains("other_bug"), "{t}");
}

#[test]
fn the_flame_graph_is_wide_where_crashes_are_many_and_escapes_names() {
    let mut reports = vec![
        report(1, "a", "t", "crash_here", None),
        report(2, "a", "t", "crash_here", None),
        report(3, "a", "t", "other<&>\u{1b}[2J", None),
    ];
    let unnamed = Frame {
        function: None,
        module: Some("/lib/libx.so".into()),
        module_offset: Some(0x10),
        ..reports[2].frames[1].clone()
    };
    reports[2].frames.push(unnamed);
    let svg = flamegraph(&reports);
    assert!(svg.starts_with("<?xml"));
    assert!(svg.contains("Crash stacks: 3 crashes"));
    assert!(
        svg.contains("<title>crash_here (2 crashes, 66.7%)</title>"),
        "{svg}"
    );
    assert!(
        svg.contains("<title>main (2 crashes, 66.7%)</title>"),
        "{svg}"
    );
    assert!(svg.contains("other&lt;&amp;&gt;\\x1b[2J"), "{svg}");
    assert!(svg.contains("libx.so+0x10"), "{svg}");
    assert!(!svg.contains('\u{1b}'));
}

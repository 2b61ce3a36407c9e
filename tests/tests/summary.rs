//! `crashtrace summary` on reports written by a real run, as if collected from two hosts,
//! and its flame graph rendered by a real browser (Debian's chromium, headless).

use std::process::Command;

use crashtrace_tests::{
    Crashtrace, Shared, crash_and_report, crashtrace_bin, reports_in_file, victim,
};

#[test]
fn summary_groups_many_hosts_reports_and_draws_a_flame_graph() {
    let dir = Shared::new("summary");
    let file = dir.0.join("host-a.jsonl");
    let ct = Crashtrace::start(&[
        "--comm",
        "=crash_nofp",
        "--output",
        file.to_str().unwrap(),
        "--stdout",
    ]);
    for _ in 0..3 {
        crash_and_report(&ct, &mut Command::new(victim("crash_nofp")), libc::SIGSEGV);
    }
    crash_and_report(
        &ct,
        Command::new(victim("crash_nofp")).arg("fpe"),
        libc::SIGFPE,
    );
    drop(ct);
    let reports = reports_in_file(&file);
    assert_eq!(reports.len(), 4);
    // The same crashes seen on another host, and a line that is no report.
    let other = dir.0.join("host-b.jsonl");
    let mut text = String::new();
    for r in &reports {
        let mut r = r.clone();
        r.host = Some("host-b".into());
        text.push_str(&serde_json::to_string(&r).unwrap());
        text.push('\n');
    }
    text.push_str("{\"not\": \"a report\"}\n");
    std::fs::write(&other, text).unwrap();

    let svg = dir.0.join("crashes.svg");
    let out = Command::new(crashtrace_bin())
        .arg("summary")
        .arg(&file)
        .arg(&other)
        .arg("--flamegraph")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "8 crashes, 2 signatures", "{stdout}");
    let id = reports[0].signature.as_ref().unwrap().id.clone();
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row[0], "6", "{stdout}");
    assert_eq!(row[1], id, "{stdout}");
    assert_eq!(row[4], "2", "two hosts: {stdout}");
    assert_eq!(
        lines[3].trim(),
        "SIGSEGV SEGV_MAPERR in crash_segv < level3 < level2"
    );
    assert!(lines[4].trim_start().starts_with("2 "), "{stdout}");
    assert!(
        stderr.contains("host-b.jsonl: 1 lines are not crash reports (the first, line 5:"),
        "{stderr}"
    );

    // A real browser draws it; its DOM has every function as a text element.
    let png = dir.0.join("crashes.png");
    let url = format!("file://{}", svg.display());
    let shot = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,400",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .expect("chromium (cargo xtask setup installs it)");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let image = std::fs::read(&png).unwrap();
    assert_eq!(&image[..8], b"\x89PNG\r\n\x1a\n");
    assert!(image.len() > 4000, "a drawn page, not a blank one");
    let dom = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    for f in [
        "crash_segv",
        "crash_fpe",
        "level3",
        "level2",
        "level1",
        "main",
    ] {
        assert!(dom.contains(&format!(">{f}</text>")), "{f} in {dom}");
    }
    assert!(
        dom.contains("<title>crash_segv (6 crashes, 75.0%)</title>"),
        "{dom}"
    );
    eprintln!(
        "flame graph: {} (screenshot {})",
        svg.display(),
        png.display()
    );
}

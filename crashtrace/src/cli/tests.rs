//! The command line as users type it.

use super::*;

fn parse(args: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(std::iter::once("crashtrace").chain(args.iter().copied()))
}

#[test]
fn defaults() {
    let a = parse(&[]).unwrap();
    assert!(a.pids.is_empty() && a.comms.is_empty() && !a.outputs.json);
    assert_eq!(a.signals, SignalSet::default_set());
    assert_eq!(
        a.signals.names(),
        [
            "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGSEGV", "SIGSYS"
        ]
    );
    assert_eq!(a.stack_size, DEFAULT_STACK_BYTES);
    assert_eq!(a.kills, fatal_by_default());
    assert!(a.kills.contains(libc::SIGKILL) && a.kills.contains(libc::SIGTERM));
    assert!(!a.kills.contains(libc::SIGCHLD) && !a.kills.contains(libc::SIGSTOP));
    assert_eq!(a.ring_buffer_size, 16 << 20);
}

#[test]
fn comm_prefix_and_exact() {
    let a = parse(&["--comm", "python", "-n", "=python3"]).unwrap();
    assert_eq!(
        a.comms,
        [
            CommFilter {
                name: "python".into(),
                exact: false
            },
            CommFilter {
                name: "python3".into(),
                exact: true
            }
        ]
    );
    // The kernel-side pattern decides as the filter does (names as the kernel pads them).
    let padded = |n: &str| {
        let mut b = [0u8; 16];
        b[..n.len()].copy_from_slice(n.as_bytes());
        [0, 1].map(|i| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()))
    };
    for name in [
        "python",
        "python3",
        "python3.11",
        "pytho",
        "py",
        "ruby",
        "python3x",
    ] {
        for f in &a.comms {
            assert_eq!(
                f.to_pattern().matches(padded(name)),
                f.matches(name),
                "{f:?} on {name}"
            );
        }
    }
    assert!(parse(&["--comm", "a-name-way-too-long"]).is_err());
    assert!(parse(&["--comm", "="]).is_err());
}

#[test]
fn signals_and_sizes() {
    let a = parse(&["--signals", "segv,6,SIGBUS", "--stack-size", "32K", "-j"]).unwrap();
    assert_eq!(a.signals.names(), ["SIGABRT", "SIGBUS", "SIGSEGV"]);
    assert_eq!(a.stack_size, 32 * 1024);
    assert!(a.outputs.json);
    assert_eq!(parse(&["--stack-size", "5000"]).unwrap().stack_size, 8192);
    assert!(parse(&["--stack-size", "1M"]).is_err());
    assert!(parse(&["--signals", "SEGV,NOPE"]).is_err());
    // signal(7)'s Stop and Ign signals end no process: refused in both lists (the
    // programs drop them without reading their configuration).
    for sig in [
        "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "WINCH",
    ] {
        assert!(parse(&["--signals", sig]).is_err(), "{sig}");
        assert!(
            parse(&["--kills", &format!("TERM,SIG{sig}")]).is_err(),
            "{sig}"
        );
    }
    let never = crashtrace_common::NEVER_WANTED_SIGNALS;
    for sig in [libc::SIGCHLD, libc::SIGCONT, libc::SIGSTOP, libc::SIGTSTP] {
        assert_ne!(never & (1 << sig), 0, "{sig}");
    }
    for sig in [libc::SIGTTIN, libc::SIGTTOU, libc::SIGURG, libc::SIGWINCH] {
        assert_ne!(never & (1 << sig), 0, "{sig}");
    }
    assert_eq!(never.count_ones(), 8);
    assert_eq!(parse(&["--kills", "none"]).unwrap().kills, SignalSet(0));
    assert_eq!(
        parse(&["-k", "KILL,TERM"]).unwrap().kills.names(),
        ["SIGKILL", "SIGTERM"]
    );
    assert!(parse(&["--ring-buffer-size", "3M"]).is_err());
    assert_eq!(
        parse(&["--ring-buffer-size", "64M"])
            .unwrap()
            .ring_buffer_size,
        64 << 20
    );
}

#[test]
fn run_mode() {
    let a = parse(&["--json", "--", "python3", "-c", "print(1)", "--json"]).unwrap();
    assert!(a.outputs.json);
    assert_eq!(a.command, ["python3", "-c", "print(1)", "--json"]);
    assert!(parse(&[]).unwrap().command.is_empty());
}

#[test]
fn filter_limits() {
    let many: Vec<String> = (1..=9).flat_map(|i| ["-p".into(), i.to_string()]).collect();
    let a = Args::try_parse_from(std::iter::once("crashtrace".to_string()).chain(many)).unwrap();
    assert!(a.validate().is_err());
    assert!(parse(&["-p", "0"]).unwrap().validate().is_err());
    assert!(parse(&["-p", "1", "-p", "2"]).unwrap().validate().is_ok());
}

#[test]
fn help_explains_thread_names() {
    let help = <Args as clap::CommandFactory>::command()
        .render_long_help()
        .to_string();
    assert!(help.contains("PROCESS AND THREAD NAMES"));
    assert!(help.contains("ATTRIBUTION"));
    assert!(help.contains("EXAMPLES"));
}

#[test]
fn env_names_never_match_the_whole_environment() {
    let parse = |v: &str| Args::try_parse_from(["crashtrace", "--env", v]).map(|a| a.env);
    assert_eq!(parse("MY_TAG").unwrap(), ["MY_TAG"]);
    assert_eq!(parse("MY_*").unwrap(), ["MY_*"]);
    for bad in ["*", "A*", "", "BAD-NAME", "A=B", "X Y"] {
        assert!(parse(bad).is_err(), "{bad:?} accepted");
    }
}

use clap::Parser as _;
use crashtrace::{
    cli::{Args, args_with_config},
    monitor, say,
};

/// `crashtrace NAME ARGS...`: a command of its own, which exits when done: 2 on an
/// error, else what `run` says.
fn subcommand<A: clap::Parser>(name: &str, run: fn(A) -> anyhow::Result<i32>) {
    if std::env::args_os().nth(1).is_some_and(|a| a == name) {
        let args = A::parse_from(std::env::args_os().skip(1));
        match run(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                say!("crashtrace {name}: {e:#}");
                std::process::exit(2);
            }
        }
    }
}

fn main() {
    // (A command with one of these names runs under crashtrace as `crashtrace -- NAME`.)
    // `summary` reads reports back; it neither loads eBPF nor needs root.
    subcommand("summary", crashtrace::summary::run);
    // `dump PID...` reads live processes once.
    subcommand("dump", crashtrace::dump::run);
    let argv = args_with_config(std::env::args_os().collect()).unwrap_or_else(|e| {
        say!("crashtrace: configuration: {e}");
        std::process::exit(2);
    });
    let args = Args::parse_from(&argv);
    crashtrace::status::set_json(args.log_format == "json");
    if let Err(e) = args.validate() {
        say!("crashtrace: {e}");
        std::process::exit(2);
    }
    if args.check_config {
        if let Err(e) = monitor::check(&args) {
            say!("crashtrace: {e:#}");
            std::process::exit(2);
        }
        // The effective options, file first: what a run would use.
        let shown: Vec<String> = argv
            .iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        println!("crashtrace: configuration is valid: {}", shown.join(" "));
        std::process::exit(0);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(
        match args.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        },
    ))
    .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(monitor::run(args)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            say!("crashtrace: {e:#}");
            std::process::exit(1);
        }
    }
}

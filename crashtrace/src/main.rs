use clap::Parser as _;
use crashtrace::{
    cli::{Args, args_with_config},
    monitor, say,
};

fn main() {
    // `crashtrace summary ...` reads reports back; it neither loads eBPF nor needs root.
    // (A command named `summary` runs under crashtrace as `crashtrace -- summary`.)
    if std::env::args_os().nth(1).is_some_and(|a| a == "summary") {
        let args = crashtrace::summary::SummaryArgs::parse_from(std::env::args_os().skip(1));
        match crashtrace::summary::run(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                say!("crashtrace: {e:#}");
                std::process::exit(2);
            }
        }
    }
    // `crashtrace dump PID...` reads live processes once and exits.
    if std::env::args_os().nth(1).is_some_and(|a| a == "dump") {
        let args = crashtrace::dump::DumpArgs::parse_from(std::env::args_os().skip(1));
        match crashtrace::dump::run(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                say!("crashtrace dump: {e:#}");
                std::process::exit(2);
            }
        }
    }
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

use clap::Parser as _;
use crashtrace::{cli::Args, monitor, say};

fn main() {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        say!("crashtrace: {e}");
        std::process::exit(2);
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

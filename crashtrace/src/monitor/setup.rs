//! What the loop needs before it starts: the kernel-side configuration from the
//! arguments and BTF, the symbolizer and the outputs as configured, the descriptor
//! limit for pins.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use crashtrace_common::Config;

use super::workers::Grouping;
use crate::{
    capture::{btf, features},
    cli::{Args, Outputs},
    metrics::Metrics,
    report::signature::Rules,
    sinks::{self, Sink, loops::LoopGuard},
    symbolize::{Symbolizer, debuginfod::Debuginfod},
};

/// The outputs the options name; a file that cannot be opened is an error now.
pub fn outputs(o: &Outputs, metrics: Option<Arc<Metrics>>) -> anyhow::Result<Vec<Box<dyn Sink>>> {
    let mut out: Vec<Box<dyn Sink>> = Vec::new();
    if o.to_stdout() {
        out.push(Box::new(sinks::stdout::Stdout::new(o.json)));
    }
    if let Some(path) = &o.output {
        let f = sinks::file::JsonFile::open(path.clone())
            .with_context(|| format!("opening --output {}", path.display()))?;
        out.push(Box::new(f));
    }
    if o.journal {
        let j = sinks::journal::Journal::new(&o.journal_socket)
            .with_context(|| "--journal (is systemd-journald running?)".to_string())?;
        out.push(Box::new(j));
    }
    if o.otlp_enabled() {
        let config = sinks::otlp::config::OtlpConfig::resolve(o.otlp_endpoint.as_deref(), |k| {
            std::env::var(k).ok()
        });
        if !config.url.starts_with("http://") && !config.url.starts_with("https://") {
            anyhow::bail!(
                "OTLP endpoint {}: not an http:// or https:// URL",
                config.url
            );
        }
        let limits = sinks::otlp::BufferLimits {
            records: o.otlp_buffer.max(1),
            bytes: 64 << 20,
        };
        out.push(Box::new(sinks::otlp::Otlp::new(config, limits)));
    }
    if let Some(m) = metrics {
        out.push(Box::new(sinks::metrics::Counting(m)));
    }
    if let Some(path) = &o.pprof {
        let p = sinks::pprof::PprofFile::create(path.clone())
            .with_context(|| format!("writing --pprof {}", path.display()))?;
        out.push(Box::new(p));
    }
    Ok(out)
}

/// The symbolizer, with debuginfod when asked for: its cache is one more debug directory.
/// Plain copies of compressed debug files go beside it (see `symbolize::plain`).
pub fn make_symbolizer(args: &Args) -> Symbolizer {
    let cache = std::env::var_os("CRASHTRACE_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            std::path::PathBuf::from(home).join(".cache/crashtrace")
        });
    let debuginfod = if args.debuginfod {
        let d = Debuginfod::new(
            args.debuginfod_url.as_deref().unwrap_or(""),
            cache.join("debuginfod"),
            Duration::from_secs_f64(args.debuginfod_timeout.max(0.0)),
        );
        if d.is_none() {
            say!("crashtrace: --debuginfod given but no server URL (DEBUGINFOD_URLS)");
        }
        d
    } else {
        None
    };
    Symbolizer::new(&args.debug_dirs, debuginfod).with_plain_dir(cache.join("plain"))
}

/// File pins need descriptors: take the hard limit, as perf and debuggers do.
pub fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// The programs' configuration, and what reports lack on this kernel (see `features`).
pub fn build_config(args: &Args) -> Result<(Config, Option<String>)> {
    let btf = btf::load_vmlinux()?;
    let degraded = features::check(&btf, &[features::CAPTURE], features::EXTRAS)?;
    let mut cfg = Config::empty();
    cfg.extras = degraded.is_none() as u32;
    cfg.signal_mask = args.signals.0;
    cfg.kill_mask = args.kills.0;
    cfg.self_pid = std::process::id();
    cfg.stack_bytes = args.stack_size;
    cfg.pid_count = args.pids.len() as u32;
    for (slot, pid) in cfg.pids.iter_mut().zip(&args.pids) {
        *slot = *pid;
    }
    cfg.comm_count = args.comms.len() as u32;
    for (slot, c) in cfg.comms.iter_mut().zip(&args.comms) {
        *slot = c.to_pattern();
    }
    cfg.offsets = btf::kernel_offsets(&btf)?;
    Ok((cfg, degraded))
}

/// The stop signals seen and not yet acted on: a bit per signal number.
static STOP_REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    // Async-signal-safe: one atomic operation.
    STOP_REQUESTS.fetch_or(1 << sig, std::sync::atomic::Ordering::SeqCst);
}

/// SIGINT and SIGTERM (stop) and SIGHUP (reopen the output files) set a flag the loop
/// reads at every tick: a signal that comes while crashtrace is stopped or busy is never
/// lost with a readiness event.
pub fn install_stop_handlers() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction with a handler that only does an atomic store.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
    }
    Ok(())
}

/// Whether `sig` came since the last call for it.
pub fn take_stop_request(sig: libc::c_int) -> bool {
    STOP_REQUESTS.fetch_and(!(1 << sig), std::sync::atomic::Ordering::SeqCst) & (1 << sig) != 0
}

/// The signature rules (the shipped ones, or --signature-rules) and the crash-loop limit.
pub fn grouping(o: &Outputs) -> anyhow::Result<Grouping> {
    let rules = match &o.signature_rules {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the signature rules {}", path.display()))?;
            Rules::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("signature rules {}: {e}", path.display()))?
        }
        None => Rules::default(),
    };
    Ok(Grouping {
        rules,
        loops: LoopGuard::new(o.loop_reports, o.loop_window),
    })
}

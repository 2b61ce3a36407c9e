//! What the loop needs before it starts: the kernel-side configuration from the
//! arguments and BTF, the symbolizer as configured, the descriptor limit for pins.

use std::time::Duration;

use anyhow::Result;
use crashtrace_common::Config;

use crate::{
    capture::btf,
    cli::Args,
    symbolize::{Symbolizer, debuginfod::Debuginfod},
};

/// The symbolizer, with debuginfod when asked for: its cache is one more debug directory.
pub fn make_symbolizer(args: &Args) -> Symbolizer {
    let debuginfod = if args.debuginfod {
        let cache = std::env::var_os("CRASHTRACE_CACHE_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                std::path::PathBuf::from(home).join(".cache/crashtrace")
            })
            .join("debuginfod");
        let d = Debuginfod::new(
            args.debuginfod_url.as_deref().unwrap_or(""),
            cache,
            Duration::from_secs_f64(args.debuginfod_timeout.max(0.0)),
        );
        if d.is_none() {
            eprintln!("crashtrace: --debuginfod given but no server URL (DEBUGINFOD_URLS)");
        }
        d
    } else {
        None
    };
    Symbolizer::new(&args.debug_dirs, debuginfod)
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

pub fn build_config(args: &Args) -> Result<Config> {
    let btf = btf::load_vmlinux()?;
    let mut cfg = Config::empty();
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
    Ok(cfg)
}

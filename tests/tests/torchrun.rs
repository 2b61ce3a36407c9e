//! A real multi-rank job: torchrun's elastic agent over gloo, one rank faulting in a
//! training step. Each rank's report says which rank of which job it was, and the rank
//! the agent killed names the one that failed first (torchrun's own "Root Cause" picks
//! it by one-second timestamps).

use std::{collections::HashMap, process::Command};

use crashtrace_tests::{CrashReport, Crashtrace, Victim, source, torch_python};

/// Python function names of the crashing thread's traceback, innermost first.
fn python_functions(r: &CrashReport) -> Vec<String> {
    let py = r.python.as_ref().expect("a Python traceback");
    let t = py
        .threads
        .iter()
        .find(|t| t.crashing)
        .unwrap_or(&py.threads[0]);
    t.frames.iter().map(|f| f.function.clone()).collect()
}

#[test]
fn torchrun_rank_fault_and_the_agents_kill_of_the_other_rank() {
    let torchrun = torch_python().with_file_name("torchrun");
    assert!(torchrun.exists(), "{} is missing", torchrun.display());
    let ct = Crashtrace::start(&["--comm", "python"]);
    let mut job = Victim::spawn(
        Command::new(&torchrun)
            .args(["--standalone", "--nproc-per-node=2"])
            .arg(source("torch_ranks.py")),
    );
    let lines = job.lines();
    let mut pids = HashMap::new();
    for _ in 0..2 {
        let l = lines.next_line("a rank's pid line");
        let mut w = l.split_whitespace();
        let (Some("rank"), Some(rank), Some("pid"), Some(pid)) =
            (w.next(), w.next(), w.next(), w.next())
        else {
            panic!("not a rank line: {l:?}");
        };
        pids.insert(rank.parse::<u32>().unwrap(), pid.parse::<u32>().unwrap());
    }
    let st = job.wait_exit();
    assert!(!st.success(), "torchrun reports the failed job: {st}");

    let faulted = ct.report_for(pids[&1]);
    assert_eq!(faulted.signal.name, "SIGSEGV");
    assert!(!faulted.signal.external);
    let j1 = faulted.job.as_ref().expect("rank 1's job");
    assert_eq!(
        (j1.rank, j1.world_size, j1.local_rank),
        (Some(1), Some(2), Some(1))
    );
    let run = j1.run_id.clone().expect("torchrun's run id");
    assert!(!run.is_empty());
    assert_eq!(
        j1.after_failure_of, None,
        "the first failure follows nothing"
    );
    let f1 = python_functions(&faulted);
    assert!(f1.iter().any(|f| f == "train_step"), "{f1:?}");
    // The CUDA libraries PyTorch loaded, with the versions pip installed.
    let gpu = faulted.gpu.as_ref().expect("PyTorch's CUDA libraries");
    let nccl = gpu
        .libraries
        .iter()
        .find(|l| l.name == "NCCL")
        .expect("NCCL among the libraries");
    let site = nccl.path.split("/nvidia/").next().unwrap();
    let dist = std::fs::read_dir(site)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("nvidia_nccl") && n.ends_with(".dist-info"))
        .expect("NCCL's pip package");
    let want = dist
        .trim_end_matches(".dist-info")
        .rsplit('-')
        .next()
        .unwrap();
    assert_eq!(nccl.version.as_deref(), Some(want), "{:?}", gpu.libraries);
    assert!(gpu.libraries.iter().any(|l| l.name == "CUDA runtime"));

    let killed = ct.report_for(pids[&0]);
    assert_eq!(killed.signal.name, "SIGTERM");
    assert!(killed.signal.external, "{:?}", killed.signal);
    // The elastic agent: torchrun's own process, the rank's parent.
    assert_eq!(
        killed.signal.sender_pid,
        Some(job.pid()),
        "{:?}",
        killed.signal
    );
    assert_eq!(killed.parent_pid, job.pid());
    let j0 = killed.job.as_ref().expect("rank 0's job");
    assert_eq!((j0.rank, j0.world_size), (Some(0), Some(2)));
    assert_eq!(j0.run_id.as_deref(), Some(run.as_str()));
    let first = j0
        .after_failure_of
        .as_ref()
        .expect("the rank that failed first");
    assert_eq!((first.pid, first.rank), (pids[&1], Some(1)));
    assert_eq!(first.signal, "SIGSEGV");
    assert!(first.before_ms > 0.0, "{first:?}");
    // gloo fails rank 0's all_reduce as soon as rank 1's connection closes ("Connection
    // closed by peer"): the agent's SIGTERM finds it on its way out, past its Python code.
    assert!(!killed.frames.is_empty(), "rank 0's native stack");
}

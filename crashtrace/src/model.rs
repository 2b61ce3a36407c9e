//! The report model: one value per crash, filled by the stages (symbolize gives frames,
//! python tracebacks, report the rest) and read by every sink, so text and JSON never
//! disagree. It deserializes too: tests and tools read reports back as these types.

use serde::{Deserialize, Serialize};

/// A source location.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub file: String,
    pub line: Option<u32>,
    pub column: Option<u16>,
}

/// The version of the report's JSON form (`docs/schema.json`): raised when a field
/// changes meaning or goes away; new fields may come without it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CrashReport {
    pub schema_version: u32,
    /// Wall-clock time of the report, RFC 3339.
    pub time: String,
    /// The host crashtrace ran on.
    #[serde(default)]
    pub host: Option<String>,
    pub pid: u32,
    pub tid: u32,
    pub process_name: String,
    pub thread_name: String,
    /// The ids inside the process's own pid namespace, where it has one (a container).
    pub namespace_pid: Option<u32>,
    pub namespace_tid: Option<u32>,
    /// Its cgroup (v2 path) and the container id found in it.
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    /// What ran the container (`containerd`, `cri-o`, `docker`, `podman`), from its
    /// cgroup's name; and the Kubernetes pod it belongs to.
    #[serde(default)]
    pub container_runtime: Option<String>,
    #[serde(default)]
    pub pod_uid: Option<String>,
    /// Which job and rank the process was (its allowlisted environment and cgroup).
    #[serde(default)]
    pub job: Option<JobReport>,
    /// glibc's last fatal message (`assert`, `malloc` checks), read at the abort.
    #[serde(default)]
    pub abort_message: Option<String>,
    /// What the crashing thread is to the runtime (`nccl-watchdog`, `autograd`, ...).
    #[serde(default)]
    pub thread_role: Option<String>,
    /// What groups this crash with the same crash elsewhere (see docs/signature-rules.toml).
    #[serde(default)]
    pub signature: Option<Signature>,
    /// The GPUs it had open, the CUDA libraries it had loaded, and the driver's Xid
    /// errors for it; None for a process that touched no GPU.
    #[serde(default)]
    pub gpu: Option<GpuReport>,
    /// The executable's path where known, else its base name from the kernel.
    pub executable: Option<String>,
    pub parent_pid: u32,
    pub parent_name: String,
    pub signal: SignalReport,
    /// The OOM killer chose this process: its memory then, and the limit that applied.
    pub oom: Option<OomReport>,
    /// A handler ran and the process then died or exited: the stack is the original fault's.
    pub handler: Option<HandlerReport>,
    pub registers: Option<Registers>,
    /// The faulting instruction (AT&T syntax, as gdb's `x/i $pc`), where readable.
    pub instruction: Option<String>,
    pub frames: Vec<Frame>,
    pub unwind: UnwindReport,
    /// The other threads, each in its own context at the group exit.
    pub threads: Vec<ThreadReport>,
    /// Threads not captured: over the per-crash limit, or lost to a full ring buffer.
    pub threads_not_captured: u32,
    /// How the process ended, with its resource use; None if its exit was not seen.
    pub outcome: Option<Outcome>,
    /// The Python traceback of each thread that ran Python, the crashing one first.
    pub python: Option<PythonReport>,
    /// Something the report lacks, and why (e.g. the capture was lost).
    pub notes: Vec<String>,
    /// From the signal reaching the thread (kernel clock) to this report, in milliseconds.
    pub latency_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OomReport {
    /// The process whose allocation could not be satisfied.
    pub trigger_pid: u32,
    pub trigger_name: String,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub swap_kb: u64,
    /// The victim's memory cgroup (v1 or v2), its limit and usage when the victim was
    /// chosen; no limit means the whole machine ran out.
    pub memory_cgroup: Option<String>,
    pub memory_cgroup_limit_kb: Option<u64>,
    pub memory_cgroup_usage_kb: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PythonReport {
    pub version: String,
    pub threads: Vec<PyThreadReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PyThreadReport {
    /// CPython's thread id (pthread_self), as faulthandler prints it.
    pub thread_id: String,
    /// The thread id inside the process's pid namespace (3.11+).
    pub native_id: Option<u32>,
    pub crashing: bool,
    /// The OS thread's name, where its native stack was captured too.
    pub name: Option<String>,
    /// Whether it held the GIL (its last holder); None where the version keeps the GIL
    /// per interpreter and crashtrace does not read it.
    pub gil: Option<bool>,
    /// The stack was deeper than what was copied.
    pub truncated: bool,
    /// Innermost first.
    pub frames: Vec<PyFrameReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PyFrameReport {
    pub function: String,
    pub file: String,
    pub line: Option<i32>,
    /// The first Python frame of an eval-loop activation (3.11: is_entry).
    pub entry: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThreadReport {
    pub tid: u32,
    pub name: String,
    /// What the thread is to the runtime, from its name (`main`, `autograd`, ...).
    #[serde(default)]
    pub role: Option<String>,
    pub frames: Vec<Frame>,
    pub unwind: UnwindReport,
    /// In a dump: what the thread was doing, and how far its stack can be trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ThreadState>,
}

/// A live thread at the moment it was read (`crashtrace dump`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadState {
    /// `sleeping`, `disk-sleep`, `stopped`, `traced`, `runnable` or `running`.
    pub state: String,
    /// The system call it is in (`futex`, `accept4`, ...; `syscall N` for others), when
    /// it is in one.
    pub syscall: Option<String>,
    /// `consistent` (blocked: registers and stack stay put while read), `preempted`
    /// (waiting for a CPU: exact unless it ran during the copy) or `may-tear` (on a CPU:
    /// registers from its last kernel entry, stack changing under the copy).
    pub consistency: String,
}

/// Who the process was in a distributed job: torchrun's and Slurm's variables, and the
/// job's first failure when this process was killed after it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    pub rank: Option<u32>,
    pub local_rank: Option<u32>,
    pub world_size: Option<u32>,
    pub group_rank: Option<u32>,
    /// `TORCHELASTIC_RUN_ID`, else the Slurm job id: what groups the ranks of one run.
    pub run_id: Option<String>,
    pub role_name: Option<String>,
    pub slurm_job_id: Option<String>,
    pub slurm_step_id: Option<String>,
    /// `CUDA_VISIBLE_DEVICES` (else `NVIDIA_VISIBLE_DEVICES`).
    pub visible_devices: Option<String>,
    /// Every allowlisted variable found, by name.
    pub environment: std::collections::BTreeMap<String, String>,
    /// Bytes of the environment block that could not be read (0: all of it was).
    pub environment_unread_bytes: u64,
    /// For a process killed by another: the job's earlier fault, which the kill followed.
    pub after_failure_of: Option<EarlierFailure>,
}

/// The same crash on any run, host or install path has the same signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// 16 hex digits: the SHA-256 of the parts below, one per line.
    pub id: String,
    /// How it died: `SIGSEGV SEGV_MAPERR`, `SIGABRT: assertion `x' failed`, `oom`,
    /// `killed by SIGTERM`.
    pub cause: String,
    /// The first meaningful native frames, normalised.
    pub frames: Vec<String>,
    /// The innermost Python frame of the user's code, `file.py:function`.
    pub python: Option<String>,
}

/// What a crashing process had to do with GPUs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    /// NVIDIA devices open at the crash (`/dev/nvidia0`, `/dev/nvidiactl`, ...).
    pub devices: Vec<String>,
    /// More descriptors were open than were looked at: devices may be missing.
    pub devices_incomplete: bool,
    /// CUDA, cuDNN, NCCL and driver libraries mapped, with their versions where known.
    pub libraries: Vec<GpuLibrary>,
    /// The NVIDIA kernel module's version, from the host.
    pub driver_version: Option<String>,
    /// NVRM Xid lines of the kernel log for this process, around the crash.
    pub xid: Vec<XidEvent>,
    /// Whether CUDA was told to dump core on a GPU exception
    /// (`CUDA_ENABLE_COREDUMP_ON_EXCEPTION`); None where the environment was not read.
    pub cuda_coredump: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuLibrary {
    /// `CUDA runtime`, `cuDNN`, `NCCL`, `cuBLAS`, `CUDA driver`.
    pub name: String,
    pub version: Option<String>,
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct XidEvent {
    pub code: u32,
    /// The GPU's PCI address, as the driver names it.
    pub pci: String,
    pub pid: Option<u32>,
    /// The whole kernel log line.
    pub message: String,
    /// When it was logged relative to the fatal signal, in seconds (negative: before).
    pub seconds_after_signal: f64,
}

/// Another process of the same job that failed first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlierFailure {
    pub pid: u32,
    pub rank: Option<u32>,
    /// The signal it died of, `SIGSEGV`.
    pub signal: String,
    /// How long before this process's fatal signal it failed, in milliseconds.
    pub before_ms: f64,
}

/// What `/usr/bin/time -v` would print for the process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// `killed by SIGSEGV (core dumped)`, `exited with status 3`, ...
    pub status: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
    pub wall_seconds: f64,
    pub user_seconds: f64,
    pub system_seconds: f64,
    pub max_rss_kb: u64,
    pub minor_faults: u64,
    pub major_faults: u64,
    pub voluntary_context_switches: u64,
    pub involuntary_context_switches: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignalReport {
    pub number: i32,
    pub name: String,
    pub code: i32,
    pub code_name: Option<String>,
    pub code_description: Option<String>,
    pub fault_address: Option<u64>,
    /// Sender of a signal sent with kill/tgkill/sigqueue.
    pub sender_pid: Option<u32>,
    pub sender_uid: Option<u32>,
    pub sender_name: Option<String>,
    /// What the fault address hit: a mapping, nothing, NULL, the guard below a stack.
    pub fault_mapping: Option<String>,
    /// Why a SIGBUS happened, in one line (a truncated file, a full /dev/shm, a hardware
    /// memory error).
    #[serde(default)]
    pub cause: Option<String>,
    /// Sent by another process (a kill), as opposed to a fault or the process itself.
    pub external: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandlerReport {
    pub address: u64,
    /// The fatal signal once the handler had run (e.g. "SIGSEGV SI_TKILL" from raise()).
    pub reraised_with: Option<String>,
    pub ended_by: HandlerEnd,
}

/// How a process ended after its handler of a crash signal ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandlerEnd {
    /// The same signal again with the default action (faulthandler, PyTorch's workers).
    Reraise,
    /// Another fatal signal from the faulting thread (a handler that calls abort()).
    OtherSignal,
    /// No fatal signal: the process exited with a failure status (Go's runtime exits
    /// with 2; a crash reporter's `_exit`). The outcome says the status.
    Exit,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registers {
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub eflags: u64,
}

impl From<&crashtrace_common::UserRegs> for Registers {
    fn from(r: &crashtrace_common::UserRegs) -> Self {
        Self {
            rip: r.rip,
            rsp: r.rsp,
            rbp: r.rbp,
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            eflags: r.eflags,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Frame {
    pub index: usize,
    pub address: u64,
    /// The file the address belongs to (`[vdso]`, `//anon` for memory without a file).
    pub module: Option<String>,
    /// Offset of the looked-up address within the module file.
    pub module_offset: Option<u64>,
    pub build_id: Option<String>,
    /// The function the address is in (the one with a symbol: inlined functions are
    /// listed in `inlined`), and the address's offset into it.
    pub function: Option<String>,
    pub function_offset: Option<u64>,
    /// The source line in `function`: where the address is, or, when functions are
    /// inlined here, where `function` calls the outermost of them.
    pub location: Option<Location>,
    /// Functions inlined at this address, innermost first (gdb's order): the first is the
    /// one the address is in, with the address's own line; each next one calls the one
    /// before it, at its own `location`; `function` calls the last.
    pub inlined: Vec<InlinedFrame>,
    /// Why the frame has no name, where it has none.
    pub unnamed_reason: Option<String>,
    /// Set on the first frame after a part of the stack that was not copied.
    pub gap_before: Option<String>,
    /// For CPython's eval loop: the Python frames this activation was running,
    /// innermost first.
    pub python: Vec<PyFrameReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InlinedFrame {
    pub function: String,
    /// The line in this function: the address's line for the innermost, else where it
    /// calls the next inner one.
    pub location: Option<Location>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnwindReport {
    pub method: String,
    pub stack_bytes: usize,
    pub stack_truncated: bool,
    pub stop_reason: String,
}

impl CrashReport {
    /// `fault` (a crash signal), `kill` (a fatal signal another process sent) or `oom`:
    /// the kind the outputs group crashes by.
    pub fn kind(&self) -> &'static str {
        if self.oom.is_some() {
            "oom"
        } else if self.signal.external {
            "kill"
        } else {
            "fault"
        }
    }

    /// Who crashed, as name and value pairs every structured output carries under its
    /// own prefix (OTLP `crashtrace.*`, journald `CRASHTRACE_*`).
    pub fn attribution(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                out.push((k, v));
            }
        };
        if let Some(j) = &self.job {
            put("rank", j.rank.map(|r| r.to_string()));
            put("local_rank", j.local_rank.map(|r| r.to_string()));
            put("world_size", j.world_size.map(|r| r.to_string()));
            put("run_id", j.run_id.clone());
            put("slurm_job_id", j.slurm_job_id.clone());
            put("slurm_step_id", j.slurm_step_id.clone());
            put("visible_devices", j.visible_devices.clone());
            put(
                "first_failure_pid",
                j.after_failure_of.as_ref().map(|e| e.pid.to_string()),
            );
        }
        put("signature", self.signature.as_ref().map(|s| s.id.clone()));
        put("pod_uid", self.pod_uid.clone());
        put("container_runtime", self.container_runtime.clone());
        put("thread_role", self.thread_role.clone());
        put("abort_message", self.abort_message.clone());
        if let Some(g) = &self.gpu {
            put(
                "gpu_devices",
                (!g.devices.is_empty()).then(|| g.devices.join(",")),
            );
            put(
                "xid",
                (!g.xid.is_empty()).then(|| {
                    let codes: Vec<String> = g.xid.iter().map(|x| x.code.to_string()).collect();
                    codes.join(",")
                }),
            );
        }
        out
    }

    /// The innermost named function of the crashing thread.
    pub fn top_function(&self) -> Option<&str> {
        self.frames.iter().find_map(|f| f.function.as_deref())
    }

    /// One JSON object, with every character a terminal or a log viewer would act on
    /// escaped (serde_json leaves C1 controls and bidi overrides raw).
    pub fn to_json_line(&self) -> String {
        crate::sys::escape::json(serde_json::to_string(self).expect("report serializes"))
    }
}

//! A copy of the report with every string made safe for a terminal (see `sys::escape`):
//! names, paths, symbols, Python strings and notes all come, in part, from the traced
//! process. Walked field by field so that a new field is a compile-time decision here.

use crate::{
    model::{CrashReport, Frame, Location, PyFrameReport, PythonReport, ThreadReport},
    sys::escape::text,
};

fn opt(s: &mut Option<String>) {
    if let Some(v) = s {
        *v = text(v);
    }
}

fn one(s: &mut String) {
    *s = text(s);
}

fn location(l: &mut Option<Location>) {
    if let Some(l) = l {
        one(&mut l.file);
    }
}

fn python(p: &mut [PyFrameReport]) {
    for f in p {
        one(&mut f.function);
        one(&mut f.file);
    }
}

fn frames(frames: &mut [Frame]) {
    for f in frames {
        let Frame {
            index: _,
            address: _,
            module,
            module_offset: _,
            build_id,
            function,
            function_offset: _,
            location: loc,
            inlined,
            unnamed_reason,
            gap_before,
            python: py,
        } = f;
        opt(module);
        opt(build_id);
        opt(function);
        location(loc);
        for i in inlined {
            one(&mut i.function);
            location(&mut i.location);
        }
        opt(unnamed_reason);
        opt(gap_before);
        python(py);
    }
}

pub fn neutral(r: &CrashReport) -> CrashReport {
    let mut r = r.clone();
    let CrashReport {
        schema_version: _,
        time,
        host,
        pid: _,
        tid: _,
        process_name,
        thread_name,
        namespace_pid: _,
        namespace_tid: _,
        cgroup,
        container_id,
        container_runtime,
        pod_uid,
        job,
        abort_message,
        thread_role,
        signature,
        gpu,
        executable,
        parent_pid: _,
        parent_name,
        signal,
        oom,
        handler,
        registers: _,
        instruction,
        frames: fr,
        unwind,
        threads,
        threads_not_captured: _,
        outcome,
        python: py,
        notes,
        latency_ms: _,
    } = &mut r;
    for s in [
        time,
        process_name,
        thread_name,
        parent_name,
        &mut unwind.stop_reason,
    ] {
        one(s);
    }
    for s in [
        host,
        cgroup,
        container_id,
        container_runtime,
        pod_uid,
        abort_message,
        thread_role,
        executable,
        instruction,
    ] {
        opt(s);
    }
    if let Some(sg) = signature {
        one(&mut sg.cause);
        sg.frames.iter_mut().for_each(one);
        opt(&mut sg.python);
    }
    if let Some(g) = gpu {
        for l in &mut g.libraries {
            one(&mut l.path);
            opt(&mut l.version);
        }
        opt(&mut g.driver_version);
        for x in &mut g.xid {
            one(&mut x.message);
            one(&mut x.pci);
        }
    }
    if let Some(j) = job {
        for s in [
            &mut j.run_id,
            &mut j.role_name,
            &mut j.slurm_job_id,
            &mut j.slurm_step_id,
            &mut j.visible_devices,
        ] {
            opt(s);
        }
        j.environment = std::mem::take(&mut j.environment)
            .into_iter()
            .map(|(mut k, mut v)| {
                one(&mut k);
                one(&mut v);
                (k, v)
            })
            .collect();
        if let Some(e) = &mut j.after_failure_of {
            one(&mut e.signal);
        }
    }
    one(&mut signal.name);
    for s in [
        &mut signal.code_name,
        &mut signal.code_description,
        &mut signal.sender_name,
        &mut signal.fault_mapping,
        &mut signal.cause,
    ] {
        opt(s);
    }
    if let Some(o) = oom {
        one(&mut o.trigger_name);
        opt(&mut o.memory_cgroup);
    }
    if let Some(h) = handler {
        opt(&mut h.reraised_with);
    }
    frames(fr);
    threads.iter_mut().for_each(thread);
    if let Some(o) = outcome {
        one(&mut o.status);
    }
    if let Some(p) = py {
        tracebacks(p);
    }
    for n in notes {
        one(n);
    }
    r
}

pub(super) fn thread(t: &mut ThreadReport) {
    let ThreadReport {
        tid: _,
        name,
        role,
        frames: f,
        unwind,
        state,
    } = t;
    one(name);
    opt(role);
    frames(f);
    one(&mut unwind.stop_reason);
    if let Some(s) = state {
        opt(&mut s.syscall);
    }
}

pub(super) fn tracebacks(p: &mut PythonReport) {
    one(&mut p.version);
    for t in &mut p.threads {
        one(&mut t.thread_id);
        opt(&mut t.name);
        python(&mut t.frames);
    }
}

pub(super) fn escape(s: &mut String) {
    one(s);
}

pub(super) fn escape_opt(s: &mut Option<String>) {
    opt(s);
}

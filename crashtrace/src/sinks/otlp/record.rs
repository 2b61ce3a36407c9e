//! One crash report as one OTLP LogRecord: the `app.crash` event of the OpenTelemetry
//! semantic conventions, with `exception.*`, `process.*`, `thread.*` and `container.*`
//! attributes and the whole report as a structured body. crashtrace is the reporter,
//! not the crashed application, so what identifies the crashed process goes in the
//! record's attributes (as the convention asks), crashtrace's own host and service in
//! the resource. No I/O: host facts and times come in.

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};

use crate::{model::CrashReport, report::text};

/// What the resource says of crashtrace's host, besides the configured attributes.
#[derive(Clone, Debug, Default)]
pub struct Host {
    pub name: String,
    pub boot_id: String,
}

pub fn string(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

fn int(i: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    }
}

pub fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// A JSON value as an AnyValue, structure kept (objects become key-value lists).
pub fn any(v: &serde_json::Value) -> AnyValue {
    use serde_json::Value as J;
    let value = match v {
        J::Null => return AnyValue { value: None },
        J::Bool(b) => any_value::Value::BoolValue(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => match n.as_u64() {
                // Addresses above i64::MAX: as text, never wrapped to a negative.
                Some(u) => any_value::Value::StringValue(u.to_string()),
                None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        J::String(s) => any_value::Value::StringValue(s.clone()),
        J::Array(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().map(any).collect(),
        }),
        J::Object(o) => any_value::Value::KvlistValue(KeyValueList {
            values: o.iter().map(|(k, v)| kv(k, any(v))).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

/// The crashing thread's frames, one per line, as the text report shows them.
fn stacktrace(r: &CrashReport) -> String {
    r.frames
        .iter()
        .map(|f| {
            let func = f.function.as_deref().unwrap_or("??");
            let module = f
                .module
                .as_deref()
                .map(|m| m.rsplit('/').next().unwrap_or(m))
                .unwrap_or("?");
            let at = f
                .location
                .as_ref()
                .map(|l| match l.line {
                    Some(n) => format!(" at {}:{n}", l.file),
                    None => format!(" at {}", l.file),
                })
                .unwrap_or_default();
            format!(
                "#{:<3} 0x{:016x} in {func} ({module}){at}",
                f.index, f.address
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The record for one report, observed at `observed_ns` (Unix ns).
pub fn log_record(report: &CrashReport, host: &Host, observed_ns: u64) -> LogRecord {
    // Names and paths as the text output shows them: no control or bidi characters.
    let r = text::neutral(report);
    let time_ns = humantime::parse_rfc3339(&r.time)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(observed_ns, |d| d.as_nanos() as u64);
    let kind = r.kind();
    let mut message = r.signal.name.clone();
    if let Some(c) = &r.signal.code_name {
        message += &format!(" ({c}");
        if let Some(d) = &r.signal.code_description {
            message += &format!(": {d}");
        }
        message.push(')');
    }
    if let Some(a) = r.signal.fault_address {
        message += &format!(" at 0x{a:x}");
    }
    if let Some(f) = r.top_function() {
        message += &format!(" in {f}");
    }
    let mut a = vec![
        kv(
            "app.crash.id",
            string(format!("{}-{}-{}", host.boot_id, r.pid, time_ns)),
        ),
        kv("exception.type", string(r.signal.name.clone())),
        kv("exception.message", string(message)),
        kv("exception.stacktrace", string(stacktrace(&r))),
        kv("process.pid", int(r.pid.into())),
        kv("process.parent_pid", int(r.parent_pid.into())),
        kv("thread.id", int(r.tid.into())),
        kv("thread.name", string(r.thread_name.clone())),
        kv("process.executable.name", string(r.process_name.clone())),
        kv("signal.number", int(r.signal.number.into())),
        kv("crashtrace.kind", string(kind)),
        kv("crashtrace.schema_version", int(r.schema_version.into())),
    ];
    if let Some(e) = &r.executable {
        a.push(kv("process.executable.path", string(e.clone())));
    }
    if let Some(code) = r.outcome.as_ref().and_then(|o| o.exit_code) {
        a.push(kv("process.exit.code", int(code.into())));
    }
    if let Some(c) = &r.container_id {
        a.push(kv("container.id", string(c.clone())));
    }
    if let Some(c) = &r.cgroup {
        a.push(kv("crashtrace.cgroup", string(c.clone())));
    }
    if let Some(p) = r.signal.sender_pid {
        a.push(kv("crashtrace.sender.pid", int(p.into())));
    }
    for (k, v) in r.attribution() {
        // The semantic conventions' names where they have one.
        let key = match k {
            "pod_uid" => "k8s.pod.uid".to_string(),
            "container_runtime" => "container.runtime".to_string(),
            "thread_role" | "abort_message" | "gpu_devices" | "xid" | "signature" => {
                format!("crashtrace.{k}")
            }
            _ => format!("crashtrace.job.{k}"),
        };
        a.push(kv(&key, string(v)));
    }
    let body = serde_json::from_str::<serde_json::Value>(&report.to_json_line())
        .map(|v| any(&v))
        .unwrap_or_else(|_| string(report.to_json_line()));
    LogRecord {
        time_unix_nano: time_ns,
        observed_time_unix_nano: observed_ns,
        severity_number: SeverityNumber::Fatal as i32,
        severity_text: "FATAL".into(),
        event_name: "app.crash".into(),
        body: Some(body),
        attributes: a,
        ..Default::default()
    }
}

/// The resource and scope the records go under.
pub fn resource_logs(
    records: Vec<LogRecord>,
    configured: &[(String, String)],
    host: &Host,
) -> ResourceLogs {
    let mut attributes: Vec<KeyValue> = configured
        .iter()
        .map(|(k, v)| kv(k, string(v.clone())))
        .collect();
    let has = |k: &str| configured.iter().any(|(ck, _)| ck == k);
    for (k, v) in [
        ("host.name", host.name.clone()),
        ("host.arch", "amd64".to_string()),
        ("os.type", "linux".to_string()),
        ("service.version", env!("CARGO_PKG_VERSION").to_string()),
    ] {
        if !has(k) {
            attributes.push(kv(k, string(v)));
        }
    }
    ResourceLogs {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_logs: vec![ScopeLogs {
            scope: Some(InstrumentationScope {
                name: "crashtrace".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            log_records: records,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a any_value::Value> {
        r.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_report_becomes_an_app_crash_event() {
        let mut report: CrashReport =
            serde_json::from_str(crate::report::text::tests::MINIMAL).unwrap();
        report.process_name = "bad\u{1b}[2Jname".into();
        let host = Host {
            name: "node-1".into(),
            boot_id: "b00t".into(),
        };
        let r = log_record(&report, &host, 7);
        assert_eq!(r.event_name, "app.crash");
        assert_eq!(r.severity_number, SeverityNumber::Fatal as i32);
        assert_eq!(r.time_unix_nano, 1_796_119_200_000_000_000);
        assert_eq!(r.observed_time_unix_nano, 7);
        let s = |k| match attr(&r, k) {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(s("exception.type"), "SIGSEGV");
        assert_eq!(
            s("exception.message"),
            "SIGSEGV (SEGV_MAPERR: address not mapped to object) at 0x0 in crash_here"
        );
        assert!(
            s("exception.stacktrace").starts_with("#0   0x0000000000001000 in crash_here (victim)")
        );
        assert_eq!(s("process.executable.name"), "bad\\x1b[2Jname");
        assert_eq!(s("app.crash.id"), "b00t-4242-1796119200000000000");
        assert_eq!(
            attr(&r, "process.pid"),
            Some(&any_value::Value::IntValue(4242))
        );
        let Some(any_value::Value::KvlistValue(body)) =
            r.body.as_ref().and_then(|b| b.value.as_ref())
        else {
            panic!("a structured body")
        };
        assert!(body.values.iter().any(|kv| kv.key == "frames"));
        let rl = resource_logs(vec![r], &[("service.name".into(), "svc".into())], &host);
        let keys: Vec<&str> = rl
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|a| a.key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "service.name",
                "host.name",
                "host.arch",
                "os.type",
                "service.version"
            ]
        );
    }

    #[test]
    fn big_numbers_stay_exact() {
        let v = serde_json::json!({"address": 18446744073709551615u64, "n": -1, "x": 1.5});
        let Some(any_value::Value::KvlistValue(l)) = any(&v).value else {
            panic!()
        };
        assert_eq!(
            l.values[0].value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("18446744073709551615".into()))
        );
    }
}

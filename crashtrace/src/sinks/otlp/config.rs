//! Where OTLP goes and what it carries, from the options and the standard
//! `OTEL_EXPORTER_OTLP_*`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`
//! variables. No I/O: the environment comes in as a lookup.

use std::time::Duration;

/// The endpoint the specification gives when nothing is set.
const DEFAULT_BASE: &str = "http://localhost:4318";

#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    /// The logs URL requests are posted to.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// Resource attributes: service.name first, then OTEL_RESOURCE_ATTRIBUTES.
    pub resource: Vec<(String, String)>,
}

/// `base` with the logs path appended, as the specification says for
/// OTEL_EXPORTER_OTLP_ENDPOINT.
fn logs_url(base: &str) -> String {
    format!("{}/v1/logs", base.trim_end_matches('/'))
}

/// `%XX` escapes decoded (the W3C baggage form the variables use); bad escapes stay.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k1=v1,k2=v2` pairs; an entry without `=` or with an empty key is skipped.
fn pairs(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let k = percent_decode(k.trim());
            (!k.is_empty()).then(|| (k, percent_decode(v.trim())))
        })
        .collect()
}

impl OtlpConfig {
    /// `endpoint`: the option's URL (a bare `http://host:port` gets `/v1/logs`), which
    /// wins over the logs-specific variable, which wins over the general one.
    pub fn resolve(endpoint: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Self {
        let url = match endpoint {
            Some(e) => {
                let path = e.splitn(4, '/').nth(3).unwrap_or("");
                if path.is_empty() {
                    logs_url(e)
                } else {
                    e.to_string()
                }
            }
            None => env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
                .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|b| logs_url(&b)))
                .unwrap_or_else(|| logs_url(DEFAULT_BASE)),
        };
        let mut headers = pairs(&env("OTEL_EXPORTER_OTLP_HEADERS").unwrap_or_default());
        for (k, v) in pairs(&env("OTEL_EXPORTER_OTLP_LOGS_HEADERS").unwrap_or_default()) {
            headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(&k));
            headers.push((k, v));
        }
        let timeout_ms = env("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT")
            .or_else(|| env("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(10_000);
        let mut resource = pairs(&env("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default());
        // OTEL_SERVICE_NAME wins over a service.name in the attributes.
        let service = env("OTEL_SERVICE_NAME")
            .filter(|s| !s.is_empty())
            .or_else(|| {
                resource
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "crashtrace".into());
        resource.retain(|(k, _)| k != "service.name");
        resource.insert(0, ("service.name".into(), service));
        Self {
            url,
            headers,
            timeout: Duration::from_millis(timeout_ms.max(1)),
            resource,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn resolves_as_the_specification_says() {
        type Case<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            (None, vec![], "http://localhost:4318/v1/logs"),
            (Some("http://c:4318"), vec![], "http://c:4318/v1/logs"),
            (Some("http://c:4318/"), vec![], "http://c:4318/v1/logs"),
            (Some("http://c:9/custom"), vec![], "http://c:9/custom"),
            (
                None,
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://g:4318/")],
                "http://g:4318/v1/logs",
            ),
            (
                None,
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://g:4318"),
                    ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:1/x"),
                ],
                "http://l:1/x",
            ),
            (
                Some("http://flag:1"),
                vec![("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:1/x")],
                "http://flag:1/v1/logs",
            ),
        ];
        for (flag, vars, want) in cases {
            assert_eq!(
                OtlpConfig::resolve(flag, env(&vars)).url,
                want,
                "{flag:?} {vars:?}"
            );
        }
    }

    #[test]
    fn headers_resource_and_service_name() {
        let vars = [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=se%20cret, x-a=1,bad,=nokey",
            ),
            ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "X-A=2"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=fromattrs,k8s.cluster.name=c%2C1,env=prod",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ];
        let c = OtlpConfig::resolve(None, env(&vars));
        assert_eq!(
            c.headers,
            [
                ("api-key".into(), "se cret".into()),
                ("X-A".into(), "2".into())
            ]
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(
            c.resource,
            [
                ("service.name".to_string(), "fromattrs".to_string()),
                ("k8s.cluster.name".into(), "c,1".into()),
                ("env".into(), "prod".into())
            ]
        );
        let mut with_name = vars.to_vec();
        with_name.push(("OTEL_SERVICE_NAME", "named"));
        let c = OtlpConfig::resolve(None, env(&with_name));
        assert_eq!(c.resource[0], ("service.name".into(), "named".into()));
        assert_eq!(c.resource.len(), 3);
    }
}

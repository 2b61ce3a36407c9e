//! The `/metrics` endpoint. One route and one client at a time, each bounded in size
//! and time, on a thread of its own: written here rather than with an HTTP crate so
//! that the whole surface a local client can reach is these few lines, and a client
//! that stalls costs at most its time-out, never a thread or memory per connection.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    time::Duration,
};

use super::Metrics;

/// A request larger than this is refused: a scrape is one short GET.
const MAX_REQUEST: usize = 8192;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Listens on `addr` (now, so that a bad address is an error at start) and serves
/// `/metrics` on a thread of its own. Returns the address bound (for port 0).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("crashtrace-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        let _ = answer(c, &metrics);
                    }
                    // Out of descriptors, say: wait instead of spinning.
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })?;
    Ok(bound)
}

fn answer(mut c: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    c.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    c.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        if len == buf.len() {
            return respond(
                &mut c,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            );
        }
        let n = c.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    }
    let line = buf[..len].split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next(), parts.next());
    match (method, target) {
        (Some(b"GET"), Some(t)) if t == b"/metrics" || t.starts_with(b"/metrics?") => respond(
            &mut c,
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &metrics.encode(),
        ),
        (Some(b"GET"), _) => respond(&mut c, "404 Not Found", "text/plain", "see /metrics\n"),
        _ => respond(&mut c, "405 Method Not Allowed", "text/plain", ""),
    }
}

fn respond(c: &mut TcpStream, status: &str, kind: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: \
         close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes())?;
    c.write_all(body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(request).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Metrics::new())).unwrap();
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("# TYPE crashtrace_report_latency_seconds histogram")
                && ok.ends_with("# EOF\n"),
            "{ok}"
        );
        assert!(get(addr, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let huge = vec![b'a'; MAX_REQUEST];
        assert!(get(addr, &huge).starts_with("HTTP/1.1 431"));
        // A client that connects and says nothing holds the endpoint for its time-out
        // only: the next one is served.
        let _silent = TcpStream::connect(addr).unwrap();
        assert!(get(addr, b"GET /metrics HTTP/1.0\r\n\r\n").contains(" 200 OK"));
    }
}

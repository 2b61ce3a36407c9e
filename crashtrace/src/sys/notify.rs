//! systemd's readiness and watchdog protocol (sd_notify): datagrams to $NOTIFY_SOCKET.
//! Written here rather than with a crate: it is one `sendto` of a short text, and the
//! address rules (a path, or `@` for the abstract namespace) are all there is to it.

use std::{
    os::unix::net::{SocketAddr, UnixDatagram},
    time::Duration,
};

/// Where systemd listens, if it started crashtrace with Type=notify.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Half the watchdog period, if systemd set one for this process.
    pub watchdog_every: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd gives; None when not run under Type=notify.
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(name).ok()?
            }
            None => SocketAddr::from_pathname(std::path::Path::new(&path)).ok()?,
        };
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|_| {
                // The watchdog is for this process only if WATCHDOG_PID says so (or is unset).
                std::env::var("WATCHDOG_PID")
                    .ok()
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_none_or(|p| p == std::process::id())
            })
            .map(|usec| Duration::from_micros(usec / 2));
        Some(Self {
            socket: UnixDatagram::unbound().ok()?,
            addr,
            watchdog_every,
        })
    }

    /// Sends `state` (e.g. "READY=1"); a failure is not crashtrace's to act on.
    pub fn send(&self, state: &str) {
        let _ = self.socket.send_to_addr(state.as_bytes(), &self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("ct-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr: SocketAddr::from_pathname(&path).unwrap(),
            watchdog_every: None,
        };
        n.send("READY=1");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! `sd_notify`: telling systemd (a `Type=notify` unit) that mini is ready (`READY=1`) and what
//! it is waiting for (`STATUS=...`), over the datagram socket named by `NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Where service state goes: systemd, or nowhere when mini does not run under it.
pub trait Notifier: Send + Sync {
    /// `READY=1`: the service is up.
    fn ready(&self);
    /// `STATUS=<text>`: shown by `systemctl status` (the unit's `StatusText`).
    fn status(&self, text: &str);
}

/// Sends to the socket in `NOTIFY_SOCKET`; does nothing when it is unset.
#[derive(Debug, Clone)]
pub struct SystemdNotifier {
    socket: Option<PathBuf>,
}

impl SystemdNotifier {
    /// From `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
    pub fn from_env() -> Self {
        SystemdNotifier::new(std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from))
    }

    /// Sends to `socket`; `None` makes every call a no-op.
    pub fn new(socket: Option<PathBuf>) -> Self {
        SystemdNotifier {
            socket: socket.filter(|s| !s.as_os_str().is_empty()),
        }
    }

    /// Whether there is a socket to send to.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    fn send(&self, message: &str) {
        let Some(socket) = &self.socket else {
            return;
        };
        if let Err(e) = send_to(socket, message.as_bytes()) {
            // systemd may be gone (shutdown); the service keeps working without it
            eprintln!(
                "mini: sd_notify to {}: {e} ({message:?} not delivered)",
                socket.display()
            );
        }
    }
}

fn send_to(socket: &std::path::Path, message: &[u8]) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let name = socket.to_string_lossy();
    if let Some(abstract_name) = name.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?;
        sock.send_to_addr(message, &addr)?;
    } else {
        sock.send_to(message, socket)?;
    }
    Ok(())
}

impl Notifier for SystemdNotifier {
    fn ready(&self) {
        self.send("READY=1\nSTATUS=running");
    }

    fn status(&self, text: &str) {
        // one line: systemd reads the datagram as newline-separated assignments
        let line = text.replace('\n', " ");
        self.send(&format!("STATUS={line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_notifier_unset_socket_is_a_no_op() {
        let n = SystemdNotifier::new(None);
        assert!(!n.enabled());
        n.ready();
        n.status("nothing to see");
    }

    #[test]
    fn systemd_notifier_sends_status_and_ready_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = SystemdNotifier::new(Some(path));
        n.status("starting containerd\nnow");
        n.ready();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=starting containerd now");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=running");
    }

    #[test]
    fn systemd_notifier_abstract_socket_is_reached() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mini-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        SystemdNotifier::new(Some(PathBuf::from(format!("@{name}")))).ready();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=running");
    }

    #[test]
    fn systemd_notifier_missing_socket_does_not_fail_the_caller() {
        let n = SystemdNotifier::new(Some(PathBuf::from("/nonexistent/notify")));
        assert!(n.enabled());
        n.ready();
    }
}

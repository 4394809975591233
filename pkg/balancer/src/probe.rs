//! Health probes of the servers: [`DialProbe`] (a connection opens) and [`ReadyzProbe`] (the
//! server answers `GET /readyz` with 200 over TLS verified with the cluster CA), which tells a
//! server that lost its datastore from a healthy one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Dialer;

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// It accepts connections but is not fit to serve (its `/readyz` fails).
    NotReady,
    /// It refuses or does not answer.
    Unreachable,
}

/// Checks one server (`host:port`).
#[async_trait::async_trait]
pub trait Probe: Send + Sync {
    async fn check(&self, address: &str) -> Health;
}

/// Ready when a connection opens.
pub struct DialProbe(pub Arc<dyn Dialer>);

#[async_trait::async_trait]
impl Probe for DialProbe {
    async fn check(&self, address: &str) -> Health {
        match self.0.dial(address).await {
            Ok(_) => Health::Ready,
            Err(_) => Health::Unreachable,
        }
    }
}

/// `GET /readyz` over TLS, verified with the CA bundle in `ca_file` (read at each probe: it
/// changes with a CA rotation). Before the agent holds the CA (before its join) an open
/// connection is enough.
pub struct ReadyzProbe {
    pub dialer: Arc<dyn Dialer>,
    pub ca_file: PathBuf,
    pub timeout: Duration,
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether an HTTP response starts with a 200 status line.
pub(crate) fn is_ok_status(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let version = parts.next().unwrap_or_default();
    version.starts_with(b"HTTP/1.") && parts.next() == Some(b"200".as_slice())
}

impl ReadyzProbe {
    async fn readyz(&self, address: &str, ca_pem: &str) -> Result<bool, String> {
        let config = mini_certs::client_tls_config(ca_pem, None).map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(host_of(address).to_string())
            .map_err(|e| e.to_string())?;
        let stream = self.dialer.dial(address).await.map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nUser-Agent: mini-agent-balancer\r\n\r\n"
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = tls.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(is_ok_status(&head))
    }
}

#[async_trait::async_trait]
impl Probe for ReadyzProbe {
    async fn check(&self, address: &str) -> Health {
        let Ok(ca_pem) = tokio::fs::read_to_string(&self.ca_file).await else {
            return DialProbe(self.dialer.clone()).check(address).await;
        };
        // a server that does not even take a connection is unreachable, not "not ready"
        if self.dialer.dial(address).await.is_err() {
            return Health::Unreachable;
        }
        match tokio::time::timeout(self.timeout, self.readyz(address, &ca_pem)).await {
            Ok(Ok(true)) => Health::Ready,
            Ok(Ok(false)) => Health::NotReady,
            Ok(Err(e)) => {
                tracing::debug!(server = address, error = %e, "readiness probe failed");
                Health::NotReady
            }
            Err(_) => Health::NotReady,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_ok_status_200_line_is_ok() {
        assert!(is_ok_status(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
        ));
    }

    #[test]
    fn is_ok_status_500_line_is_not_ok() {
        assert!(!is_ok_status(b"HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(!is_ok_status(b"garbage 200\r\n"));
    }

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("10.0.0.1:6443"), "10.0.0.1");
        assert_eq!(host_of("[::1]:6443"), "::1");
        assert_eq!(host_of("server.example:443"), "server.example");
    }
}

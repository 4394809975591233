//! The agent's client-side load balancer, like k3s' agent loadbalancer: a TCP proxy on loopback
//! that every client of the agent (join, kube client, certificate renewal, image sync, registry
//! pulls) uses instead of the server URL. It starts from the `--server` address, learns the
//! other servers from the `kubernetes` Endpoints ([`learn`]), and sends each new connection to
//! the server it used last while that one answers; a server that refuses or times out is marked
//! down (and its proxied connections closed, so clients reconnect) and the next healthy one takes
//! over. TLS passes through untouched: every server's certificate carries 127.0.0.1.
//! Health is checked every few seconds by a [`Probe`]: the agent's [`ReadyzProbe`] asks each
//! server's `/readyz` over TLS (verified with the cluster CA), so a server that accepts
//! connections but lost its datastore is skipped (after two failed answers in a row, so one slow
//! answer does not close every connection) and failed over from like a dead one.
//! Sockets sit behind [`Dialer`] and [`Listener`] so the tests run on in-memory streams.

mod learn;
mod probe;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

pub use learn::{addresses_of, learn};
pub use probe::{DialProbe, Health, Probe, ReadyzProbe};

/// Failed `/readyz` answers in a row that mark a server down.
const NOT_READY_LIMIT: u32 = 2;

/// A bidirectional byte stream (a TCP connection, or an in-memory one in tests).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens connections to servers (`host:port`).
#[async_trait::async_trait]
pub trait Dialer: Send + Sync {
    async fn dial(&self, address: &str) -> std::io::Result<Box<dyn Stream>>;
}

/// Accepts the local clients' connections.
#[async_trait::async_trait]
pub trait Listener: Send + Sync {
    async fn accept(&self) -> std::io::Result<Box<dyn Stream>>;
}

/// TCP through tokio, with a connect timeout.
#[derive(Debug, Clone)]
pub struct TcpDialer {
    pub timeout: Duration,
}

impl Default for TcpDialer {
    fn default() -> Self {
        TcpDialer {
            timeout: Duration::from_secs(3),
        }
    }
}

#[async_trait::async_trait]
impl Dialer for TcpDialer {
    async fn dial(&self, address: &str) -> std::io::Result<Box<dyn Stream>> {
        let stream = tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(address))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {address} timed out"),
                )
            })??;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(stream))
    }
}

#[async_trait::async_trait]
impl Listener for tokio::net::TcpListener {
    async fn accept(&self) -> std::io::Result<Box<dyn Stream>> {
        let (stream, _) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(stream))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    #[error(
        "no server answered (tried {tried}); check that a server runs and this node reaches it"
    )]
    NoServer { tried: String },
}

/// One server the balancer knows.
#[derive(Debug)]
struct Server {
    address: String,
    healthy: bool,
    /// Failed readiness answers in a row.
    not_ready: u32,
    /// Cancelled when the server is found down or leaves the list: its proxied connections close.
    connections: CancellationToken,
}

impl Server {
    fn new(address: String) -> Self {
        Server {
            address,
            healthy: true,
            not_ready: 0,
            connections: CancellationToken::new(),
        }
    }
}

#[derive(Debug)]
struct State {
    /// The `--server` address first, then the learned ones in order.
    servers: Vec<Server>,
    /// The server new connections go to while it answers.
    current: Option<String>,
}

/// The balancer: the server list, their health and the one in use.
#[derive(Debug)]
pub struct Balancer {
    default: String,
    state: Mutex<State>,
}

impl Balancer {
    /// A balancer that knows only `default` (the `--server` address, `host:port`) so far.
    pub fn new(default: &str) -> Arc<Self> {
        Arc::new(Balancer {
            default: default.to_string(),
            state: Mutex::new(State {
                servers: vec![Server::new(default.to_string())],
                current: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The servers known now, the `--server` address first.
    pub fn servers(&self) -> Vec<String> {
        self.lock()
            .servers
            .iter()
            .map(|s| s.address.clone())
            .collect()
    }

    /// The server new connections go to (`None` until one was used).
    pub fn current(&self) -> Option<String> {
        self.lock().current.clone()
    }

    /// Replaces the learned servers by `learned` (the `--server` address always stays, as the
    /// way back in when every learned one is gone). Servers that left have their connections
    /// closed. Returns whether the list changed.
    pub fn set_servers(&self, learned: &[String]) -> bool {
        let mut wanted = vec![self.default.clone()];
        for address in learned {
            if !wanted.contains(address) {
                wanted.push(address.clone());
            }
        }
        let mut state = self.lock();
        let have: Vec<&str> = state.servers.iter().map(|s| s.address.as_str()).collect();
        if have == wanted.iter().map(String::as_str).collect::<Vec<_>>() {
            return false;
        }
        let mut old = std::mem::take(&mut state.servers);
        for address in wanted {
            match old.iter().position(|s| s.address == address) {
                Some(i) => state.servers.push(old.swap_remove(i)),
                None => state.servers.push(Server::new(address)),
            }
        }
        for gone in old {
            gone.connections.cancel();
            if state.current.as_deref() == Some(gone.address.as_str()) {
                state.current = None;
            }
        }
        tracing::info!(servers = ?state.servers.iter().map(|s| &s.address).collect::<Vec<_>>(), "the load balancer's server list changed");
        true
    }

    /// Marks `address` down: new connections avoid it and its proxied ones close.
    fn mark_down(&self, address: &str) {
        let mut state = self.lock();
        if let Some(server) = state.servers.iter_mut().find(|s| s.address == address) {
            if server.healthy {
                tracing::warn!(server = address, "server unreachable; failing over");
            }
            server.healthy = false;
            server.connections.cancel();
            server.connections = CancellationToken::new();
        }
        if state.current.as_deref() == Some(address) {
            state.current = None;
        }
    }

    fn mark_up(&self, address: &str) {
        let mut state = self.lock();
        if let Some(server) = state.servers.iter_mut().find(|s| s.address == address) {
            if !server.healthy {
                tracing::info!(server = address, "server reachable again");
            }
            server.healthy = true;
            server.not_ready = 0;
        }
    }

    /// The order to try servers in: the current one, the other healthy ones, then the rest.
    fn candidates(&self) -> Vec<String> {
        let state = self.lock();
        let mut out = Vec::new();
        if let Some(current) = &state.current {
            out.push(current.clone());
        }
        for healthy in [true, false] {
            for s in &state.servers {
                if s.healthy == healthy && !out.contains(&s.address) {
                    out.push(s.address.clone());
                }
            }
        }
        out
    }

    /// Connects to the first server that answers, which becomes the current one; returns it,
    /// the stream and the token that closes it when the server is found down.
    pub async fn connect(
        &self,
        dialer: &dyn Dialer,
    ) -> Result<(String, Box<dyn Stream>, CancellationToken), BalancerError> {
        let candidates = self.candidates();
        for address in &candidates {
            match dialer.dial(address).await {
                Ok(stream) => {
                    self.mark_up(address);
                    let mut state = self.lock();
                    if state.current.as_deref() != Some(address.as_str()) {
                        tracing::info!(server = %address, "the load balancer now uses this server");
                        state.current = Some(address.clone());
                    }
                    let token = state
                        .servers
                        .iter()
                        .find(|s| &s.address == address)
                        .map(|s| s.connections.clone())
                        .unwrap_or_default();
                    return Ok((address.clone(), stream, token));
                }
                Err(e) => {
                    tracing::debug!(server = %address, error = %e, "dial failed");
                    self.mark_down(address);
                }
            }
        }
        Err(BalancerError::NoServer {
            tried: candidates.join(", "),
        })
    }

    /// Probes every server once: a refusing one is marked down (closing its connections), one
    /// that answers not ready twice in a row too, an answering ready one up.
    pub async fn check_health(&self, probe: &dyn Probe) {
        for address in self.servers() {
            match probe.check(&address).await {
                Health::Ready => self.mark_up(&address),
                Health::Unreachable => self.mark_down(&address),
                Health::NotReady => {
                    let down = {
                        let mut state = self.lock();
                        match state.servers.iter_mut().find(|s| s.address == address) {
                            Some(server) => {
                                server.not_ready += 1;
                                server.not_ready >= NOT_READY_LIMIT
                            }
                            None => false,
                        }
                    };
                    if down {
                        tracing::warn!(server = %address, "server answers not ready (its datastore may be gone)");
                        self.mark_down(&address);
                    }
                }
            }
        }
    }

    /// Accepts local connections and proxies each to a server until `stop`.
    pub async fn serve(
        self: Arc<Self>,
        listener: Arc<dyn Listener>,
        dialer: Arc<dyn Dialer>,
        stop: CancellationToken,
    ) {
        loop {
            let client = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let mut client = match client {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "the load balancer's accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (balancer, dialer, stop) = (self.clone(), dialer.clone(), stop.clone());
            tokio::spawn(async move {
                let (address, mut server, closed) = match balancer.connect(dialer.as_ref()).await {
                    Ok(connected) => connected,
                    Err(e) => {
                        tracing::warn!(error = %e, "the load balancer dropped a connection");
                        return;
                    }
                };
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = closed.cancelled() => {}
                    copied = tokio::io::copy_bidirectional(&mut client, &mut server) => {
                        if let Err(e) = copied {
                            tracing::debug!(server = %address, error = %e, "proxied connection ended");
                        }
                    }
                }
            });
        }
    }

    /// Checks every server's health each `period` until `stop`.
    pub async fn run_health_checks(
        self: Arc<Self>,
        probe: Arc<dyn Probe>,
        period: Duration,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
            self.check_health(probe.as_ref()).await;
        }
    }
}

#[cfg(test)]
mod tests;

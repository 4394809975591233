//! Forwarding of names outside the cluster domain to the host's upstream resolvers: plain DNS
//! over UDP (TCP for TCP clients), a fresh random query ID per attempt, hedged attempts across
//! the upstreams, and one overall deadline so a client never waits longer than that.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

/// Why a forwarded query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver is configured")]
    NoUpstreams,
    #[error("no upstream resolver answered within {0:?}")]
    Timeout(Duration),
    #[error("upstream {upstream} failed: {source}")]
    Io {
        upstream: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the query to forward is not a dns message")]
    BadQuery,
}

/// Sends queries to a fixed list of upstream resolvers.
#[derive(Clone, Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    /// `timeout` bounds each forwarded query as a whole, across every attempt.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder { upstreams, timeout }
    }

    /// The attempt plan: every upstream once, at least two attempts (a lost datagram gets a
    /// second chance), at most four; attempts start one slot apart and overlap.
    fn plan(&self) -> Vec<SocketAddr> {
        let n = self.upstreams.len().clamp(2, 4);
        self.upstreams.iter().copied().cycle().take(n).collect()
    }

    /// Forwards `query` (a wire-format DNS message) and returns the first good answer, with
    /// the caller's query ID restored.
    pub async fn forward(&self, query: &[u8], tcp: bool) -> Result<Message, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        if query.len() < 12 {
            return Err(ForwardError::BadQuery);
        }
        let original_id = u16::from_be_bytes([query[0], query[1]]);
        let plan = self.plan();
        let deadline = Instant::now() + self.timeout;
        let slot = self.timeout / u32::try_from(plan.len()).unwrap_or(1);
        let mut attempts = FuturesUnordered::new();
        let mut next = 0;
        let mut next_start = Instant::now();
        loop {
            if next < plan.len() && (attempts.is_empty() || Instant::now() >= next_start) {
                attempts.push(attempt(plan[next], query.to_vec(), tcp));
                next += 1;
                next_start = Instant::now() + slot;
            }
            tokio::select! {
                Some(result) = attempts.next() => match result {
                    Ok(mut message) => {
                        message.metadata.id = original_id;
                        return Ok(message);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "dns: upstream attempt failed");
                        if attempts.is_empty() && next >= plan.len() {
                            return Err(error);
                        }
                    }
                },
                _ = tokio::time::sleep_until(next_start), if next < plan.len() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ForwardError::Timeout(self.timeout));
                }
            }
        }
    }
}

fn unspecified_for(upstream: SocketAddr) -> SocketAddr {
    match upstream.ip() {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// One query to one upstream with its own random ID; ends at the first well-formed reply
/// carrying that ID (or at an error such as ICMP port unreachable).
async fn attempt(
    upstream: SocketAddr,
    mut query: Vec<u8>,
    tcp: bool,
) -> Result<Message, ForwardError> {
    let id: u16 = rand::random();
    query[..2].copy_from_slice(&id.to_be_bytes());
    let io = |source| ForwardError::Io { upstream, source };
    if tcp {
        let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
        let len = u16::try_from(query.len()).map_err(|_| ForwardError::BadQuery)?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&query);
        stream.write_all(&framed).await.map_err(io)?;
        loop {
            let len = stream.read_u16().await.map_err(io)?;
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await.map_err(io)?;
            if let Ok(message) = Message::from_vec(&buf) {
                if message.metadata.id == id {
                    return Ok(message);
                }
            }
        }
    }
    let socket = UdpSocket::bind(unspecified_for(upstream))
        .await
        .map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(&query).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io)?;
        if let Ok(message) = Message::from_vec(&buf[..n]) {
            if message.metadata.id == id {
                return Ok(message);
            }
        }
    }
}

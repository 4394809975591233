//! Tests of server choice, fail-over, list updates and proxying, on in-memory streams: a fake
//! dialer whose servers answer `<name>:<what they read>` and can be killed, and a fake listener.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::*;

/// Servers by address: up (answering) or down (refusing); killing one closes its streams.
#[derive(Default)]
struct FakeDialer {
    up: Mutex<BTreeMap<String, CancellationToken>>,
    dials: Mutex<Vec<String>>,
}

impl FakeDialer {
    fn with(up: &[&str]) -> Arc<Self> {
        let dialer = FakeDialer::default();
        for a in up {
            dialer.start(a);
        }
        Arc::new(dialer)
    }
    fn start(&self, address: &str) {
        self.up
            .lock()
            .unwrap()
            .insert(address.to_string(), CancellationToken::new());
    }
    fn kill(&self, address: &str) {
        if let Some(token) = self.up.lock().unwrap().remove(address) {
            token.cancel();
        }
    }
    fn dials(&self) -> Vec<String> {
        self.dials.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Dialer for FakeDialer {
    async fn dial(&self, address: &str) -> std::io::Result<Box<dyn Stream>> {
        self.dials.lock().unwrap().push(address.to_string());
        let Some(killed) = self.up.lock().unwrap().get(address).cloned() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "refused",
            ));
        };
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let name = address.to_string();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                tokio::select! {
                    () = killed.cancelled() => return,
                    n = theirs.read(&mut buf) => {
                        let Ok(n) = n else { return };
                        if n == 0 { return; }
                        let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
                        if theirs.write_all(reply.as_bytes()).await.is_err() { return; }
                    }
                }
            }
        });
        Ok(Box::new(ours))
    }
}

struct FakeListener(tokio::sync::Mutex<mpsc::Receiver<tokio::io::DuplexStream>>);

#[async_trait::async_trait]
impl Listener for FakeListener {
    async fn accept(&self) -> std::io::Result<Box<dyn Stream>> {
        match self.0.lock().await.recv().await {
            Some(s) => Ok(Box::new(s)),
            None => std::future::pending().await,
        }
    }
}

async fn ask(stream: &mut tokio::io::DuplexStream, what: &str) -> String {
    stream.write_all(what.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn connect_current_answering_is_kept() {
    let dialer = FakeDialer::with(&["a:1", "b:1"]);
    let balancer = Balancer::new("a:1");
    balancer.set_servers(&["b:1".into()]);
    for _ in 0..3 {
        let (address, _, _) = balancer.connect(dialer.as_ref()).await.unwrap();
        assert_eq!(address, "a:1");
    }
    assert_eq!(dialer.dials(), ["a:1", "a:1", "a:1"]);
}

#[tokio::test]
async fn connect_current_down_fails_over_to_next_and_stays() {
    let dialer = FakeDialer::with(&["a:1", "b:1", "c:1"]);
    let balancer = Balancer::new("a:1");
    balancer.set_servers(&["b:1".into(), "c:1".into()]);
    balancer.connect(dialer.as_ref()).await.unwrap();
    dialer.kill("a:1");
    let (address, _, _) = balancer.connect(dialer.as_ref()).await.unwrap();
    assert_eq!(address, "b:1");
    // a comes back: b stays in use (no flapping back)
    dialer.start("a:1");
    let (address, _, _) = balancer.connect(dialer.as_ref()).await.unwrap();
    assert_eq!(address, "b:1");
    assert_eq!(balancer.current().as_deref(), Some("b:1"));
}

#[tokio::test]
async fn connect_every_server_down_is_no_server() {
    let dialer = FakeDialer::with(&[]);
    let balancer = Balancer::new("a:1");
    let Err(err) = balancer.connect(dialer.as_ref()).await else {
        panic!("connected with every server down");
    };
    assert!(err.to_string().contains("tried a:1"), "{err}");
}

#[tokio::test]
async fn set_servers_keeps_default_and_closes_connections_of_gone_servers() {
    let dialer = FakeDialer::with(&["a:1", "b:1"]);
    let balancer = Balancer::new("a:1");
    assert!(balancer.set_servers(&["b:1".into(), "a:1".into()]));
    assert_eq!(balancer.servers(), ["a:1", "b:1"]);
    assert!(!balancer.set_servers(&["b:1".into()]));
    dialer.kill("a:1");
    let (address, _, closed) = balancer.connect(dialer.as_ref()).await.unwrap();
    assert_eq!(address, "b:1");
    assert!(balancer.set_servers(&["c:1".into()]));
    assert!(closed.is_cancelled());
    assert_eq!(balancer.servers(), ["a:1", "c:1"]);
    assert_eq!(balancer.current(), None);
}

#[tokio::test]
async fn check_health_down_server_closes_its_connections() {
    let dialer = FakeDialer::with(&["a:1", "b:1"]);
    let balancer = Balancer::new("a:1");
    balancer.set_servers(&["b:1".into()]);
    let (_, _, closed) = balancer.connect(dialer.as_ref()).await.unwrap();
    let probe = DialProbe(dialer.clone());
    balancer.check_health(&probe).await;
    assert!(!closed.is_cancelled());
    dialer.kill("a:1");
    balancer.check_health(&probe).await;
    assert!(closed.is_cancelled());
    assert_eq!(balancer.current(), None);
    let (address, _, _) = balancer.connect(dialer.as_ref()).await.unwrap();
    assert_eq!(address, "b:1");
}

#[tokio::test]
async fn serve_proxies_bytes_and_fails_over_when_server_dies() {
    let dialer = FakeDialer::with(&["a:1", "b:1"]);
    let balancer = Balancer::new("a:1");
    balancer.set_servers(&["b:1".into()]);
    let (tx, rx) = mpsc::channel(4);
    let stop = CancellationToken::new();
    tokio::spawn(balancer.clone().serve(
        Arc::new(FakeListener(tokio::sync::Mutex::new(rx))),
        dialer.clone(),
        stop.clone(),
    ));
    let (mut client, theirs) = tokio::io::duplex(1024);
    tx.send(theirs).await.unwrap();
    assert_eq!(ask(&mut client, "ping").await, "a:1:ping");
    // the server dies: the proxied connection closes, a new one reaches the other server
    dialer.kill("a:1");
    let mut buf = [0u8; 8];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    let (mut client, theirs) = tokio::io::duplex(1024);
    tx.send(theirs).await.unwrap();
    assert_eq!(ask(&mut client, "pong").await, "b:1:pong");
    stop.cancel();
}

#[test]
fn addresses_of_lists_https_addresses_with_ports() {
    let endpoints = Endpoints {
        subsets: Some(vec![
            EndpointSubset {
                addresses: Some(vec![
                    EndpointAddress {
                        ip: "10.0.0.1".into(),
                        ..Default::default()
                    },
                    EndpointAddress {
                        ip: "10.0.0.2".into(),
                        ..Default::default()
                    },
                ]),
                ports: Some(vec![EndpointPort {
                    name: Some("https".into()),
                    port: 6443,
                    ..Default::default()
                }]),
                ..Default::default()
            },
            EndpointSubset {
                addresses: Some(vec![EndpointAddress {
                    ip: "fd00::1".into(),
                    ..Default::default()
                }]),
                ports: Some(vec![EndpointPort {
                    port: 7443,
                    ..Default::default()
                }]),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    assert_eq!(
        addresses_of(&endpoints),
        ["10.0.0.1:6443", "10.0.0.2:6443", "[fd00::1]:7443"]
    );
}

/// A probe answering from a table: servers not listed are ready.
struct TableProbe(Mutex<BTreeMap<String, Health>>);

#[async_trait::async_trait]
impl Probe for TableProbe {
    async fn check(&self, address: &str) -> Health {
        self.0
            .lock()
            .unwrap()
            .get(address)
            .copied()
            .unwrap_or(Health::Ready)
    }
}

#[tokio::test]
async fn check_health_server_not_ready_twice_is_skipped() {
    let dialer = FakeDialer::with(&["a:1", "b:1"]);
    let balancer = Balancer::new("a:1");
    balancer.set_servers(&["b:1".into()]);
    let (address, _, closed) = balancer.connect(dialer.as_ref()).await.unwrap();
    assert_eq!(address, "a:1");
    // a accepts connections but its datastore is gone
    let probe = TableProbe(Mutex::new(BTreeMap::from([(
        "a:1".to_string(),
        Health::NotReady,
    )])));
    balancer.check_health(&probe).await;
    assert!(!closed.is_cancelled(), "one failed answer is not enough");
    balancer.check_health(&probe).await;
    assert!(closed.is_cancelled());
    let (address, _, _) = balancer.connect(dialer.as_ref()).await.unwrap();
    assert_eq!(address, "b:1");
}

#[tokio::test]
async fn check_health_ready_answer_resets_not_ready_count() {
    let dialer = FakeDialer::with(&["a:1"]);
    let balancer = Balancer::new("a:1");
    let (_, _, closed) = balancer.connect(dialer.as_ref()).await.unwrap();
    let probe = TableProbe(Mutex::new(BTreeMap::new()));
    for health in [Health::NotReady, Health::Ready, Health::NotReady] {
        probe.0.lock().unwrap().insert("a:1".into(), health);
        balancer.check_health(&probe).await;
    }
    assert!(!closed.is_cancelled());
}

//! The DNS server against the in-process API server: real UDP/TCP queries on 127.0.0.1 for
//! services, headless endpoints, SRV, ExternalName, pods, NXDOMAIN, updates, forwarding to a
//! fake upstream, and SERVFAIL in time when the upstream is a blackhole.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use mini_dns::{start, DnsConfig, DnsServer};
use mini_testenv::TestEnv;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

const FAKE_UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

struct Running {
    env: TestEnv,
    server: DnsServer,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_dns(upstreams: Vec<SocketAddr>, timeout: Duration) -> Running {
    let env = TestEnv::start().await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("binding udp");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("binding tcp");
    let listen = udp.local_addr().expect("udp address");
    let mut config = DnsConfig::new(listen, upstreams);
    config.upstream_timeout = timeout;
    let shutdown = CancellationToken::new();
    // the identity the agent serves DNS with: a node (RBAC system:node)
    let client = env.client_as("system:node:n1", &["system:nodes"]);
    let server = start(client, config, udp, tcp, shutdown.clone()).expect("starting");
    tokio::time::timeout(Duration::from_secs(10), server.wait_synced())
        .await
        .expect("the caches sync within 10 s");
    Running {
        env,
        server,
        shutdown,
    }
}

fn query_bytes(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.id = rand_id();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(
        Name::from_ascii(name).expect("valid name"),
        qtype,
    ));
    msg.to_vec().expect("encoding a query")
}

fn rand_id() -> u16 {
    rand::random()
}

async fn udp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("client socket");
    let query = query_bytes(name, qtype);
    sock.send_to(&query, server).await.expect("sending");
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("an answer within 5 s")
        .expect("receiving");
    let msg = Message::from_vec(&buf[..n]).expect("a dns message");
    assert_eq!(msg.metadata.id, u16::from_be_bytes([query[0], query[1]]));
    msg
}

async fn tcp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.expect("connecting");
    let query = query_bytes(name, qtype);
    let len = u16::try_from(query.len()).expect("small query");
    stream.write_all(&len.to_be_bytes()).await.expect("writing");
    stream.write_all(&query).await.expect("writing");
    let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16())
        .await
        .expect("an answer within 5 s")
        .expect("reading");
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.expect("reading");
    Message::from_vec(&buf).expect("a dns message")
}

fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn srv_records(msg: &Message) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = msg
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((srv.port, srv.target.to_ascii())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn has_soa_authority(msg: &Message) -> bool {
    msg.authorities
        .iter()
        .any(|r| r.record_type() == RecordType::SOA)
}

/// A UDP resolver on 127.0.0.1 that answers every A question with 192.0.2.1 and counts queries.
async fn fake_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("upstream socket");
    let addr = sock.local_addr().expect("upstream address");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            seen.fetch_add(1, Ordering::SeqCst);
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
            reply.metadata.recursion_available = true;
            for q in &query.queries {
                reply.add_query(q.clone());
                if q.query_type() == RecordType::A {
                    reply.add_answer(Record::from_rdata(
                        q.name().clone(),
                        30,
                        RData::A(A(FAKE_UPSTREAM_ANSWER)),
                    ));
                }
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = sock.send_to(&bytes, from).await;
            }
        }
    });
    (addr, count)
}

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).expect("a valid object");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("creating an object")
}

/// Polls until `check` holds for the answer (the cache follows the API asynchronously).
async fn eventually(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    check: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let msg = udp_query(server, name, qtype).await;
        if check(&msg) || Instant::now() > deadline {
            return msg;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn populate(env: &TestEnv) -> Ipv4Addr {
    let client = env.admin_client();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let web: Service = create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"},
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
    )
    .await;
    create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
               "spec": {"clusterIP": "None", "selector": {"app": "db"},
                        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}}),
    )
    .await;
    create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
               "spec": {"type": "ExternalName", "externalName": "example.com"}}),
    )
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    create(
        &slices,
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "db-abc", "labels": {"kubernetes.io/service-name": "db"}},
               "addressType": "IPv4",
               "endpoints": [
                   {"addresses": ["10.42.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
                   {"addresses": ["10.42.2.6"], "hostname": "db-1", "conditions": {"ready": true}},
                   {"addresses": ["10.42.2.9"], "hostname": "db-2", "conditions": {"ready": false}}],
               "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    create(
        &pods,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.42.0.7", "podIPs": [{"ip": "10.42.0.7"}]}})),
    )
    .await
    .expect("setting the pod ip");
    web.spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .expect("web got a cluster ip")
}

#[tokio::test]
async fn cluster_names_resolve_from_the_watch_cache() {
    let (upstream, _) = fake_upstream().await;
    let dns = start_dns(vec![upstream], Duration::from_secs(1)).await;
    let web_ip = populate(&dns.env).await;
    let addr = dns.server.udp_addr();

    let msg = eventually(addr, "web.default.svc.cluster.local.", RecordType::A, |m| {
        !m.answers.is_empty()
    })
    .await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.metadata.authoritative);
    assert_eq!(a_records(&msg), vec![web_ip]);

    let msg = udp_query(addr, "web.default.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.answers.is_empty());
    assert!(has_soa_authority(&msg));

    let msg = eventually(addr, "db.default.svc.cluster.local.", RecordType::A, |m| {
        m.answers.len() == 2
    })
    .await;
    assert_eq!(
        a_records(&msg),
        vec![Ipv4Addr::new(10, 42, 1, 5), Ipv4Addr::new(10, 42, 2, 6)],
        "headless: the ready endpoints only"
    );
    let msg = udp_query(addr, "db-1.db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(a_records(&msg), vec![Ipv4Addr::new(10, 42, 2, 6)]);

    let msg = udp_query(
        addr,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        srv_records(&msg),
        vec![(80, "web.default.svc.cluster.local.".to_string())]
    );
    let msg = udp_query(
        addr,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        srv_records(&msg),
        vec![
            (5432, "db-0.db.default.svc.cluster.local.".to_string()),
            (5432, "db-1.db.default.svc.cluster.local.".to_string())
        ]
    );
    assert_eq!(
        msg.additionals
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count(),
        2
    );
    let msg = udp_query(
        addr,
        "_nope._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);

    let msg = eventually(addr, "ext.default.svc.cluster.local.", RecordType::A, |m| {
        !m.answers.is_empty()
    })
    .await;
    let cname = msg.answers.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.to_ascii()),
        _ => None,
    });
    assert_eq!(cname.as_deref(), Some("example.com."));
    assert_eq!(
        a_records(&msg),
        vec![FAKE_UPSTREAM_ANSWER],
        "the external target is chased upstream"
    );

    let msg = eventually(
        addr,
        "10-42-0-7.default.pod.cluster.local.",
        RecordType::A,
        |m| !m.answers.is_empty(),
    )
    .await;
    assert_eq!(a_records(&msg), vec![Ipv4Addr::new(10, 42, 0, 7)]);
    let msg = udp_query(addr, "10-42-0-8.default.pod.cluster.local.", RecordType::A).await;
    assert_eq!(
        msg.metadata.response_code,
        ResponseCode::NXDomain,
        "pods verified"
    );

    let msg = udp_query(addr, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
    assert!(has_soa_authority(&msg));

    let msg = tcp_query(
        dns.server.tcp_addr(),
        "web.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(a_records(&msg), vec![web_ip], "tcp answers too");
}

#[tokio::test]
async fn search_path_expansions_get_a_fast_nxdomain_without_going_upstream() {
    let (upstream, count) = fake_upstream().await;
    let dns = start_dns(vec![upstream], Duration::from_secs(1)).await;
    let addr = dns.server.udp_addr();
    for name in [
        "web.default.svc.cluster.local.default.svc.cluster.local.",
        "web.default.svc.cluster.local.svc.cluster.local.",
        "web.default.svc.cluster.local.cluster.local.",
        "example.com.default.svc.cluster.local.",
    ] {
        let started = Instant::now();
        let msg = udp_query(addr, name, RecordType::A).await;
        assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{name} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "nothing inside the domain goes upstream"
    );
}

#[tokio::test]
async fn service_changes_are_seen_by_later_queries() {
    let dns = start_dns(Vec::new(), Duration::from_secs(1)).await;
    let addr = dns.server.udp_addr();
    let services: Api<Service> = Api::namespaced(dns.env.admin_client(), "default");
    let msg = udp_query(addr, "late.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);

    let svc: Service = create(
        &services,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late"},
               "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    let ip: Ipv4Addr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .expect("a cluster ip");
    let msg = eventually(
        addr,
        "late.default.svc.cluster.local.",
        RecordType::A,
        |m| !m.answers.is_empty(),
    )
    .await;
    assert_eq!(a_records(&msg), vec![ip]);

    services
        .delete("late", &Default::default())
        .await
        .expect("deleting the service");
    let msg = eventually(
        addr,
        "late.default.svc.cluster.local.",
        RecordType::A,
        |m| m.metadata.response_code == ResponseCode::NXDomain,
    )
    .await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn outside_names_are_forwarded_to_the_upstream() {
    let (upstream, count) = fake_upstream().await;
    let dns = start_dns(vec![upstream], Duration::from_secs(1)).await;
    let msg = udp_query(dns.server.udp_addr(), "www.example.org.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&msg), vec![FAKE_UPSTREAM_ANSWER]);
    assert!(!msg.metadata.authoritative);
    let msg = tcp_query(dns.server.tcp_addr(), "www.example.org.", RecordType::A).await;
    // the fake upstream speaks UDP only: a TCP client's query fails over TCP, within the deadline
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn blackhole_upstream_gets_servfail_within_the_timeout() {
    // a socket that reads nothing and answers nothing
    let blackhole = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("blackhole socket");
    let timeout = Duration::from_millis(600);
    let dns = start_dns(vec![blackhole.local_addr().expect("address")], timeout).await;
    let started = Instant::now();
    let msg = udp_query(dns.server.udp_addr(), "unknown.example.", RecordType::A).await;
    let took = started.elapsed();
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    assert!(
        took >= timeout - Duration::from_millis(50),
        "gave up early: {took:?}"
    );
    assert!(
        took < timeout + Duration::from_millis(1000),
        "took {took:?}"
    );
}

#[tokio::test]
async fn no_upstream_or_a_refusing_one_gets_servfail_at_once() {
    // nothing listens on this port: ICMP port unreachable ends the attempt
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("socket");
        s.local_addr().expect("address")
    };
    for upstreams in [Vec::new(), vec![closed]] {
        let dns = start_dns(upstreams.clone(), Duration::from_secs(3)).await;
        let started = Instant::now();
        let msg = udp_query(dns.server.udp_addr(), "unknown.example.", RecordType::A).await;
        assert_eq!(
            msg.metadata.response_code,
            ResponseCode::ServFail,
            "{upstreams:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{upstreams:?}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn kube_dns_service_is_bootstrapped_at_the_tenth_service_address() {
    let env = TestEnv::start().await;
    let services: Api<Service> = Api::namespaced(env.admin_client(), "kube-system");
    let svc = services
        .get("kube-dns")
        .await
        .expect("kube-system/kube-dns exists");
    let spec = svc.spec.clone().expect("a spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.10"));
    assert!(spec.selector.unwrap_or_default().is_empty(), "no selector");
    let ports: Vec<(String, i32, String)> = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            (
                p.name.unwrap_or_default(),
                p.port,
                p.protocol.unwrap_or_default(),
            )
        })
        .collect();
    assert!(ports.contains(&("dns".into(), 53, "UDP".into())));
    assert!(ports.contains(&("dns-tcp".into(), 53, "TCP".into())));
    let annotations = svc.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("mini.dev/node-local-dns")
            .map(String::as_str),
        Some("true")
    );
    let labels = svc.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("k8s-app").map(String::as_str), Some("kube-dns"));
}

#[tokio::test]
async fn query_latency_is_printed() {
    let (upstream, _) = fake_upstream().await;
    let dns = start_dns(vec![upstream], Duration::from_secs(1)).await;
    populate(&dns.env).await;
    let addr = dns.server.udp_addr();
    eventually(addr, "web.default.svc.cluster.local.", RecordType::A, |m| {
        !m.answers.is_empty()
    })
    .await;
    for (label, name) in [
        ("cluster A", "web.default.svc.cluster.local."),
        (
            "search-path NXDOMAIN",
            "web.default.svc.cluster.local.default.svc.cluster.local.",
        ),
        ("forwarded A", "www.example.org."),
    ] {
        let mut samples = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            let msg = udp_query(addr, name, RecordType::A).await;
            samples.push(started.elapsed());
            assert_ne!(msg.metadata.response_code, ResponseCode::ServFail);
        }
        samples.sort();
        let p50 = samples[samples.len() / 2];
        let p99 = samples[samples.len() * 99 / 100];
        println!("dns latency {label}: p50 {:.0} us, p99 {:.0} us (200 udp queries, debug build, 127.0.0.1)",
            p50.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6);
        assert!(p99 < Duration::from_millis(100), "{label}: p99 {p99:?}");
    }
}

#[tokio::test]
async fn cancelling_shutdown_stops_the_server() {
    let env = TestEnv::start().await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("tcp");
    let addr = udp.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let config = DnsConfig::new(addr, Vec::new());
    let server = start(env.admin_client(), config, udp, tcp, shutdown.clone()).expect("start");
    server.wait_synced().await;
    let msg = udp_query(addr, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server.join())
        .await
        .expect("stops within 5 s")
        .expect("stops cleanly");
    // the port is free again
    UdpSocket::bind(addr)
        .await
        .expect("rebinding the released port");
}

#[tokio::test]
async fn run_on_a_taken_address_fails_with_a_bind_error() {
    let env = TestEnv::start().await;
    let taken = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let config = DnsConfig::new(taken.local_addr().expect("addr"), Vec::new());
    let err = mini_dns::run(env.admin_client(), config, CancellationToken::new())
        .await
        .expect_err("the udp port is taken");
    assert!(
        matches!(err, mini_dns::DnsError::Bind { proto: "udp", .. }),
        "{err}"
    );
}

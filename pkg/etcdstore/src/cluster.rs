//! A real 3-member etcd cluster on loopback for tests (`/usr/bin/etcd`, Debian's etcd-server).
//!
//! Members listen on free loopback ports with data in a temporary directory; dropping the
//! cluster kills its processes by PID and removes the directory. The TLS variant serves clients
//! over HTTPS and requires a client certificate signed by its own CA.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::EtcdConfig;

/// The etcd binary the tests run.
const ETCD: &str = "/usr/bin/etcd";

/// Files of the TLS variant.
pub(crate) struct TlsFiles {
    pub(crate) ca: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub(crate) struct Cluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    tls: Option<TlsFiles>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a test certificate file");
}

/// A CA, a serving certificate for 127.0.0.1 and a client certificate, as files in `dir`.
fn tls_files(dir: &Path) -> TlsFiles {
    let ca = mini_certs::CertAuthority::generate("etcd-test-ca").expect("generate a CA");
    let sans = mini_certs::SubjectAltNames {
        dns: vec!["localhost".to_string()],
        ips: vec!["127.0.0.1".parse().expect("loopback address")],
    };
    let server = ca.issue_server("etcd", &sans).expect("issue a server cert");
    let client = ca.issue_client("mini", &[]).expect("issue a client cert");
    let files = TlsFiles {
        ca: dir.join("ca.crt"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    write(&files.ca, ca.cert_pem());
    write(&files.client_cert, &client.cert_pem);
    write(&files.client_key, &client.key_pem);
    write(&files.server_cert, &server.cert_pem);
    write(&files.server_key, &server.key_pem);
    files
}

impl Cluster {
    /// Starts three members over plain HTTP and waits until the cluster answers.
    pub(crate) async fn start() -> Cluster {
        Cluster::start_with(false).await
    }

    /// Starts three members serving clients over HTTPS with client certificate authentication.
    pub(crate) async fn start_tls() -> Cluster {
        Cluster::start_with(true).await
    }

    async fn start_with(tls: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let tls = tls.then(|| tls_files(dir.path()));
        let members = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = Cluster { dir, members, tls };
        for index in 0..3 {
            cluster.start_member(index);
        }
        cluster.wait_healthy().await;
        cluster
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub(crate) fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The client URLs of all members.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect()
    }

    /// A store configuration for this cluster (with the client certificate for TLS).
    pub(crate) fn config(&self) -> EtcdConfig {
        let mut config = EtcdConfig::new(self.endpoints());
        config.request_timeout = Duration::from_secs(3);
        if let Some(tls) = &self.tls {
            config.ca_file = Some(tls.ca.clone());
            config.cert_file = Some(tls.client_cert.clone());
            config.key_file = Some(tls.client_key.clone());
        }
        config
    }

    /// Starts (or restarts, keeping its data) member `index`.
    pub(crate) fn start_member(&mut self, index: usize) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let scheme = self.scheme();
        let member = &self.members[index];
        let client_url = format!("{scheme}://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let data_dir = self.dir.path().join(&member.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", member.name)))
            .expect("open the member's log");
        let mut command = Command::new(ETCD);
        command
            .arg(format!("--name={}", member.name))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=mini-etcdstore-test")
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .spawn()
            .expect("start etcd (apt-get install etcd-server)");
        self.members[index].child = Some(child);
    }

    /// Kills member `index` (SIGKILL by PID) and waits for it.
    pub(crate) fn kill_member(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until a linearizable read succeeds (a leader is elected).
    pub(crate) async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut config = self.config();
        config.request_timeout = Duration::from_secs(1);
        let client = crate::client::Etcd::new(&config).expect("client settings");
        loop {
            if crate::read_revision(&client, Duration::from_secs(1))
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test etcd cluster did not become healthy within 30s; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill_member(index);
        }
    }
}

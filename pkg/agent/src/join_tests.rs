//! Tests of joining against a loopback join server.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::*;
use crate::testutil::JoinServer;

struct Paths {
    _dir: tempfile::TempDir,
    tls: PathBuf,
    password: PathBuf,
}

fn paths() -> Paths {
    let dir = tempfile::tempdir().expect("tempdir");
    Paths {
        tls: dir.path().join("tls"),
        password: dir.path().join("node-password"),
        _dir: dir,
    }
}

fn info<'a>(
    server: &'a str,
    token: &'a str,
    p: &'a Paths,
    ips: &'a [IpAddr],
) -> JoinRequestInfo<'a> {
    JoinRequestInfo {
        server_url: server,
        token,
        tls_dir: &p.tls,
        password_file: &p.password,
        node_name: "node-a",
        hostname: "host-a",
        node_ips: ips,
    }
}

const IPS: &[IpAddr] = &[IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7))];

#[tokio::test]
async fn join_good_token_stores_certs_then_restart_reuses_them() {
    let server = JoinServer::start().await;
    let p = paths();
    let token = server.token();
    let creds = join(&info(&server.url, &token, &p, IPS))
        .await
        .expect("join");
    assert_eq!(creds.ca_pem, server.ca.cert_pem());
    let client = cert_facts(&creds.client.cert_pem).expect("client cert");
    assert_eq!(client.common_name, "system:node:node-a");
    let serving = cert_facts(&creds.serving.cert_pem).expect("serving cert");
    assert!(serving.ips.contains(&IPS[0]), "{:?}", serving.ips);
    assert!(p.tls.join(CLIENT_KEY_FILE).exists());
    let mode = std::fs::metadata(&p.password).expect("password file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let again = join(&info(&server.url, &token, &p, IPS))
        .await
        .expect("rejoin");
    assert_eq!(again, creds);
    assert_eq!(
        server.joins.load(Ordering::SeqCst),
        1,
        "certificates were reused"
    );
}

#[tokio::test]
async fn join_new_node_ip_requests_new_serving_cert() {
    let server = JoinServer::start().await;
    let p = paths();
    let token = server.token();
    join(&info(&server.url, &token, &p, IPS))
        .await
        .expect("join");
    let moved = [IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8))];
    let creds = join(&info(&server.url, &token, &p, &moved))
        .await
        .expect("join");
    assert!(cert_facts(&creds.serving.cert_pem)
        .expect("cert")
        .ips
        .contains(&moved[0]));
    assert_eq!(server.joins.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn join_wrong_ca_hash_is_refused() {
    let server = JoinServer::start().await;
    let p = paths();
    let token = format!("K10{}::server:{}", "ab".repeat(32), server.secret);
    let err = join(&info(&server.url, &token, &p, IPS))
        .await
        .expect_err("refused");
    assert!(matches!(err, AgentError::CaHashMismatch { .. }), "{err}");
    assert!(err.to_string().contains("hash"), "{err}");
    assert_eq!(server.joins.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn join_wrong_secret_is_refused() {
    let server = JoinServer::start().await;
    let p = paths();
    let token = mini_certs::JoinToken::format(server.ca.cert_pem(), "wrong");
    let err = join(&info(&server.url, &token, &p, IPS))
        .await
        .expect_err("refused");
    assert!(matches!(err, AgentError::JoinRefused { .. }), "{err}");
}

#[tokio::test]
async fn join_bare_secret_is_accepted() {
    let server = JoinServer::start().await;
    let p = paths();
    let secret = server.secret.clone();
    join(&info(&server.url, &secret, &p, IPS))
        .await
        .expect("join");
}

#[tokio::test]
async fn join_same_name_from_another_machine_conflicts() {
    let server = JoinServer::start().await;
    let token = server.token();
    let first = paths();
    join(&info(&server.url, &token, &first, IPS))
        .await
        .expect("join");
    let second = paths();
    let err = join(&info(&server.url, &token, &second, IPS))
        .await
        .expect_err("conflict");
    assert!(matches!(err, AgentError::NodeNameConflict { .. }), "{err}");
}

#[tokio::test]
async fn join_unreachable_server_with_stored_certs_reuses_them() {
    let server = JoinServer::start().await;
    let p = paths();
    let token = server.token();
    let creds = join(&info(&server.url, &token, &p, IPS))
        .await
        .expect("join");
    let url = server.url.clone();
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let again = join(&info(&url, &token, &p, IPS))
        .await
        .expect("fail-static join");
    assert_eq!(again, creds);
}

#[test]
fn node_secret_password_survives_rename() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node-password");
    let first = NodeSecret::ensure(&path, "a").expect("first");
    assert_eq!(NodeSecret::ensure(&path, "a").expect("again"), first);
    let renamed = NodeSecret::ensure(&path, "b").expect("renamed");
    assert_eq!(renamed.password, first.password);
    assert_eq!(
        NodeSecret::load(&path)
            .expect("load")
            .expect("some")
            .node_name,
        "b"
    );
}

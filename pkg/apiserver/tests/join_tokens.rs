//! Bootstrap tokens and the install endpoints over real TLS: a token made through the API (as
//! `mini token create` does) authenticates and joins, an expired or deleted one is refused
//! with a message saying so, `/install.sh` needs no authentication, and the binary and image
//! endpoints answer 401 without or with a wrong token and 200 with either kind of join token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::Client;
use mini_apiserver::{ApiServer, ApiServerConfig};
use mini_certs::{BootstrapToken, CertAuthority, SubjectAltNames};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "joinsecret0123456789";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BINARY: &[u8] = b"pretend this is the mini binary";
const IMAGE: &[u8] = b"pretend this is an image tarball";

struct Cluster {
    _dir: TempDir,
    addr: SocketAddr,
    ca_pem: String,
    server_token: String,
    admin: Client,
    shutdown: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let sans = SubjectAltNames {
        dns: vec!["localhost".into()],
        ips: vec![LOCALHOST],
    };
    let pki = mini_certs::ensure_server_pki(&dir.path().join("tls"), &sans).unwrap();
    let ca_pem = pki.ca.cert_pem().to_string();
    let ca = Arc::new(CertAuthority::from_pem(&ca_pem, &pki.ca.key_pem()).unwrap());
    let binary = dir.path().join("mini");
    std::fs::write(&binary, BINARY).unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("app.tar"), IMAGE).unwrap();
    std::fs::write(images.join(".half.part"), b"x").unwrap();
    let store = mini_store::SledStore::open(&dir.path().join("db")).unwrap();
    let config = ApiServerConfig {
        join_secret: Some(SECRET.into()),
        ca_pem: ca_pem.clone(),
        ca: Some(ca),
        binary_path: Some(binary),
        images_dir: Some(images),
        ..ApiServerConfig::for_tests()
    };
    let server = ApiServer::new(Arc::new(store), config).await.unwrap();
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = mini_certs::server_tls_config(&pki.serving, &ca_pem).unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(mini_apiserver::serve(
        server,
        listener,
        tls,
        shutdown.clone(),
    ));
    let path = dir.path().join("admin.kubeconfig");
    mini_certs::write_kubeconfig(
        &path,
        &format!("https://{addr}"),
        &ca_pem,
        &pki.admin,
        0o600,
    )
    .unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Cluster {
        server_token: mini_certs::JoinToken::format(&ca_pem, SECRET),
        _dir: dir,
        addr,
        ca_pem,
        admin: Client::try_from(config).unwrap(),
        shutdown,
    }
}

async fn get(c: &Cluster, path: &str, bearer: Option<&str>) -> (StatusCode, Bytes) {
    let mut req = Request::get(path);
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    send(c, req.body(Full::new(Bytes::new())).unwrap()).await
}

async fn send(c: &Cluster, req: Request<Full<Bytes>>) -> (StatusCode, Bytes) {
    let tls = mini_certs::client_tls_config(&c.ca_pem, None).unwrap();
    let tcp = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(
            rustls::pki_types::ServerName::IpAddress(c.addr.ip().into()),
            tcp,
        )
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp: Response<hyper::body::Incoming> = sender.send_request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn message(body: &Bytes) -> String {
    serde_json::from_slice::<Value>(body).unwrap_or_default()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Stores a bootstrap-token Secret through the API; returns the CA-pinned token.
async fn make_token(c: &Cluster, expiration: Option<&str>) -> (BootstrapToken, String) {
    let token = BootstrapToken::generate();
    let mut data = json!({
        "token-id": token.id, "token-secret": token.secret,
        "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
        "auth-extra-groups": "system:bootstrappers:workers"});
    if let Some(e) = expiration {
        data["expiration"] = json!(e);
    }
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": BootstrapToken::secret_name(&token.id), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": data}))
    .unwrap();
    Api::<Secret>::namespaced(c.admin.clone(), "kube-system")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let full = token.format(&c.ca_pem);
    (token, full)
}

async fn join(c: &Cluster, token: &str, node: &str) -> (StatusCode, Bytes) {
    let (client_csr, _) = mini_certs::generate_csr("ignored", &SubjectAltNames::default()).unwrap();
    let sans = SubjectAltNames {
        dns: vec![node.into()],
        ips: vec![LOCALHOST],
    };
    let (serving_csr, _) = mini_certs::generate_csr(node, &sans).unwrap();
    let body = json!({"nodeName": node, "nodePassword": "pw",
                      "clientCSR": client_csr, "servingCSR": serving_csr});
    let req = Request::post("/v1-mini/node-join")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    send(c, req).await
}

#[tokio::test]
async fn bootstrap_token_authenticates_as_system_bootstrap_user() {
    let c = cluster().await;
    let (token, full) = make_token(&c, Some("2099-01-01T00:00:00Z")).await;
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    for bearer in [full.clone(), format!("{}.{}", token.id, token.secret)] {
        let req = Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header("authorization", format!("Bearer {bearer}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(review.to_string())))
            .unwrap();
        let (status, body) = send(&c, req).await;
        // whoever it is, it is not anonymous: 201 with the user, or 403 naming the user
        let text = String::from_utf8_lossy(&body);
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{text}");
        assert!(
            text.contains(&format!("system:bootstrap:{}", token.id)),
            "{status} {text}"
        );
    }
}

#[tokio::test]
async fn bootstrap_token_joins_a_node_and_the_server_token_still_does() {
    let c = cluster().await;
    let (_, full) = make_token(&c, Some("2099-01-01T00:00:00Z")).await;
    let (status, body) = join(&c, &full, "n1").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (status, body) = join(&c, &c.server_token, "n2").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn expired_bootstrap_token_is_refused_with_a_message_saying_so() {
    let c = cluster().await;
    let (_, full) = make_token(&c, Some("2020-01-01T00:00:00Z")).await;
    let (status, body) = join(&c, &full, "n1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message(&body).contains("expired"), "{}", message(&body));
}

#[tokio::test]
async fn deleted_bootstrap_token_is_refused_with_a_message_saying_so() {
    let c = cluster().await;
    let (token, full) = make_token(&c, None).await;
    Api::<Secret>::namespaced(c.admin.clone(), "kube-system")
        .delete(&BootstrapToken::secret_name(&token.id), &Default::default())
        .await
        .unwrap();
    let (status, body) = join(&c, &full, "n1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        message(&body).contains("does not exist"),
        "{}",
        message(&body)
    );
    // the binary endpoint refuses it the same way
    let (status, _) = get(&c, "/v1-mini/binary", Some(&full)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn install_script_is_served_without_authentication() {
    let c = cluster().await;
    let (status, body) = get(&c, "/install.sh", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with(b"#!/bin/sh"));
}

#[tokio::test]
async fn binary_endpoints_need_a_valid_join_token() {
    let c = cluster().await;
    let (_, bootstrap) = make_token(&c, None).await;
    let wrong_ca = format!("K10{}::server:{SECRET}", "0".repeat(64));
    for path in [
        "/v1-mini/binary",
        "/v1-mini/binary.sha256",
        "/v1-mini/images",
    ] {
        for bad in [
            None,
            Some("K10nope"),
            Some("wrong-secret"),
            Some(wrong_ca.as_str()),
        ] {
            let (status, _) = get(&c, path, bad).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {bad:?}");
        }
    }
    let want_sha = hex::encode(Sha256::digest(BINARY));
    for token in [&c.server_token, &bootstrap] {
        let (status, body) = get(&c, "/v1-mini/binary", Some(token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], BINARY);
        let (status, body) = get(&c, "/v1-mini/binary.sha256", Some(token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("{want_sha}  mini\n")
        );
    }
}

#[tokio::test]
async fn images_endpoints_list_and_serve_the_tarballs() {
    let c = cluster().await;
    let (status, body) = get(&c, "/v1-mini/images", Some(&c.server_token)).await;
    assert_eq!(status, StatusCode::OK);
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        list["images"],
        json!([{"name": "app.tar", "size": IMAGE.len(),
                "sha256": hex::encode(Sha256::digest(IMAGE))}])
    );
    let (status, body) = get(&c, "/v1-mini/images/app.tar", Some(&c.server_token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], IMAGE);
    for missing in ["/v1-mini/images/.half.part", "/v1-mini/images/nope.tar"] {
        let (status, _) = get(&c, missing, Some(&c.server_token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }
}

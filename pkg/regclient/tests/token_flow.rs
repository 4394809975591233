//! The `WWW-Authenticate: Bearer realm=…` token flow (Docker Hub, Harbor) and blob redirects to
//! storage hosts, against a small in-test HTTP server on loopback behaving like such a registry.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mini_regclient::{ClientConfig, Credentials, RegistryClient};

const BASIC_U_P: &str = "Basic dTpw"; // u:p
const CDN_BLOB: &str = "blob bytes from storage";

struct State {
    port: u16,
    token_requests: AtomicUsize,
}

fn reply(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn handle(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    if path == "/cdn/blob" {
        // Like a presigned storage URL: any Authorization header is refused.
        if !auth.is_empty() {
            return reply(400, "only one auth mechanism allowed");
        }
        return reply(200, CDN_BLOB);
    }
    if path == "/token" {
        state.token_requests.fetch_add(1, Ordering::SeqCst);
        if auth != BASIC_U_P {
            return reply(401, r#"{"details":"bad credentials"}"#);
        }
        assert!(query.contains("service=reg"), "{query}");
        let scope = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("scope="))
            .unwrap_or("");
        return reply(200, &format!(r#"{{"access_token":"tok-{scope}"}}"#));
    }
    let scope = "repository%3Aa%2Fb%3Apull";
    if auth == format!("Bearer tok-{scope}") {
        return match path {
            "/v2/" => reply(200, "{}"),
            "/v2/a/b/tags/list" => reply(200, r#"{"name":"a/b","tags":["v1","v2"]}"#),
            p if p.starts_with("/v2/a/b/blobs/") => Response::builder()
                .status(307)
                .header(
                    "location",
                    format!("http://localhost:{}/cdn/blob", state.port),
                )
                .body(Full::new(Bytes::new()))
                .unwrap(),
            _ => reply(
                404,
                r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#,
            ),
        };
    }
    Response::builder()
        .status(401)
        .header(
            "www-authenticate",
            format!(
                r#"Bearer realm="http://127.0.0.1:{}/token",service="reg",scope="repository:a/b:pull""#,
                state.port
            ),
        )
        .body(Full::new(Bytes::from(
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )))
        .unwrap()
}

async fn serve() -> Arc<State> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let state = Arc::new(State {
        port: listener.local_addr().unwrap().port(),
        token_requests: AtomicUsize::new(0),
    });
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let response = handle(&state, &req);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    state
}

#[tokio::test]
async fn bearer_challenge_with_basic_credentials_fetches_and_caches_token() {
    let state = serve().await;
    let mut config = ClientConfig::new(format!("http://127.0.0.1:{}", state.port));
    config.credentials = Credentials::Basic {
        username: "u".into(),
        password: "p".into(),
    };
    let client = RegistryClient::new(config).unwrap();
    assert_eq!(client.tags("a/b").await.unwrap(), vec!["v1", "v2"]);
    assert_eq!(client.tags("a/b").await.unwrap(), vec!["v1", "v2"]);
    assert_eq!(state.token_requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bearer_challenge_token_service_refusing_is_auth_error() {
    let state = serve().await;
    let mut config = ClientConfig::new(format!("http://127.0.0.1:{}", state.port));
    config.credentials = Credentials::Basic {
        username: "u".into(),
        password: "wrong".into(),
    };
    let err = RegistryClient::new(config)
        .unwrap()
        .tags("a/b")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.contains("token service refused"), "{text}");
}

#[tokio::test]
async fn registry_error_json_after_token_is_surfaced_with_code() {
    let state = serve().await;
    let mut config = ClientConfig::new(format!("http://127.0.0.1:{}", state.port));
    config.credentials = Credentials::Basic {
        username: "u".into(),
        password: "p".into(),
    };
    let client = RegistryClient::new(config).unwrap();
    client.ping().await.unwrap();
    let err = client.tags("a/b/c").await.unwrap_err();
    assert_eq!(err.code(), Some("NAME_UNKNOWN"), "{err}");
}

#[tokio::test]
async fn blob_redirect_to_other_host_is_followed_without_credentials() {
    let state = serve().await;
    let mut config = ClientConfig::new(format!("http://127.0.0.1:{}", state.port));
    config.credentials = Credentials::Basic {
        username: "u".into(),
        password: "p".into(),
    };
    let client = RegistryClient::new(config).unwrap();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(CDN_BLOB.as_bytes()))
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("blob");
    let size = client.download_blob("a/b", &digest, &out).await.unwrap();
    assert_eq!(size, CDN_BLOB.len() as u64);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), CDN_BLOB);

    // Content that does not hash to the digest asked for is refused and not left on disk.
    let wrong = format!("sha256:{}", "1".repeat(64));
    let err = client.download_blob("a/b", &wrong, &out).await.unwrap_err();
    assert!(err.to_string().contains("expected sha256:1111"), "{err}");
    assert!(!out.exists());
}

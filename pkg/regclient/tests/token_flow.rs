//! The `WWW-Authenticate: Bearer realm=…` token flow (Docker Hub, Harbor) against a small
//! in-test HTTP server on loopback that behaves like such a registry and its token service.

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

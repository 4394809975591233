//! Test helpers: a join server that speaks the API server's `/cacerts` and node-join protocol
//! over real TLS on loopback, backed by a throwaway cluster CA.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mini_certs::{CertAuthority, SubjectAltNames};

/// A loopback HTTPS server answering `/cacerts` and `POST /v1-mini/node-join`.
pub struct JoinServer {
    pub url: String,
    pub ca: Arc<CertAuthority>,
    pub secret: String,
    pub joins: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JoinServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JoinServer {
    pub async fn start() -> JoinServer {
        let ca = Arc::new(CertAuthority::generate("mini-test-ca").expect("ca"));
        let serving = ca
            .issue_server(
                "kube-apiserver",
                &SubjectAltNames {
                    dns: vec!["localhost".into()],
                    ips: vec!["127.0.0.1".parse().expect("ip")],
                },
            )
            .expect("serving cert");
        let tls = mini_certs::server_tls_config(&serving, ca.cert_pem()).expect("tls config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let secret = "s3cret".to_string();
        let joins = Arc::new(AtomicUsize::new(0));
        let passwords: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let state = (ca.clone(), secret.clone(), joins.clone(), passwords);
        let task = tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        JoinServer {
            url: format!("https://127.0.0.1:{}", addr.port()),
            ca,
            secret,
            joins,
            task,
        }
    }

    pub fn token(&self) -> String {
        mini_certs::JoinToken::format(self.ca.cert_pem(), &self.secret)
    }
}

type State = (
    Arc<CertAuthority>,
    String,
    Arc<AtomicUsize>,
    Arc<Mutex<HashMap<String, String>>>,
);

async fn handle(req: Request<hyper::body::Incoming>, state: State) -> Response<Full<Bytes>> {
    let (ca, secret, joins, passwords) = state;
    let reply = |code: StatusCode, body: String| {
        Response::builder()
            .status(code)
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    };
    match req.uri().path() {
        "/cacerts" => reply(StatusCode::OK, ca.cert_pem().to_string()),
        "/v1-mini/node-join" => {
            let auth = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if auth != format!("Bearer {secret}") {
                return reply(StatusCode::UNAUTHORIZED, "Unauthorized".into());
            }
            let body = req.into_body().collect().await.expect("body").to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let name = v["nodeName"].as_str().expect("name").to_string();
            let password = v["nodePassword"].as_str().expect("password").to_string();
            {
                let mut known = passwords.lock().expect("lock");
                if known.get(&name).is_some_and(|p| *p != password) {
                    return reply(
                        StatusCode::CONFLICT,
                        format!("node {name:?} is already joined by another machine"),
                    );
                }
                known.insert(name, password);
            }
            joins.fetch_add(1, Ordering::SeqCst);
            let client = ca
                .sign_csr(v["clientCSR"].as_str().expect("csr"), false, 30)
                .expect("sign client");
            let serving = ca
                .sign_csr(v["servingCSR"].as_str().expect("csr"), true, 30)
                .expect("sign serving");
            reply(
                StatusCode::OK,
                serde_json::json!({"clientCert": client, "servingCert": serving, "caCert": ca.cert_pem()})
                    .to_string(),
            )
        }
        _ => reply(StatusCode::NOT_FOUND, "not found".into()),
    }
}

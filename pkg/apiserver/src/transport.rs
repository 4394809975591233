//! Serving: TLS connections from a bound listener, and the in-process tower service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mini_rbac::UserInfo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::{ApiServer, ApiServerError};

/// Serves HTTPS on `listener` until `shutdown` is cancelled.
pub async fn serve(
    server: ApiServer,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> Result<(), ApiServerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "tls handshake failed");
                    return;
                }
            };
            let peer_user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|der| mini_certs::identity_from_der(der.as_ref()).ok())
                .map(|id| {
                    let mut groups = id.groups;
                    groups.push("system:authenticated".to_string());
                    UserInfo {
                        name: id.user,
                        groups,
                    }
                });
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let server = server.clone();
                let peer_user = peer_user.clone();
                async move {
                    let mut req = req;
                    req.extensions_mut()
                        .insert(crate::extension::RemoteAddr(remote));
                    if let Some(route) = server.streaming_route(req.uri().path()) {
                        let req = req.map(|b| b.map_err(std::io::Error::other).boxed_unsync());
                        return Ok::<_, Infallible>(route.handle(req, peer_user).await);
                    }
                    let (parts, body) = req.into_parts();
                    let bytes = match body.collect().await {
                        Ok(c) => c.to_bytes(),
                        Err(_) => Bytes::new(),
                    };
                    let req = Request::from_parts(parts, bytes);
                    Ok::<_, Infallible>(crate::handlers::handle(&server, req, peer_user).await)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "connection ended with error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}

/// Answers requests in-process as a fixed user: kube-rs clients for controllers and tests.
#[derive(Clone)]
pub struct LocalService {
    server: ApiServer,
    user: UserInfo,
}

impl LocalService {
    pub(crate) fn new(server: ApiServer, user: UserInfo) -> Self {
        LocalService { server, user }
    }
}

impl<B> tower::Service<Request<B>> for LocalService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Display,
{
    type Response = Response<Body>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Each request runs on a task of its own, as every HTTPS connection does: it completes
    /// even while its caller stops polling it (kube-runtime may park a request future while
    /// other streams make progress), so a lock it takes on the way (the RBAC reload's) can never
    /// be held by a future nobody polls.
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let server = self.server.clone();
        let user = self.user.clone();
        let handled = tokio::spawn(async move {
            if let Some(route) = server.streaming_route(req.uri().path()) {
                let req = req.map(|b| {
                    b.map_frame(|frame| {
                        frame.map_data(|mut data| {
                            use bytes::Buf;
                            data.copy_to_bytes(data.remaining())
                        })
                    })
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .boxed_unsync()
                });
                return Ok(route.handle(req, Some(user)).await);
            }
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .to_bytes();
            Ok(
                crate::handlers::handle(&server, Request::from_parts(parts, bytes), Some(user))
                    .await,
            )
        });
        Box::pin(async move {
            handled.await.map_err(|e| {
                std::io::Error::other(format!("in-process request task failed: {e}"))
            })?
        })
    }
}

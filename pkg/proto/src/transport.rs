//! The client side of gRPC over a unix socket (how mini reaches containerd's CRI plugin and its own API),
//! and the metadata header that selects a containerd namespace.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Request;

/// The metadata key containerd reads the namespace of a request from.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// A connector for [`Endpoint::connect_with_connector`] (or its lazy variant) that opens the unix socket
/// at `path` whatever URI the endpoint has.
pub fn unix_connector(
    path: impl Into<PathBuf>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<UnixStream>,
    Error = std::io::Error,
    Future = impl std::future::Future<Output = Result<TokioIo<UnixStream>, std::io::Error>> + Send,
> + Clone
       + Send
       + 'static {
    let path = Arc::new(path.into());
    tower::service_fn(move |_: Uri| {
        let path = Arc::clone(&path);
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path.as_path()).await?)) }
    })
}

/// Connects a channel to the gRPC server listening on the unix socket at `path` (fails when nothing listens).
pub async fn connect_unix(path: &Path) -> Result<Channel, tonic::transport::Error> {
    // The URI is never dialled: the connector opens the socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(unix_connector(path))
        .await
}

/// Wraps `message` in a request for the containerd namespace `namespace` (e.g. `k8s.io`, the CRI plugin's).
///
/// `namespace` must be a valid header value (visible ASCII); containerd namespace names always are.
pub fn with_namespace<T>(message: T, namespace: &'static str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(NAMESPACE_HEADER, MetadataValue::from_static(namespace));
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_namespace_sets_containerd_namespace_header() {
        let request = with_namespace((), "k8s.io");
        let value = request.metadata().get(NAMESPACE_HEADER).expect("header");
        assert_eq!(value.to_str().expect("ascii"), "k8s.io");
    }

    #[tokio::test]
    async fn connect_unix_without_listener_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = connect_unix(&dir.path().join("none.sock")).await;
        assert!(result.is_err(), "connected to a socket nobody listens on");
    }

    #[tokio::test]
    async fn unix_connector_opens_the_socket_whatever_the_uri() {
        use tower::ServiceExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        let connector = unix_connector(&path);
        connector
            .oneshot(Uri::from_static("http://example.invalid:1"))
            .await
            .expect("connect");
        accept.await.expect("join").expect("accept");
    }
}

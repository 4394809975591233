//! Load test results on several servers: only the server whose controller runs a LoadTest
//! receives its generators' reports, so the others ask it (and every other live server) for
//! results they do not hold, and a finished run's results are copied to every live server so
//! they outlive the server that took them. Servers talk over HTTPS with their own client
//! certificate (the API server's, in `system:masters`) and the cluster CA, under
//! [`PEER_PREFIX`]; nobody else may use those paths.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use mini_rbac::UserInfo;

use crate::results::RunResults;

/// The servers' own paths: `GET|PUT {PEER_PREFIX}namespaces/NS/loadtests/NAME/results`.
pub const PEER_PREFIX: &str = "/loadtest/v1/peer/";
/// The largest results document a server takes from another (an hour of seconds with their
/// histograms stays well below).
pub const MAX_RESULTS_BYTES: usize = 64 << 20;
/// How long one request to another server may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// The path of `namespace/name`'s results on another server.
pub fn peer_path(namespace: &str, name: &str) -> String {
    format!("{PEER_PREFIX}namespaces/{namespace}/loadtests/{name}/results")
}

/// Whether `user` is a server of this cluster (its API server client certificate).
pub fn is_server(user: &UserInfo) -> bool {
    mini_certs::is_server_identity(&user.name, &user.groups)
}

/// Whether `text` may name a namespace or a LoadTest (a DNS subdomain: it becomes a path on
/// disk).
pub fn is_object_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !text.starts_with('.')
        && !text.contains("..")
}

/// The other servers, as the results endpoint and the run registry use them.
pub trait OtherServers: Send + Sync + 'static {
    /// The results of `namespace/name` from the first other live server that holds them
    /// (with `since`, only the seconds from there on and no histograms).
    fn fetch(
        &self,
        namespace: &str,
        name: &str,
        since: Option<u32>,
    ) -> BoxFuture<'static, Option<RunResults>>;

    /// Gives every other live server a copy of a finished run's results; returns how many
    /// stored it.
    fn share(&self, results: &RunResults) -> BoxFuture<'static, usize>;
}

/// [`OtherServers`] over HTTPS: the live servers are the `kube-system` Leases of `mini-peers`
/// other than this server's own endpoint.
pub struct HttpServers {
    client: kube::Client,
    own: SocketAddr,
    https: mini_peers::PeerClient,
}

impl HttpServers {
    /// `tls`: the server's client certificate and the cluster CA (swapped online).
    pub fn new(client: kube::Client, own: SocketAddr, tls: &rustls::ClientConfig) -> Arc<Self> {
        let https = mini_peers::peer_client(tls);
        Arc::new(HttpServers { client, own, https })
    }

    async fn others(client: kube::Client, own: SocketAddr) -> Vec<SocketAddr> {
        match mini_peers::live_servers(&client).await {
            Ok(live) => live.into_iter().filter(|a| *a != own).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "load test results: listing the other servers failed");
                Vec::new()
            }
        }
    }
}

/// Sends `request`, giving the status and at most [`MAX_RESULTS_BYTES`] of the body.
async fn exchange(
    https: &mini_peers::PeerClient,
    request: http::Request<Full<Bytes>>,
) -> Result<(u16, Bytes), String> {
    let answer = async {
        let response = https.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESULTS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(PEER_TIMEOUT, answer)
        .await
        .map_err(|_| format!("no answer within {}s", PEER_TIMEOUT.as_secs()))?
}

impl OtherServers for HttpServers {
    fn fetch(
        &self,
        namespace: &str,
        name: &str,
        since: Option<u32>,
    ) -> BoxFuture<'static, Option<RunResults>> {
        let (client, own, https) = (self.client.clone(), self.own, self.https.clone());
        let mut path = peer_path(namespace, name);
        if let Some(second) = since {
            path.push_str(&format!("?since={second}"));
        }
        Box::pin(async move {
            for peer in Self::others(client, own).await {
                let Ok(request) = http::Request::get(format!("https://{peer}{path}"))
                    .body(Full::new(Bytes::new()))
                else {
                    return None;
                };
                match exchange(&https, request).await {
                    Ok((200, body)) => match serde_json::from_slice::<RunResults>(&body) {
                        Ok(results) => return Some(results),
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "load test results from another server do not parse; skipped")
                        }
                    },
                    Ok((404, _)) => {}
                    Ok((status, body)) => tracing::debug!(
                        %peer, status, answer = %String::from_utf8_lossy(&body),
                        "another server did not give load test results"
                    ),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "asking another server for load test results failed")
                    }
                }
            }
            None
        })
    }

    fn share(&self, results: &RunResults) -> BoxFuture<'static, usize> {
        let (client, own, https) = (self.client.clone(), self.own, self.https.clone());
        let path = peer_path(&results.namespace, &results.name);
        let body = Bytes::from(serde_json::to_vec(results).unwrap_or_default());
        Box::pin(async move {
            let mut stored = 0;
            for peer in Self::others(client, own).await {
                let Ok(request) = http::Request::put(format!("https://{peer}{path}"))
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body.clone()))
                else {
                    return stored;
                };
                match exchange(&https, request).await {
                    Ok((200..=299, _)) => stored += 1,
                    Ok((status, answer)) => tracing::warn!(
                        %peer, status, answer = %String::from_utf8_lossy(&answer),
                        "another server refused a copy of load test results"
                    ),
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "copying load test results to another server failed")
                    }
                }
            }
            stored
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_name_path_tricks_are_refused() {
        assert!(is_object_name("web-1.v2"));
        for bad in ["", "..", "../etc", "a/b", "A", ".hidden", "a..b", "a b"] {
            assert!(!is_object_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn is_server_needs_the_server_user_in_masters() {
        let user = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert!(is_server(&user(
            mini_certs::APISERVER_CLIENT_USER,
            &[mini_certs::MASTERS_GROUP]
        )));
        assert!(!is_server(&user(mini_certs::APISERVER_CLIENT_USER, &[])));
        assert!(!is_server(&user("admin", &[mini_certs::MASTERS_GROUP])));
    }
}

//! The node API's backend in a real agent: the kubelet (pods, containers, streaming URLs),
//! mini-logs (reading log files) and the stats sampler.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use mini_kubelet::{Kubelet, KubeletError};
use mini_streams::ExecOptions;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::server::{BackendError, Body, LogQuery, NodeBackend, PodNet};
use crate::stats::StatsSampler;

pub(crate) struct KubeletBackend {
    pub kubelet: Arc<Kubelet>,
    pub stats: Arc<StatsSampler>,
    pub client: kube::Client,
    pub node_name: String,
    pub local_path: mini_localpath::LocalPathDir,
}

fn map_err(e: KubeletError) -> BackendError {
    match e {
        KubeletError::NotFound(m) => BackendError::NotFound(m),
        KubeletError::BadRequest(m) => BackendError::BadRequest(m),
        other => BackendError::Internal(other.to_string()),
    }
}

#[async_trait]
impl NodeBackend for KubeletBackend {
    async fn remove_local_path(&self, name: &str) -> Result<bool, BackendError> {
        let dir = self.local_path.clone();
        let name = name.to_string();
        let removed = tokio::task::spawn_blocking(move || dir.remove(&name))
            .await
            .map_err(|e| BackendError::Internal(format!("removing a local-path directory: {e}")))?;
        match removed {
            Ok(r) => Ok(r),
            Err(e @ mini_localpath::DirError::Io { .. }) => {
                Err(BackendError::Internal(e.to_string()))
            }
            Err(e) => Err(BackendError::BadRequest(e.to_string())),
        }
    }

    async fn container_log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<PathBuf, BackendError> {
        self.kubelet
            .container_log_path(namespace, pod, container, previous)
            .await
            .map_err(map_err)
    }

    async fn container_running(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<bool, BackendError> {
        self.kubelet
            .container_running(namespace, pod, container)
            .await
            .map_err(map_err)
    }

    async fn exec_url(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: Vec<String>,
        o: ExecOptions,
    ) -> Result<String, BackendError> {
        self.kubelet
            .exec_url(
                namespace, pod, container, command, o.tty, o.stdin, o.stdout, o.stderr,
            )
            .await
            .map_err(map_err)
    }

    async fn attach_url(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        o: ExecOptions,
    ) -> Result<String, BackendError> {
        self.kubelet
            .attach_url(
                namespace, pod, container, o.tty, o.stdin, o.stdout, o.stderr,
            )
            .await
            .map_err(map_err)
    }

    async fn pod_network(&self, namespace: &str, pod: &str) -> Result<PodNet, BackendError> {
        let net = self
            .kubelet
            .pod_network(namespace, pod)
            .await
            .map_err(map_err)?;
        Ok(PodNet {
            ip: net.ip,
            netns_path: net.netns_path,
        })
    }

    async fn stats_summary(&self) -> Result<Value, BackendError> {
        self.stats.summary().await.map_err(BackendError::Internal)
    }

    async fn stats_live(
        &self,
        pods: &[mini_nodestats::PodKey],
    ) -> Result<mini_nodestats::LiveReading, BackendError> {
        self.stats.live(pods).await.map_err(BackendError::Internal)
    }

    async fn metrics(&self) -> Result<String, BackendError> {
        Ok(self.stats.metrics_text())
    }

    async fn pods(&self) -> Result<Value, BackendError> {
        let params = ListParams::default().fields(&format!("spec.nodeName={}", self.node_name));
        let list = Api::<Pod>::all(self.client.clone())
            .list(&params)
            .await
            .map_err(|e| BackendError::Internal(format!("listing this node's pods: {e}")))?;
        let mut v =
            serde_json::to_value(list).map_err(|e| BackendError::Internal(e.to_string()))?;
        v["kind"] = "PodList".into();
        v["apiVersion"] = "v1".into();
        Ok(v)
    }

    async fn commit_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<mini_cri::ContainerLayer, BackendError> {
        self.kubelet
            .commit_container(namespace, pod, container)
            .await
            .map_err(map_err)
    }

    async fn read_log(
        &self,
        path: PathBuf,
        q: LogQuery,
        stop: CancellationToken,
    ) -> Result<Body, BackendError> {
        let since_time = match (&q.since_time, q.since_seconds) {
            (Some(t), _) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|_| {
                        BackendError::BadRequest(format!("sinceTime {t:?} is not RFC 3339"))
                    })?
                    .with_timezone(&chrono::Utc),
            ),
            (None, Some(s)) => Some(chrono::Utc::now() - chrono::Duration::seconds(s.max(0))),
            (None, None) => None,
        };
        if !path.exists() {
            return Err(BackendError::NotFound(format!(
                "log file {} does not exist",
                path.display()
            )));
        }
        let opts = mini_logs::LogOptions {
            follow: q.follow,
            tail_lines: q.tail_lines,
            since_time,
            timestamps: q.timestamps,
            limit_bytes: q.limit_bytes,
        };
        let stream = mini_logs::read_log(path, opts, stop).map(|chunk| {
            chunk
                .map(hyper::body::Frame::data)
                .map_err(std::io::Error::other)
        });
        Ok(BodyExt::boxed(http_body_util::StreamBody::new(stream)))
    }
}

//! The load test generator image, built from this binary and imported into this node's
//! containerd only when a generator pod (label `loadtest.mini.dev/run`) is bound here: a node
//! that never runs a load test never spends the disk and time on it.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio_util::sync::CancellationToken;

/// The label the load test controller puts on generator pods.
const RUN_LABEL: &str = "loadtest.mini.dev/run";

/// Watches this node's generator pods and imports the image at the first one.
pub async fn run(
    client: kube::Client,
    node_name: String,
    socket: PathBuf,
    state_dir: PathBuf,
    shutdown: CancellationToken,
) {
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default()
        .labels(RUN_LABEL)
        .fields(&format!("spec.nodeName={node_name}"));
    let stream = watcher(pods, config).default_backoff().applied_objects();
    futures::pin_mut!(stream);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(_)) => break,
            Some(Err(e)) => tracing::debug!(error = %e, "watching generator pods failed; retrying"),
            None => return,
        }
    }
    loop {
        match import(&socket, &state_dir).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, "importing the load test generator image failed; retrying in 10s")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

async fn import(socket: &std::path::Path, state_dir: &std::path::Path) -> Result<(), String> {
    let name = mini_images::loadtest_image().map_err(|e| e.to_string())?;
    let importer = mini_images::ImageImporter::connect(socket, state_dir)
        .await
        .map_err(|e| e.to_string())?;
    if importer
        .ensure_self_image(&name)
        .await
        .map_err(|e| e.to_string())?
    {
        tracing::info!(image = %name, "imported the load test generator image built from this binary");
    }
    Ok(())
}

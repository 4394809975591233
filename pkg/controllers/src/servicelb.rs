//! The ServiceLB controller (k3s's klipper-lb idea without the DaemonSet): every
//! `type: LoadBalancer` Service without a `loadBalancerClass` gets the InternalIPs of the Ready
//! nodes in `status.loadBalancer.ingress`, kept up to date as nodes come, go and change
//! readiness. Each node's proxy answers on those addresses (`service-ips` map entries). A
//! Service that stops being a LoadBalancer has the ingress it was given removed.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use crate::{Context, ControllerError};

struct State {
    client: kube::Client,
    nodes: Store<Node>,
}

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let (nodes, writer) = reflector::store::<Node>();
    let node_changes = reflector::reflector(
        writer,
        watcher(
            Api::<Node>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(|res| async move { res.ok().map(|_| ()) });
    let state = Arc::new(State {
        client: ctx.client.clone(),
        nodes,
    });
    let controller = Controller::new(
        Api::<Service>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    // Any node change can change every LoadBalancer's addresses.
    .reconcile_all_on(node_changes)
    .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned());
    controller
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "servicelb reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(svc: Arc<Service>, err: &ControllerError, _: Arc<State>) -> Action {
    tracing::warn!(service = %svc.name_any(), error = %err, "servicelb failed");
    Action::requeue(Duration::from_secs(5))
}

/// Whether ServiceLB owns the Service's load-balancer status.
fn managed(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

/// The InternalIPs of the Ready nodes, sorted and deduplicated.
pub(crate) fn ready_node_ips(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut ips: Vec<IpAddr> = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter_map(|n| n.status.as_ref())
        .filter(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips.iter().map(IpAddr::to_string).collect()
}

fn current_ingress(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

async fn reconcile(svc: Arc<Service>, state: Arc<State>) -> Result<Action, ControllerError> {
    // The node watch is driven by the controller itself: until its first list is in, an
    // empty cache would wrongly take every address away.
    if futures::FutureExt::now_or_never(state.nodes.wait_until_ready()).is_none() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let current = current_ingress(&svc);
    let wanted = if managed(&svc) {
        ready_node_ips(&state.nodes.state())
    } else if svc
        .spec
        .as_ref()
        .is_some_and(|s| s.type_.as_deref() != Some("LoadBalancer"))
        && !current.is_empty()
    {
        Vec::new() // no longer a LoadBalancer: take back the addresses
    } else {
        return Ok(Action::await_change());
    };
    if wanted == current || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ingress: Vec<serde_json::Value> = wanted
        .iter()
        .map(|ip| serde_json::json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}});
    let api: Api<Service> =
        Api::namespaced(state.client.clone(), &svc.namespace().unwrap_or_default());
    match api
        .patch_status(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            tracing::info!(service = %svc.name_any(), ingress = ?wanted, "load balancer addresses updated");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ControllerConfig;
    use kube::api::{DeleteParams, PostParams};
    use mini_testenv::TestEnv;
    use tokio_util::sync::CancellationToken;

    async fn add_node(api: &Api<Node>, name: &str, ip: &str, ready: bool) {
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name}
        }))
        .expect("node json");
        api.create(&PostParams::default(), &node)
            .await
            .expect("create node");
        set_ready(api, name, ip, ready).await;
    }

    async fn set_ready(api: &Api<Node>, name: &str, ip: &str, ready: bool) {
        let status = serde_json::json!({"status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                            "lastHeartbeatTime": "2024-01-01T00:00:00Z",
                            "lastTransitionTime": "2024-01-01T00:00:00Z"}]
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("node status");
    }

    fn service(name: &str, kind: &str, class: Option<&str>) -> Service {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": kind, "loadBalancerClass": class,
                     "selector": {"app": name}, "ports": [{"port": 80}]}
        }))
        .expect("service json")
    }

    async fn wait_ingress(api: &Api<Service>, name: &str, want: &[&str]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let svc = api.get(name).await.expect("get service");
            let got = current_ingress(&svc);
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: ingress {got:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[test]
    fn ready_node_ips_takes_internal_ips_of_ready_nodes_sorted() {
        let node = |name: &str, ip: &str, ready: &str| -> Arc<Node> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                             {"type": "ExternalIP", "address": "203.0.113.1"}],
                               "conditions": [{"type": "Ready", "status": ready}]}
                }))
                .expect("node json"),
            )
        };
        let nodes = vec![
            node("b", "10.77.0.12", "True"),
            node("a", "10.77.0.11", "True"),
            node("c", "10.77.0.13", "Unknown"),
        ];
        assert_eq!(ready_node_ips(&nodes), vec!["10.77.0.11", "10.77.0.12"]);
    }

    #[tokio::test]
    async fn servicelb_sets_ready_node_ips_and_follows_node_changes() {
        let env = TestEnv::start().await;
        let token = CancellationToken::new();
        tokio::spawn(run(Arc::new(Context {
            client: env.controllers_client(),
            config: ControllerConfig::default(),
            shutdown: token.clone(),
        })));
        let nodes: Api<Node> = Api::all(env.admin_client());
        let services: Api<Service> = Api::namespaced(env.admin_client(), "default");
        add_node(&nodes, "n1", "10.77.0.11", true).await;
        add_node(&nodes, "n2", "10.77.0.12", true).await;
        add_node(&nodes, "n3", "10.77.0.13", false).await;
        for svc in [
            service("lb", "LoadBalancer", None),
            service("classy", "LoadBalancer", Some("example.com/other")),
            service("plain", "ClusterIP", None),
        ] {
            services
                .create(&PostParams::default(), &svc)
                .await
                .expect("create service");
        }
        wait_ingress(&services, "lb", &["10.77.0.11", "10.77.0.12"]).await;

        set_ready(&nodes, "n3", "10.77.0.13", true).await;
        wait_ingress(&services, "lb", &["10.77.0.11", "10.77.0.12", "10.77.0.13"]).await;
        nodes
            .delete("n1", &DeleteParams::default())
            .await
            .expect("delete node");
        wait_ingress(&services, "lb", &["10.77.0.12", "10.77.0.13"]).await;
        set_ready(&nodes, "n2", "10.77.0.12", false).await;
        wait_ingress(&services, "lb", &["10.77.0.13"]).await;

        // Other load balancers' and non-LoadBalancer Services' status is left alone.
        assert!(current_ingress(&services.get("classy").await.expect("get")).is_empty());
        assert!(current_ingress(&services.get("plain").await.expect("get")).is_empty());

        // A Service that stops being a LoadBalancer gives its addresses back.
        let to_node_port = serde_json::json!({"spec": {"type": "NodePort"}});
        services
            .patch("lb", &PatchParams::default(), &Patch::Merge(&to_node_port))
            .await
            .expect("make lb a NodePort service");
        wait_ingress(&services, "lb", &[]).await;
        token.cancel();
    }
}

//! The endpointslice controller: publishes the pods a Service selects as
//! discovery.k8s.io/v1 EndpointSlices (IPv4, at most 100 endpoints each, one set of slices
//! per distinct resolved port set), updating existing slices in place and deleting extras.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::endpoints::{
    event_object, find_port, is_conflict, is_not_found, key_of, last_change_time, managed_selector,
    pod_hostname, pod_ip, pod_ref, reflect, rfc3339, selected_pods, service_labels,
    services_for_pod, should_pod_be_in_endpoints, sleep_until, Key, WorkQueue,
    TRIGGER_TIME_ANNOTATION,
};
use crate::{Context, ControllerError};

pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub(crate) const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub(crate) const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Upstream's default `--max-endpoints-per-slice`.
const MAX_ENDPOINTS_PER_SLICE: usize = 100;
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The desired endpoints of one port set.
struct Group {
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
}

/// What to write: slices to update (name, ports, endpoints), to create, and to delete.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    update: Vec<(String, Vec<EndpointPort>, Vec<Endpoint>)>,
    create: Vec<(Vec<EndpointPort>, Vec<Endpoint>)>,
    delete: Vec<String>,
}

fn ports_key(ports: &[EndpointPort]) -> String {
    let mut p = ports.to_vec();
    sort_ports(&mut p);
    serde_json::to_string(&p).unwrap_or_default()
}

fn sort_ports(ports: &mut [EndpointPort]) {
    ports.sort_by(|a, b| (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol)));
}

/// What identifies an endpoint across updates: its pod, else its first address.
fn endpoint_key(ep: &Endpoint) -> String {
    ep.target_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .or_else(|| ep.addresses.first().cloned())
        .unwrap_or_default()
}

/// Spreads the desired endpoints over the existing slices (kept in place where their
/// endpoints still exist), recycling emptied slices before creating new ones, and keeping a
/// single empty placeholder slice when there is nothing to publish.
fn plan(existing: &[EndpointSlice], desired: Vec<Group>) -> Plan {
    let mut existing: Vec<&EndpointSlice> = existing.iter().collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut plan = Plan::default();
    let mut spare: Vec<String> = Vec::new();
    let mut used: Vec<bool> = vec![false; existing.len()];
    for group in desired {
        let key = ports_key(&group.ports);
        let mut remaining: Vec<Option<Endpoint>> = group.endpoints.into_iter().map(Some).collect();
        let index: HashMap<String, usize> = remaining
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (endpoint_key(e), i)))
            .collect();
        let mut kept: Vec<(String, Vec<Endpoint>)> = Vec::new();
        for (i, slice) in existing.iter().enumerate() {
            if used[i]
                || slice.address_type != "IPv4"
                || ports_key(slice.ports.as_deref().unwrap_or_default()) != key
            {
                continue;
            }
            used[i] = true;
            let mut eps = Vec::new();
            for ep in &slice.endpoints {
                if eps.len() >= MAX_ENDPOINTS_PER_SLICE {
                    break;
                }
                if let Some(&j) = index.get(&endpoint_key(ep)) {
                    if let Some(e) = remaining[j].take() {
                        eps.push(e);
                    }
                }
            }
            kept.push((slice.metadata.name.clone().unwrap_or_default(), eps));
        }
        let mut rest = remaining.into_iter().flatten();
        for (_, eps) in kept.iter_mut().filter(|(_, eps)| !eps.is_empty()) {
            while eps.len() < MAX_ENDPOINTS_PER_SLICE {
                let Some(e) = rest.next() else { break };
                eps.push(e);
            }
        }
        for (name, eps) in kept.iter_mut().filter(|(_, eps)| eps.is_empty()) {
            while eps.len() < MAX_ENDPOINTS_PER_SLICE {
                let Some(e) = rest.next() else { break };
                eps.push(e);
            }
            if eps.is_empty() {
                spare.push(name.clone());
            }
        }
        for (name, eps) in kept.into_iter().filter(|(_, eps)| !eps.is_empty()) {
            plan.update.push((name, group.ports.clone(), eps));
        }
        let rest: Vec<Endpoint> = rest.collect();
        for chunk in rest.chunks(MAX_ENDPOINTS_PER_SLICE) {
            plan.create.push((group.ports.clone(), chunk.to_vec()));
        }
    }
    for (i, slice) in existing.iter().enumerate() {
        if !used[i] {
            spare.push(slice.metadata.name.clone().unwrap_or_default());
        }
    }
    spare.sort();
    if plan.update.is_empty() && plan.create.is_empty() {
        plan.create.push((Vec::new(), Vec::new()));
    }
    // recycle slices that would be deleted instead of creating new ones
    let mut creates = std::mem::take(&mut plan.create).into_iter();
    for name in spare {
        match creates.next() {
            Some((ports, eps)) => plan.update.push((name, ports, eps)),
            None => plan.delete.push(name),
        }
    }
    plan.create = creates.collect();
    plan
}

/// The endpoint of `pod` for `svc`, with upstream's ready/serving/terminating semantics.
fn endpoint_for(pod: &Pod, svc: &Service, nodes: &Store<Node>) -> Option<Endpoint> {
    let ip = pod_ip(pod)?;
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let serving = mini_runtime::pod::is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let mut ready = publish || serving;
    if terminating && !publish {
        ready = false;
    }
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let zone = node_name
        .as_ref()
        .and_then(|n| nodes.get(&ObjectRef::new(n)))
        .and_then(|n| n.labels().get(ZONE_LABEL).cloned());
    Some(Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: pod_hostname(pod, svc),
        node_name,
        target_ref: Some(pod_ref(pod)),
        zone,
        ..Default::default()
    })
}

/// The desired endpoints of `svc`, grouped by the port set each pod resolves to.
fn desired_groups(svc: &Service, pods: &[Arc<Pod>], nodes: &Store<Node>) -> Vec<Group> {
    let service_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let Some(ep) = endpoint_for(pod, svc, nodes) else {
            continue;
        };
        let mut ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|sp| {
                find_port(pod, sp).map(|n| EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(n),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        sort_ports(&mut ports);
        groups
            .entry(ports_key(&ports))
            .or_insert_with(|| Group {
                ports,
                endpoints: Vec::new(),
            })
            .endpoints
            .push(ep);
    }
    groups.into_values().collect()
}

/// Labels every slice of `svc` carries.
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = service_labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    labels
}

fn same_content(slice: &EndpointSlice, ports: &[EndpointPort], eps: &[Endpoint]) -> bool {
    let mut current_ports = slice.ports.clone().unwrap_or_default();
    for p in &mut current_ports {
        if p.protocol.is_none() {
            p.protocol = Some("TCP".into());
        }
    }
    ports_key(&current_ports) == ports_key(ports) && slice.endpoints == eps
}

/// Brings the EndpointSlices of service `key` in line with the pods it selects.
async fn sync_service(
    ctx: &Context,
    services: &Store<Service>,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
    key: &Key,
) -> Result<(), ControllerError> {
    let (ns, name) = key;
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), ns);
    let existing = api
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={CONTROLLER_NAME}"
        )))
        .await?
        .items;
    let Some(svc) = services.get(&ObjectRef::new(name).within(ns)) else {
        // owner references let the garbage collector do this too; doing it here keeps
        // the service's endpoints from outliving it when the collector lags
        for slice in existing {
            match api
                .delete(&slice.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(());
    };
    if managed_selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let selected = selected_pods(pods, &svc);
    let plan = plan(&existing, desired_groups(&svc, &selected, nodes));
    let labels = slice_labels(&svc);
    let owner = mini_runtime::owner::controller_ref(svc.as_ref());
    let trigger = last_change_time(&svc, &selected).map(|t| rfc3339(&t));
    for (slice_name, ports, eps) in plan.update {
        let Some(current) = existing
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(&slice_name))
        else {
            continue;
        };
        let owned = current
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.uid == owner.uid));
        let same_labels = current.metadata.labels.clone().unwrap_or_default() == labels;
        if owned && same_labels && same_content(current, &ports, &eps) {
            continue;
        }
        let mut next = current.clone();
        if !same_content(current, &ports, &eps) {
            if let Some(t) = &trigger {
                next.metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(TRIGGER_TIME_ANNOTATION.into(), t.clone());
            }
        }
        next.metadata.labels = Some(labels.clone());
        if !owned {
            next.metadata.owner_references = Some(vec![owner.clone()]);
        }
        next.ports = Some(ports);
        next.endpoints = eps;
        api.replace(&slice_name, &PostParams::default(), &next)
            .await?;
    }
    for (ports, eps) in plan.create {
        let base: String = name.chars().take(57).collect();
        let slice = EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{base}-")),
                namespace: Some(ns.clone()),
                labels: Some(labels.clone()),
                annotations: trigger
                    .as_ref()
                    .map(|t| BTreeMap::from([(TRIGGER_TIME_ANNOTATION.to_string(), t.clone())])),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps,
            ports: Some(ports),
        };
        api.create(&PostParams::default(), &slice).await?;
    }
    for slice_name in plan.delete {
        match api.delete(&slice_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

enum Msg {
    Service(Box<watcher::Event<Service>>),
    Pod(Box<watcher::Event<Pod>>),
    Node(Box<watcher::Event<Node>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}

/// Runs the endpointslice controller until shutdown.
pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let (services, svc_events) = reflect(Api::<Service>::all(client.clone()), Default::default());
    let (pods, pod_events) = reflect(Api::<Pod>::all(client.clone()), Default::default());
    let (nodes, node_events) = reflect(Api::<Node>::all(client.clone()), Default::default());
    let (_slices, slice_events) = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}")),
    );
    let mut events = futures::stream::select_all(vec![
        svc_events.map(|e| Msg::Service(Box::new(e))).boxed(),
        pod_events.map(|e| Msg::Pod(Box::new(e))).boxed(),
        node_events.map(|e| Msg::Node(Box::new(e))).boxed(),
        slice_events.map(|e| Msg::Slice(Box::new(e))).boxed(),
    ]);
    let mut synced = [false; 4];
    let mut started = false;
    let mut queue: WorkQueue<Key> = WorkQueue::default();
    let mut resync = tokio::time::interval(Duration::from_secs(300));
    resync.tick().await;
    loop {
        queue.promote_due();
        let deadline = queue.next_deadline();
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return Ok(()),
            msg = events.next() => {
                let Some(msg) = msg else {
                    return Err(ControllerError::Other("endpointslice watch streams ended".into()));
                };
                match msg {
                    Msg::Service(ev) => {
                        if matches!(*ev, watcher::Event::InitDone) { synced[0] = true; }
                        if let Some(s) = event_object(&ev) { queue.add(key_of(s)); }
                    }
                    Msg::Pod(ev) => {
                        if matches!(*ev, watcher::Event::InitDone) { synced[1] = true; }
                        if let Some(p) = event_object(&ev) {
                            for k in services_for_pod(&services, p) { queue.add(k); }
                        }
                    }
                    Msg::Node(ev) => {
                        if matches!(*ev, watcher::Event::InitDone) { synced[2] = true; }
                    }
                    Msg::Slice(ev) => {
                        if matches!(*ev, watcher::Event::InitDone) { synced[3] = true; }
                        if let Some(s) = event_object(&ev) {
                            if let Some(svc) = s.labels().get(SERVICE_NAME_LABEL) {
                                queue.add((s.namespace().unwrap_or_default(), svc.clone()));
                            }
                        }
                    }
                }
                if !started && synced.iter().all(|s| *s) {
                    started = true;
                    for s in services.state() { queue.add(key_of(s.as_ref())); }
                }
            }
            _ = std::future::ready(()), if started && queue.has_ready() => {
                let Some(key) = queue.pop() else { continue };
                match sync_service(&ctx, &services, &pods, &nodes, &key).await {
                    Ok(()) => queue.forget(&key),
                    Err(e) => {
                        if !matches!(&e, ControllerError::Kube(k) if is_conflict(k)) {
                            tracing::warn!(namespace = %key.0, service = %key.1, error = %e, "syncing endpoint slices failed");
                        }
                        queue.retry(key);
                    }
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {}
            _ = resync.tick(), if started => {
                for s in services.state() { queue.add(key_of(s.as_ref())); }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::tests::{eventually, pod, service, set_pod_status, start};
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use mini_testenv::TestEnv;

    fn run_boxed(
        c: Arc<Context>,
    ) -> futures::future::BoxFuture<'static, Result<(), ControllerError>> {
        use futures::FutureExt;
        run(c).boxed()
    }

    fn ep(uid: &str, ip: &str) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            target_ref: Some(ObjectReference {
                uid: Some(uid.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn port(n: i32) -> EndpointPort {
        EndpointPort {
            name: Some("http".into()),
            port: Some(n),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }
    }

    fn slice(name: &str, ports: Vec<EndpointPort>, eps: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps,
            ports: Some(ports),
        }
    }

    #[test]
    fn plan_with_250_endpoints_creates_three_slices_of_at_most_100() {
        let eps: Vec<Endpoint> = (0..250)
            .map(|i| ep(&format!("u{i}"), &format!("10.0.{}.{}", i / 200, i % 200)))
            .collect();
        let p = plan(
            &[],
            vec![Group {
                ports: vec![port(80)],
                endpoints: eps,
            }],
        );
        assert!(p.update.is_empty() && p.delete.is_empty());
        let sizes: Vec<usize> = p.create.iter().map(|(_, e)| e.len()).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }

    #[test]
    fn plan_updates_existing_slice_in_place_and_recycles_other_port_sets() {
        let existing = vec![
            slice(
                "s-a",
                vec![port(80)],
                vec![ep("u1", "10.0.0.1"), ep("u2", "10.0.0.2")],
            ),
            slice("s-b", vec![port(81)], vec![ep("u3", "10.0.0.3")]),
            slice("s-c", vec![port(82)], vec![]),
        ];
        let p = plan(
            &existing,
            vec![
                Group {
                    ports: vec![port(80)],
                    endpoints: vec![ep("u2", "10.0.0.9"), ep("u4", "10.0.0.4")],
                },
                Group {
                    ports: vec![port(90)],
                    endpoints: vec![ep("u5", "10.0.0.5")],
                },
            ],
        );
        assert_eq!(p.update.len(), 2);
        assert_eq!(p.update[0].0, "s-a");
        let ips: Vec<&str> = p.update[0]
            .2
            .iter()
            .map(|e| e.addresses[0].as_str())
            .collect();
        assert_eq!(ips, ["10.0.0.9", "10.0.0.4"]);
        assert_eq!(
            (p.update[1].0.as_str(), p.update[1].1.clone()),
            ("s-b", vec![port(90)])
        );
        assert_eq!(p.delete, vec!["s-c".to_string()]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn plan_without_endpoints_keeps_one_placeholder() {
        let p = plan(&[], Vec::new());
        assert_eq!(p.create, vec![(Vec::new(), Vec::new())]);
        let existing = vec![
            slice("s-a", vec![port(80)], vec![ep("u1", "10.0.0.1")]),
            slice("s-b", vec![port(80)], vec![]),
        ];
        let p = plan(&existing, Vec::new());
        assert_eq!(p.update, vec![("s-a".to_string(), Vec::new(), Vec::new())]);
        assert_eq!(p.delete, vec!["s-b".to_string()]);
    }

    async fn slices_of(api: &Api<EndpointSlice>, svc: &str) -> Vec<EndpointSlice> {
        api.list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={svc}")))
            .await
            .unwrap()
            .items
    }

    fn find<'a>(s: &'a EndpointSlice, pod: &str) -> Option<&'a Endpoint> {
        s.endpoints
            .iter()
            .find(|e| e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
    }

    fn conditions(e: &Endpoint) -> (Option<bool>, Option<bool>, Option<bool>) {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    }

    #[tokio::test]
    async fn service_pods_get_slices_with_ready_serving_terminating_conditions_and_labels() {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        let token = start(&env, run_boxed);
        let svcs: Api<Service> = Api::namespaced(admin.clone(), "default");
        let svc = svcs
            .create(
                &PostParams::default(),
                &service("shop", IntOrString::String("web".into()), false),
            )
            .await
            .unwrap();
        pod(&admin, "shop", "shop-ready", "10.42.3.1", true, Some(8080)).await;
        pod(
            &admin,
            "shop",
            "shop-unready",
            "10.42.3.2",
            false,
            Some(8080),
        )
        .await;
        pod(
            &admin,
            "shop",
            "shop-leaving",
            "10.42.3.3",
            true,
            Some(8080),
        )
        .await;
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        // bound pods delete gracefully: they stay, terminating, until their node confirms
        pods.delete("shop-leaving", &DeleteParams::default())
            .await
            .unwrap();
        let api: Api<EndpointSlice> = Api::namespaced(admin.clone(), "default");
        let slice = eventually("three endpoints, one terminating", || async {
            let slices = slices_of(&api, "shop").await;
            slices.into_iter().find(|s| {
                s.endpoints.len() == 3
                    && find(s, "shop-leaving").is_some_and(|e| conditions(e).2 == Some(true))
            })
        })
        .await;
        assert!(slice.metadata.name.as_deref().unwrap().starts_with("shop-"));
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(
            slice.labels().get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("shop")
        );
        assert_eq!(
            slice.labels().get(MANAGED_BY_LABEL).map(String::as_str),
            Some(CONTROLLER_NAME)
        );
        let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Service", svc.uid().unwrap().as_str())
        );
        let p = &slice.ports.as_ref().unwrap()[0];
        assert_eq!(
            (p.name.as_deref(), p.port, p.protocol.as_deref()),
            (Some("http"), Some(8080), Some("TCP"))
        );
        assert_eq!(
            conditions(find(&slice, "shop-ready").unwrap()),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(
            conditions(find(&slice, "shop-unready").unwrap()),
            (Some(false), Some(false), Some(false))
        );
        assert_eq!(
            conditions(find(&slice, "shop-leaving").unwrap()),
            (Some(false), Some(true), Some(true))
        );
        let ready = find(&slice, "shop-ready").unwrap();
        assert_eq!(ready.node_name.as_deref(), Some("node-a"));
        assert_eq!(
            ready.target_ref.as_ref().unwrap().kind.as_deref(),
            Some("Pod")
        );

        // a pod IP change updates the same slice in place
        let name = slice.metadata.name.clone().unwrap();
        set_pod_status(&admin, "shop-ready", "10.42.3.9", true).await;
        eventually("the new pod ip in the same slice", || async {
            let s = api.get_opt(&name).await.unwrap()?;
            find(&s, "shop-ready")
                .is_some_and(|e| e.addresses == ["10.42.3.9"])
                .then_some(())
        })
        .await;
        assert_eq!(slices_of(&api, "shop").await.len(), 1);
        token.cancel();
    }

    #[tokio::test]
    async fn service_without_pods_gets_one_empty_placeholder_slice() {
        let env = TestEnv::start().await;
        let admin = env.admin_client();
        let token = start(&env, run_boxed);
        let svcs: Api<Service> = Api::namespaced(admin.clone(), "default");
        svcs.create(
            &PostParams::default(),
            &service("idle", IntOrString::Int(80), false),
        )
        .await
        .unwrap();
        let api: Api<EndpointSlice> = Api::namespaced(admin.clone(), "default");
        let s = eventually("a placeholder slice", || async {
            slices_of(&api, "idle").await.into_iter().next()
        })
        .await;
        assert!(s.endpoints.is_empty());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(slices_of(&api, "idle").await.len(), 1);
        token.cancel();
    }
}

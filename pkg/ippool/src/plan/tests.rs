//! Unit tests of the allocator's decisions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::*;

fn networks() -> Networks {
    Networks {
        cluster: "10.42.0.0/16".parse().expect("cidr"),
        service: "10.43.0.0/16".parse().expect("cidr"),
    }
}

fn pool(name: &str, cidr: &str) -> IpPool {
    IpPool {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: crate::types::IpPoolSpec {
            cidr: cidr.into(),
            node_selector: None,
        },
        status: None,
    }
}

fn pod(name: &str, uid: &str, annotations: &[(&str, &str)], node: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: node.map(Into::into),
            ..Default::default()
        }),
        status: Some(PodStatus::default()),
    }
}

fn sts_pod(name: &str, uid: &str, node: &str) -> Pod {
    let mut p = pod(name, uid, &[(POOL_ANNOTATION, "db")], Some(node));
    p.metadata.owner_references = Some(vec![OwnerReference {
        kind: "StatefulSet".into(),
        name: "web".into(),
        controller: Some(true),
        api_version: "apps/v1".into(),
        uid: "sts-uid".into(),
        ..Default::default()
    }]);
    p
}

fn allocations(actions: &[Action]) -> Vec<&IpAllocation> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Allocate { allocation, .. } => Some(allocation.as_ref()),
            _ => None,
        })
        .collect()
}

fn warnings(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Warn { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn plan_pool_pod_gets_lowest_free_address_once_scheduled() {
    let mut state = State {
        pools: vec![pool("db", "10.99.0.0/29")],
        pods: vec![pod("a", "u1", &[(POOL_ANNOTATION, "db")], None)],
        ..Default::default()
    };
    assert!(allocations(&plan(&state, &networks())).is_empty());
    state.pods[0].spec.as_mut().expect("spec").node_name = Some("n1".into());
    let actions = plan(&state, &networks());
    let got = allocations(&actions);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].spec.address, "10.99.0.1");
    assert_eq!(got[0].metadata.name.as_deref(), Some("10-99-0-1"));
    assert_eq!(got[0].spec.kind, KIND_POD);
    assert_eq!(got[0].spec.node.as_deref(), Some("n1"));
}

#[test]
fn plan_two_pods_in_one_pass_get_different_addresses() {
    let state = State {
        pools: vec![pool("db", "10.99.0.0/29")],
        pods: vec![
            pod("a", "u1", &[(POOL_ANNOTATION, "db")], Some("n1")),
            pod("b", "u2", &[(POOL_ANNOTATION, "db")], Some("n1")),
        ],
        ..Default::default()
    };
    let actions = plan(&state, &networks());
    let got: Vec<&str> = allocations(&actions)
        .iter()
        .map(|a| a.spec.address.as_str())
        .collect();
    assert_eq!(got, vec!["10.99.0.1", "10.99.0.2"]);
}

#[test]
fn plan_exhausted_pool_warns_and_allocates_nothing() {
    let mut taken = pod("a", "u1", &[(POOL_ANNOTATION, "db")], Some("n1"));
    let state = State {
        pools: vec![pool("db", "10.99.0.0/31")],
        pods: vec![taken.clone()],
        ..Default::default()
    };
    let first = allocations(&plan(&state, &networks()))
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    taken.metadata.uid = Some("u2".into());
    let mut more = pod("b", "u2", &[(POOL_ANNOTATION, "db")], Some("n1"));
    more.metadata.name = Some("b".into());
    let mut third = pod("c", "u3", &[(POOL_ANNOTATION, "db")], Some("n1"));
    third.metadata.name = Some("c".into());
    let state = State {
        pools: vec![pool("db", "10.99.0.0/31")],
        pods: vec![state.pods[0].clone(), more, third],
        allocations: first,
        ..Default::default()
    };
    let actions = plan(&state, &networks());
    assert_eq!(allocations(&actions).len(), 1, "{actions:?}");
    assert_eq!(warnings(&actions), vec!["IPPoolExhausted"]);
}

#[test]
fn plan_taken_address_warns_in_use() {
    let first = pod("a", "u1", &[(ADDRESS_ANNOTATION, "10.99.0.5")], Some("n1"));
    let state = State {
        pools: vec![pool("db", "10.99.0.0/24")],
        pods: vec![first.clone()],
        ..Default::default()
    };
    let held: Vec<IpAllocation> = allocations(&plan(&state, &networks()))
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(
        held[0].spec.pool, "db",
        "the pool holding the address is found"
    );
    let second = pod("b", "u2", &[(ADDRESS_ANNOTATION, "10.99.0.5")], Some("n2"));
    let state = State {
        pools: vec![pool("db", "10.99.0.0/24")],
        pods: vec![first, second],
        allocations: held,
        ..Default::default()
    };
    let actions = plan(&state, &networks());
    assert!(allocations(&actions).is_empty());
    assert_eq!(warnings(&actions), vec!["IPAddressInUse"]);
}

#[test]
fn plan_address_outside_named_pool_warns() {
    let state = State {
        pools: vec![pool("db", "10.99.0.0/24")],
        pods: vec![pod(
            "a",
            "u1",
            &[(POOL_ANNOTATION, "db"), (ADDRESS_ANNOTATION, "10.98.0.5")],
            Some("n1"),
        )],
        ..Default::default()
    };
    assert_eq!(
        warnings(&plan(&state, &networks())),
        vec!["IPAddressNotInPool"]
    );
}

#[test]
fn plan_statefulset_pod_keeps_its_address_across_recreation() {
    let state = State {
        pools: vec![pool("db", "10.99.0.0/24")],
        pods: vec![sts_pod("web-0", "u1", "n1")],
        stateful_sets: [("default".to_string(), "web".to_string())].into(),
        ..Default::default()
    };
    let held: Vec<IpAllocation> = allocations(&plan(&state, &networks()))
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(held[0].spec.kind, KIND_STATEFULSET);
    // the pod is deleted and recreated (new uid) on another node
    let state = State {
        pods: vec![sts_pod("web-0", "u2", "n2")],
        allocations: held.clone(),
        ..state
    };
    let actions = plan(&state, &networks());
    assert!(allocations(&actions).is_empty());
    assert!(!actions.iter().any(|a| matches!(a, Action::Release { .. })));
    let update = actions.iter().find_map(|a| match a {
        Action::Update { spec, .. } => Some(spec),
        _ => None,
    });
    let update = update.expect("an update");
    assert_eq!(update.node.as_deref(), Some("n2"));
    assert_eq!(update.owner.uid, "u2");
    assert!(actions.iter().any(
        |a| matches!(a, Action::Annotate { address, .. } if *address == held[0].spec.address)
    ));
    // while no pod exists the address stays; with the StatefulSet gone it goes
    let state = State {
        pods: vec![],
        ..state
    };
    assert!(!plan(&state, &networks())
        .iter()
        .any(|a| matches!(a, Action::Release { .. })));
    let state = State {
        stateful_sets: Default::default(),
        ..state
    };
    assert!(plan(&state, &networks())
        .iter()
        .any(|a| matches!(a, Action::Release { .. })));
}

#[test]
fn plan_pod_allocation_released_when_pod_gone_or_finished() {
    let p = pod("a", "u1", &[(POOL_ANNOTATION, "db")], Some("n1"));
    let state = State {
        pools: vec![pool("db", "10.99.0.0/24")],
        pods: vec![p.clone()],
        ..Default::default()
    };
    let held: Vec<IpAllocation> = allocations(&plan(&state, &networks()))
        .into_iter()
        .cloned()
        .collect();
    let mut annotated = p.clone();
    annotated
        .metadata
        .annotations
        .as_mut()
        .expect("annotations")
        .insert(ALLOCATED_ANNOTATION.into(), "10.99.0.1".into());
    let kept = State {
        pods: vec![annotated.clone()],
        allocations: held.clone(),
        ..state.clone()
    };
    let actions = plan(&kept, &networks());
    assert!(
        actions
            .iter()
            .all(|a| matches!(a, Action::PoolStatus { .. })),
        "{actions:?}"
    );
    let gone = State {
        pods: vec![],
        ..kept.clone()
    };
    assert!(matches!(
        plan(&gone, &networks())[0],
        Action::Release { .. }
    ));
    let mut finished = annotated;
    finished.status.as_mut().expect("status").phase = Some("Succeeded".into());
    let finished = State {
        pods: vec![finished],
        ..kept
    };
    assert!(matches!(
        plan(&finished, &networks())[0],
        Action::Release { .. }
    ));
}

#[test]
fn validate_pools_refuses_overlaps_and_bad_cidrs() {
    let pools = vec![
        pool("a", "10.99.0.0/24"),
        pool("b", "10.99.0.128/25"),
        pool("c", "10.42.5.0/24"),
        pool("d", "10.43.0.0/24"),
        pool("e", "nope"),
        pool("f", "10.98.0.1/24"),
    ];
    let v = validate_pools(&pools, &networks());
    assert!(v["a"].is_ok());
    assert_eq!(v["b"].as_ref().unwrap_err().0, "OverlapsPool");
    assert_eq!(v["c"].as_ref().unwrap_err().0, "OverlapsClusterCIDR");
    assert_eq!(v["d"].as_ref().unwrap_err().0, "OverlapsServiceCIDR");
    assert_eq!(v["e"].as_ref().unwrap_err().0, "InvalidCIDR");
    assert_eq!(v["f"].as_ref().unwrap_err().0, "InvalidCIDR");
}

#[test]
fn plan_node_outside_pool_selector_warns() {
    let mut p = pool("db", "10.99.0.0/24");
    p.spec.node_selector = Some(BTreeMap::from([("rack".into(), "r1".into())]));
    let state = State {
        pools: vec![p],
        pods: vec![pod("a", "u1", &[(POOL_ANNOTATION, "db")], Some("n1"))],
        nodes: BTreeMap::from([(
            "n1".to_string(),
            BTreeMap::from([("rack".to_string(), "r2".to_string())]),
        )]),
        ..Default::default()
    };
    assert_eq!(
        warnings(&plan(&state, &networks())),
        vec!["IPPoolNodeMismatch"]
    );
}

#[test]
fn plan_pool_status_counts_allocations() {
    let state = State {
        pools: vec![pool("db", "10.99.0.0/29")],
        pods: vec![pod("a", "u1", &[(POOL_ANNOTATION, "db")], Some("n1"))],
        ..Default::default()
    };
    let status = plan(&state, &networks())
        .into_iter()
        .find_map(|a| match a {
            Action::PoolStatus { status, .. } => Some(status),
            _ => None,
        })
        .expect("a status");
    assert_eq!((status.size, status.allocated), (6, 1));
    assert_eq!(status.conditions[0].status, "True");
}

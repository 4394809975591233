//! Tests of the store-fed authorizer: the feed, and the re-check of a denial.

use std::time::Duration;

use mini_store::SledStore;
use serde_json::json;

use super::*;

fn node(name: &str) -> UserInfo {
    UserInfo {
        name: format!("system:node:{name}"),
        groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
    }
}

fn get_secret(ns: &str, name: &str) -> RequestAttributes {
    RequestAttributes {
        verb: "get".into(),
        resource_request: true,
        resource: "secrets".into(),
        namespace: ns.into(),
        name: name.into(),
        ..Default::default()
    }
}

async fn put(store: &dyn Store, key: &str, v: Value) {
    store
        .create(key, serde_json::to_vec(&v).expect("json"))
        .await
        .expect("store create");
}

fn pod_using(secret: &str, node: &str) -> Value {
    json!({"metadata": {"namespace": "ns", "name": "p"},
           "spec": {"nodeName": node, "volumes": [{"name": "s", "secret": {"secretName": secret}}]}})
}

#[tokio::test]
async fn authorize_feed_picks_up_pods_written_after_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store"));
    let authz = NodeAuthorizer::start(store.clone());
    put(
        store.as_ref(),
        "/registry/core/pods/ns/p",
        pod_using("db", "a"),
    )
    .await;
    for _ in 0..200 {
        if authz.bound_pods() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(authz.bound_pods(), 1);
    assert_eq!(
        authz.authorize(&node("a"), &get_secret("ns", "db")).await,
        Decision::Allow
    );
    assert!(matches!(
        authz.authorize(&node("b"), &get_secret("ns", "db")).await,
        Decision::NoOpinion { .. }
    ));
}

#[tokio::test]
async fn authorize_denial_is_rechecked_against_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store"));
    // a graph that never heard of the pod (as if its watch were behind)
    let authz = NodeAuthorizer {
        graph: Arc::new(RwLock::new(Graph::default())),
        store: store.clone(),
        node_rules: mini_rbac::node_rules(),
        _stop: CancellationToken::new().drop_guard(),
    };
    put(
        store.as_ref(),
        "/registry/core/pods/ns/p",
        pod_using("db", "a"),
    )
    .await;
    assert_eq!(
        authz.authorize(&node("a"), &get_secret("ns", "db")).await,
        Decision::Allow
    );
    assert_eq!(
        authz.authorize(&node("b"), &get_secret("ns", "db")).await,
        Decision::NoOpinion {
            reason: "no relationship found between node 'b' and this object".into()
        }
    );
}

#[tokio::test]
async fn authorize_non_nodes_get_no_opinion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).expect("store"));
    let authz = NodeAuthorizer::start(store);
    let alice = UserInfo {
        name: "alice".into(),
        groups: vec![],
    };
    assert_eq!(
        authz.authorize(&alice, &get_secret("ns", "db")).await,
        Decision::NoOpinion {
            reason: String::new()
        }
    );
}

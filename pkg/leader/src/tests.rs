//! Leader election against an in-process API server: taking, holding, expiry, restart of the
//! same candidate, release on shutdown and a deposed leader stopping its work.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use super::*;

fn fast(name: &str, identity: &str) -> ElectionConfig {
    ElectionConfig {
        lease_duration: Duration::from_millis(3000),
        renew_deadline: Duration::from_millis(2000),
        retry_period: Duration::from_millis(150),
        ..ElectionConfig::new(name, identity)
    }
}

/// The lease's holder; `None` while no candidate has created the lease yet.
async fn holder(client: &kube::Client, name: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases
        .get_opt(name)
        .await
        .expect("lease")?
        .spec
        .and_then(|s| s.holder_identity)
}

async fn wait_until(mut check: impl AsyncFnMut() -> bool, what: &str) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn elector_free_lease_is_taken_and_renewed_by_its_holder_only() {
    let env = mini_testenv::TestEnv::start().await;
    let client = env.admin_client();
    let mut a = Elector::new(client.clone(), fast("one", "server-a"));
    let mut b = Elector::new(client.clone(), fast("one", "server-b"));
    a.try_acquire_or_renew()
        .await
        .expect("a takes the free lease");
    assert_eq!(holder(&client, "one").await.as_deref(), Some("server-a"));
    a.try_acquire_or_renew().await.expect("a renews");
    assert!(matches!(
        b.try_acquire_or_renew().await,
        Err(LeaderError::HeldByOther { holder, .. }) if holder == "server-a"
    ));
    assert_eq!(holder(&client, "one").await.as_deref(), Some("server-a"));
}

#[tokio::test]
async fn elector_unrenewed_lease_is_taken_after_its_duration() {
    let env = mini_testenv::TestEnv::start().await;
    let client = env.admin_client();
    let mut a = Elector::new(client.clone(), fast("two", "server-a"));
    let mut b = Elector::new(client.clone(), fast("two", "server-b"));
    a.try_acquire_or_renew().await.expect("a takes");
    assert!(b.try_acquire_or_renew().await.is_err(), "held by a");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    b.try_acquire_or_renew()
        .await
        .expect("b takes the stale lease");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let spec = leases.get("two").await.expect("lease").spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("server-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(
        matches!(
            a.try_acquire_or_renew().await,
            Err(LeaderError::HeldByOther { .. })
        ),
        "a cannot renew what b took"
    );
}

#[tokio::test]
async fn elector_restarted_candidate_takes_its_own_lease_back_at_once() {
    let env = mini_testenv::TestEnv::start().await;
    let client = env.admin_client();
    let mut first = Elector::new(client.clone(), fast("three", "server-a"));
    first.try_acquire_or_renew().await.expect("takes");
    drop(first);
    let mut again = Elector::new(client.clone(), fast("three", "server-a"));
    again
        .try_acquire_or_renew()
        .await
        .expect("the same identity renews without waiting");
}

#[tokio::test]
async fn run_while_leader_hands_over_on_shutdown_and_runs_one_leader_at_a_time() {
    let env = mini_testenv::TestEnv::start().await;
    let client = env.admin_client();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let work = |running: Arc<AtomicUsize>, most: Arc<AtomicUsize>| {
        move |stop: CancellationToken| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                stop.cancelled().await;
                running.fetch_sub(1, Ordering::SeqCst);
            }
        }
    };
    let stop_a = CancellationToken::new();
    let a = tokio::spawn(run_while_leader(
        client.clone(),
        fast("four", "server-a"),
        stop_a.clone(),
        work(running.clone(), most.clone()),
    ));
    wait_until(
        async || holder(&client, "four").await.as_deref() == Some("server-a"),
        "a to lead",
    )
    .await;
    let stop_b = CancellationToken::new();
    let b = tokio::spawn(run_while_leader(
        client.clone(),
        fast("four", "server-b"),
        stop_b.clone(),
        work(running.clone(), most.clone()),
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(holder(&client, "four").await.as_deref(), Some("server-a"));
    stop_a.cancel();
    a.await.expect("a ends");
    wait_until(
        async || holder(&client, "four").await.as_deref() == Some("server-b"),
        "b to take over after a released",
    )
    .await;
    wait_until(async || running.load(Ordering::SeqCst) == 1, "b's work").await;
    stop_b.cancel();
    b.await.expect("b ends");
    assert_eq!(running.load(Ordering::SeqCst), 0);
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "never two leaders' work at once"
    );
}

#[tokio::test]
async fn run_while_leader_deposed_leader_stops_its_work() {
    let env = mini_testenv::TestEnv::start().await;
    let client = env.admin_client();
    let stopped = CancellationToken::new();
    let shutdown = CancellationToken::new();
    let observed = stopped.clone();
    let task = tokio::spawn(run_while_leader(
        client.clone(),
        fast("five", "server-a"),
        shutdown.clone(),
        move |stop: CancellationToken| {
            let observed = observed.clone();
            async move {
                stop.cancelled().await;
                observed.cancel();
            }
        },
    ));
    wait_until(
        async || holder(&client, "five").await.as_deref() == Some("server-a"),
        "a to lead",
    )
    .await;
    // another server overwrites the record (as if it had judged the lease stale)
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let mut lease = leases.get("five").await.expect("lease");
    let mut spec = lease.spec.clone().expect("spec");
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    spec.lease_duration_seconds = Some(3600);
    lease.spec = Some(spec);
    leases
        .replace("five", &PostParams::default(), &lease)
        .await
        .expect("overwrite");
    tokio::time::timeout(Duration::from_secs(10), stopped.cancelled())
        .await
        .expect("the deposed leader stopped its work");
    shutdown.cancel();
    task.await.expect("ends");
    assert_eq!(holder(&client, "five").await.as_deref(), Some("intruder"));
}

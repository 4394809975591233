//! The PV binder against a real in-process API server: a static volume binds to a fitting
//! claim (smallest fit, claimRef, phases, annotations), a claim without a class gets the
//! default class, growing a claim of a class without expansion is refused with upstream's
//! message, and deleting a claim of a Retain volume leaves it Released.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mini_testenv::TestEnv;
use serde_json::json;
use tokio_util::sync::CancellationToken;

async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn pv(name: &str, size: &str) -> PersistentVolume {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "manual", "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": format!("/srv/{name}")}}
    }))
    .expect("pv")
}

#[tokio::test]
async fn binder_static_volume_binds_resize_refused_release_on_delete() {
    let env = TestEnv::start().await;
    let admin = env.admin_client();
    let stop = CancellationToken::new();
    tokio::spawn(mini_localpath::run(env.controllers_client(), stop.clone()));

    let classes: Api<StorageClass> = Api::all(admin.clone());
    let default_class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "mini.dev/local-path", "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete", "allowVolumeExpansion": false
    }))
    .expect("class");
    classes
        .create(&PostParams::default(), &default_class)
        .await
        .expect("create class");

    let pvs: Api<PersistentVolume> = Api::all(admin.clone());
    for v in [pv("big", "10Gi"), pv("small", "1Gi")] {
        pvs.create(&PostParams::default(), &v)
            .await
            .expect("create pv");
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), "default");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"storageClassName": "manual", "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "500Mi"}}}
    }))
    .expect("pvc");
    pvcs.create(&PostParams::default(), &claim)
        .await
        .expect("create pvc");
    until("claim bound", || async {
        pvcs.get("data")
            .await
            .ok()
            .and_then(|c| c.status?.phase)
            .as_deref()
            == Some("Bound")
    })
    .await;
    let c = pvcs.get("data").await.expect("pvc");
    assert_eq!(
        c.spec.as_ref().unwrap().volume_name.as_deref(),
        Some("small")
    );
    let ann = c.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        ann.get("pv.kubernetes.io/bind-completed")
            .map(String::as_str),
        Some("yes")
    );
    assert_eq!(
        ann.get("pv.kubernetes.io/bound-by-controller")
            .map(String::as_str),
        Some("yes")
    );
    until("volume bound", || async {
        pvs.get("small")
            .await
            .ok()
            .and_then(|v| v.status?.phase)
            .as_deref()
            == Some("Bound")
    })
    .await;
    let small = pvs.get("small").await.expect("pv");
    assert_eq!(
        small.spec.unwrap().claim_ref.unwrap().uid,
        c.metadata.uid.clone()
    );
    until("other volume available", || async {
        pvs.get("big")
            .await
            .ok()
            .and_then(|v| v.status?.phase)
            .as_deref()
            == Some("Available")
    })
    .await;

    // growing the claim: class "manual" does not exist, so it cannot allow expansion
    let err = pvcs
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}})),
        )
        .await
        .expect_err("resize refused");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains(mini_localpath::RESIZE_FORBIDDEN_MESSAGE),
                "{}",
                s.message
            );
        }
        other => panic!("unexpected error {other}"),
    }

    // no class given: the default class is filled in
    let plain: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "plain"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("pvc");
    let created = pvcs
        .create(&PostParams::default(), &plain)
        .await
        .expect("create plain");
    assert_eq!(
        created.spec.unwrap().storage_class_name.as_deref(),
        Some("local-path")
    );

    // the claim goes: its Retain volume is Released and stays
    pvcs.delete("data", &DeleteParams::default())
        .await
        .expect("delete pvc");
    until("volume released", || async {
        pvs.get("small")
            .await
            .ok()
            .and_then(|v| v.status?.phase)
            .as_deref()
            == Some("Released")
    })
    .await;
    stop.cancel();
}

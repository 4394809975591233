//! The service-account controller and the root CA publisher (upstream `serviceaccounts-controller`
//! and `root-ca-cert-publisher`): every active namespace gets a `default` ServiceAccount and a
//! `kube-root-ca.crt` ConfigMap holding the cluster CA, both re-created when deleted and the
//! ConfigMap corrected when its content drifts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::{Context, ControllerError};

/// The ServiceAccount every namespace gets.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap the root CA is published as.
const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The key of the CA bundle inside that ConfigMap.
const ROOT_CA_KEY: &str = "ca.crt";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// Upstream's wording, kept verbatim so tools that look for it are not surprised.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let by_namespace =
        |meta: &ObjectMeta| meta.namespace.as_deref().map(ObjectRef::<Namespace>::new);
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            Api::<ServiceAccount>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SERVICE_ACCOUNT}")),
            move |sa| by_namespace(&sa.metadata),
        )
        .watches(
            Api::<ConfigMap>::all(client),
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_CONFIGMAP}")),
            move |cm| by_namespace(&cm.metadata),
        )
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(controller = "serviceaccount", error = %e, "reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(ns: Arc<Namespace>, err: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        controller = "serviceaccount",
        namespace = ns.metadata.name.as_deref().unwrap_or_default(),
        error = %err,
        "sync failed"
    );
    Action::requeue(Duration::from_secs(5))
}

/// Namespaces being deleted get nothing new (the API server refuses creates there anyway).
fn is_terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// A create that lost a race with another writer, or hit a namespace that began terminating,
/// is not an error worth retrying.
fn ignorable_create_error(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || (s.code == 403 && s.message.contains("terminat")))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let Some(name) = ns.metadata.name.as_deref() else {
        return Ok(Action::await_change());
    };
    if is_terminating(&ns) {
        return Ok(Action::await_change());
    }
    ensure_default_service_account(&ctx.client, name).await?;
    if !ctx.config.root_ca_pem.is_empty() {
        ensure_root_ca(&ctx.client, name, &ctx.config.root_ca_pem).await?;
    }
    Ok(Action::await_change())
}

async fn ensure_default_service_account(
    client: &kube::Client,
    namespace: &str,
) -> Result<(), ControllerError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    if api.get_opt(DEFAULT_SERVICE_ACCOUNT).await?.is_some() {
        return Ok(());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_SERVICE_ACCOUNT.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => {
            tracing::debug!(namespace, "created the default service account");
            Ok(())
        }
        Err(e) if ignorable_create_error(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn root_ca_data(pem: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(ROOT_CA_KEY.to_string(), pem.to_string())])
}

/// The ConfigMap is right when its data is exactly the CA bundle and it carries the description.
fn root_ca_is_current(cm: &ConfigMap, pem: &str) -> bool {
    let described = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
        .is_some_and(|d| !d.is_empty());
    described && cm.data.as_ref() == Some(&root_ca_data(pem)) && cm.binary_data.is_none()
}

async fn ensure_root_ca(
    client: &kube::Client,
    namespace: &str,
    pem: &str,
) -> Result<(), ControllerError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(ROOT_CA_CONFIGMAP).await? {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CA_CONFIGMAP.to_string()),
                    namespace: Some(namespace.to_string()),
                    annotations: Some(BTreeMap::from([(
                        DESCRIPTION_ANNOTATION.to_string(),
                        DESCRIPTION.to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(root_ca_data(pem)),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => Ok(()),
                Err(e) if ignorable_create_error(&e) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Some(cm) if root_ca_is_current(&cm, pem) => Ok(()),
        Some(mut cm) => {
            cm.data = Some(root_ca_data(pem));
            cm.binary_data = None;
            cm.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(DESCRIPTION_ANNOTATION.to_string(), DESCRIPTION.to_string());
            // a conflict means someone wrote in between; the watch brings us back
            match api
                .replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &cm)
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                    Err(ControllerError::Other(format!(
                        "updating {namespace}/{ROOT_CA_CONFIGMAP} raced with another writer: {}",
                        s.message
                    )))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::DeleteParams;
    use tokio_util::sync::CancellationToken;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

    async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn new_namespace_gets_default_sa_and_root_ca_which_come_back_after_deletion() {
        let env = mini_testenv::TestEnv::start().await;
        let token = CancellationToken::new();
        let config = crate::ControllerConfig {
            root_ca_pem: PEM.to_string(),
            ..Default::default()
        };
        let task = tokio::spawn(run(Arc::new(Context {
            client: env.controllers_client(),
            config,
            shutdown: token.clone(),
        })));
        let admin = env.admin_client();
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some("team-a".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "team-a");
        let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "team-a");

        eventually("the default service account", || async {
            sas.get_opt("default").await.unwrap().is_some()
        })
        .await;
        eventually("kube-root-ca.crt", || async {
            cms.get_opt(ROOT_CA_CONFIGMAP).await.unwrap().is_some()
        })
        .await;
        let cm = cms.get(ROOT_CA_CONFIGMAP).await.unwrap();
        assert_eq!(cm.data.unwrap()[ROOT_CA_KEY], PEM);
        assert!(cm.metadata.annotations.unwrap()[DESCRIPTION_ANNOTATION].contains("CA bundle"));
        // the bootstrap namespaces get them too
        let ks: Api<ServiceAccount> = Api::namespaced(admin.clone(), "kube-system");
        eventually("kube-system's default service account", || async {
            ks.get_opt("default").await.unwrap().is_some()
        })
        .await;

        // deleted: re-created
        sas.delete("default", &DeleteParams::default())
            .await
            .unwrap();
        cms.delete(ROOT_CA_CONFIGMAP, &DeleteParams::default())
            .await
            .unwrap();
        eventually("the default service account to come back", || async {
            sas.get_opt("default").await.unwrap().is_some()
        })
        .await;
        eventually("kube-root-ca.crt to come back", || async {
            cms.get_opt(ROOT_CA_CONFIGMAP).await.unwrap().is_some()
        })
        .await;

        // tampered with: corrected
        let mut cm = cms.get(ROOT_CA_CONFIGMAP).await.unwrap();
        cm.data = Some(BTreeMap::from([(
            ROOT_CA_KEY.to_string(),
            "garbage".to_string(),
        )]));
        cms.replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &cm)
            .await
            .unwrap();
        eventually("kube-root-ca.crt to be corrected", || async {
            cms.get(ROOT_CA_CONFIGMAP)
                .await
                .unwrap()
                .data
                .is_some_and(|d| d.get(ROOT_CA_KEY).map(String::as_str) == Some(PEM))
        })
        .await;

        token.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("controller stops on shutdown")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn root_ca_configmap_condition_requires_exact_data_and_description() {
        let mut cm = ConfigMap {
            data: Some(root_ca_data(PEM)),
            ..Default::default()
        };
        assert!(!root_ca_is_current(&cm, PEM), "the description is missing");
        cm.metadata.annotations = Some(BTreeMap::from([(
            DESCRIPTION_ANNOTATION.to_string(),
            DESCRIPTION.to_string(),
        )]));
        assert!(root_ca_is_current(&cm, PEM));
        cm.data.as_mut().unwrap().insert("extra".into(), "x".into());
        assert!(!root_ca_is_current(&cm, PEM));
    }
}

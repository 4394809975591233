//! The controller and the results endpoint on an in-process API server: invalid specs and
//! missing targets fail with a reason, a cluster without enough nodes is refused, and results
//! are served per format to whoever may `get loadtests`, and to no one else.

use std::time::Duration;

use kube::api::PostParams;
use kube::Api;
use mini_loadtest::controller::{run, ControllerConfig};
use mini_loadtest::report::Format;
use mini_loadtest::results::{encode, new_hist, record, ReportBatch, SecondReport};
use mini_loadtest::runs::RunInfo;
use mini_loadtest::spec::{LoadTest, LoadTestSpec, Phase, Threshold};
use tokio_util::sync::CancellationToken;

async fn create(client: &kube::Client, name: &str, spec: LoadTestSpec) {
    let api: Api<LoadTest> = Api::namespaced(client.clone(), "default");
    let mut lt = LoadTest {
        spec,
        ..Default::default()
    };
    lt.metadata.name = Some(name.into());
    api.create(&PostParams::default(), &lt).await.unwrap();
}

async fn status_of(client: &kube::Client, name: &str) -> (Option<Phase>, String, String) {
    let api: Api<LoadTest> = Api::namespaced(client.clone(), "default");
    for _ in 0..100 {
        let lt = api.get(name).await.unwrap();
        if let Some(s) = lt.status.filter(|s| s.phase.is_some()) {
            return (
                s.phase,
                s.reason.unwrap_or_default(),
                s.message.unwrap_or_default(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} got no status")
}

#[tokio::test]
async fn controller_bad_input_fails_with_reasons() {
    let env = mini_testenv::TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let runs = mini_loadtest::install(&env.server, dir.path());
    let stop = CancellationToken::new();
    let config = ControllerConfig {
        server_url: "https://127.0.0.1:6443".into(),
        ca_pem: String::new(),
        image: "mini.local/loadtest:test".into(),
    };
    let task = tokio::spawn(run(env.controllers_client(), runs, config, stop.clone()));
    let admin = env.admin_client();
    // the CRD is applied by the controller
    let mut created = false;
    for _ in 0..100 {
        let api: Api<LoadTest> = Api::namespaced(admin.clone(), "default");
        if api.list(&Default::default()).await.is_ok() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "the LoadTest CRD is served");
    create(
        &admin,
        "bad",
        LoadTestSpec {
            target: "svc/web".into(),
            thresholds: vec!["p99<soon".into()],
            ..Default::default()
        },
    )
    .await;
    create(
        &admin,
        "missing",
        LoadTestSpec {
            target: "svc/web".into(),
            ..Default::default()
        },
    )
    .await;
    create(
        &admin,
        "nonodes",
        LoadTestSpec {
            target: "http://10.0.0.1/".into(),
            generators: Some(2),
            ..Default::default()
        },
    )
    .await;
    let (phase, reason, message) = status_of(&admin, "bad").await;
    assert_eq!(phase, Some(Phase::Failed));
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("spec.thresholds") && message.contains("p99<soon"),
        "{message}"
    );
    let (phase, reason, message) = status_of(&admin, "missing").await;
    assert_eq!(
        (phase, reason.as_str()),
        (Some(Phase::Failed), "TargetNotFound"),
        "{message}"
    );
    let (phase, reason, message) = status_of(&admin, "nonodes").await;
    assert_eq!(
        (phase, reason.as_str()),
        (Some(Phase::Failed), "NotEnoughNodes"),
        "{message}"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn results_endpoint_serves_formats_under_rbac() {
    let env = mini_testenv::TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let runs = mini_loadtest::install(&env.server, dir.path());
    runs.register(
        RunInfo {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            duration_seconds: 1.0,
            thresholds: vec![Threshold::parse("p99<200ms").unwrap()],
            ..Default::default()
        },
        "token".into(),
    );
    let mut h = new_hist();
    record(&mut h, 1500);
    runs.add_batch(
        "u1",
        "token",
        &ReportBatch {
            generator: 0,
            seconds: vec![SecondReport {
                second: 0,
                requests: 1,
                codes: [("200".to_string(), 1)].into(),
                histogram: encode(&h),
                ..Default::default()
            }],
            done: true,
        },
    )
    .unwrap()
    .unwrap();
    runs.finish("u1", "Succeeded").unwrap().unwrap();
    let admin = env.admin_client();
    let json = mini_loadtest::cli::report(&admin, "default", "web", Format::Json)
        .await
        .unwrap();
    assert!(json.contains("\"requests\": 1"), "{json}");
    let html = mini_loadtest::cli::report(&admin, "default", "web", Format::Html)
        .await
        .unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    let csv = mini_loadtest::cli::report(&admin, "default", "web", Format::Csv)
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 2);
    // the console's incremental poll: later seconds only, no histograms; a bad `since` is a 400
    let path = "/loadtest/v1/namespaces/default/loadtests/web/results?format=json&since=";
    let get = |q: &str| {
        http::Request::get(format!("{path}{q}"))
            .body(Vec::new())
            .unwrap()
    };
    let all: serde_json::Value =
        serde_json::from_str(&admin.request_text(get("0")).await.unwrap()).unwrap();
    assert_eq!(all["seconds"].as_array().unwrap().len(), 1);
    assert_eq!(all["seconds"][0]["histogram"], "");
    assert_eq!(all["summary"]["requests"], 1);
    let later: serde_json::Value =
        serde_json::from_str(&admin.request_text(get("1")).await.unwrap()).unwrap();
    assert!(later["seconds"].as_array().unwrap().is_empty());
    assert_eq!(later["summary"]["requests"], 1);
    assert!(admin.request_text(get("soon")).await.is_err());
    let stranger = env.client_as("mallory", &[]);
    let refused = mini_loadtest::cli::report(&stranger, "default", "web", Format::Json).await;
    assert!(refused.is_err(), "a user without get loadtests is refused");
    let missing = mini_loadtest::cli::report(&admin, "default", "nope", Format::Json).await;
    assert!(missing.is_err());
}

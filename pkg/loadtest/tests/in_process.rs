//! The controller and the results endpoint on an in-process API server: invalid specs and
//! missing targets fail with a reason, a cluster without enough nodes is refused, and results
//! are served per format to whoever may `get loadtests`, and to no one else; results held by
//! another server are asked of it, and only servers may use the servers' paths.

use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::PostParams;
use kube::Api;
use mini_loadtest::controller::{run, ControllerConfig};
use mini_loadtest::peers::OtherServers;
use mini_loadtest::report::Format;
use mini_loadtest::results::{encode, new_hist, record, ReportBatch, RunResults, SecondReport};
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

/// Other servers held in memory: the results they hold, how often they were asked, and the
/// copies they were given.
#[derive(Default)]
struct ServersInMemory {
    held: std::sync::Mutex<Vec<RunResults>>,
    asked: std::sync::atomic::AtomicUsize,
    given: std::sync::Mutex<Vec<RunResults>>,
}

/// The handle the run registry keeps (the test keeps another).
struct SharedServers(std::sync::Arc<ServersInMemory>);

impl OtherServers for SharedServers {
    fn fetch(
        &self,
        namespace: &str,
        name: &str,
        since: Option<u32>,
    ) -> BoxFuture<'static, Option<RunResults>> {
        self.0
            .asked
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let found = self
            .0
            .held
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.namespace == namespace && r.name == name)
            .cloned()
            .map(|r| r.since_maybe(since));
        Box::pin(async move { found })
    }

    fn share(&self, results: &RunResults) -> BoxFuture<'static, usize> {
        self.0.given.lock().unwrap().push(results.clone());
        Box::pin(async { 1 })
    }
}

fn held(name: &str, phase: &str, requests: u64) -> RunResults {
    let mut results = RunResults {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        phase: phase.into(),
        ..Default::default()
    };
    results.summary.requests = requests;
    results
}

#[tokio::test]
async fn results_held_by_another_server_are_served_and_finished_ones_kept() {
    let env = mini_testenv::TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let runs = mini_loadtest::install(&env.server, dir.path());
    let others = std::sync::Arc::new(ServersInMemory::default());
    others.held.lock().unwrap().extend([
        held("finished", "Succeeded", 7),
        held("going", "Running", 3),
    ]);
    runs.set_other_servers(std::sync::Arc::new(SharedServers(others.clone())));
    let admin = env.admin_client();
    let summary_requests = |json: &str| -> u64 {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        value["summary"]["requests"].as_u64().unwrap()
    };

    // a finished run another server holds: served, then kept here (not asked again)
    let json = mini_loadtest::cli::report(&admin, "default", "finished", Format::Json)
        .await
        .unwrap();
    assert_eq!(summary_requests(&json), 7);
    assert!(runs
        .stored()
        .contains(&("default".to_string(), "finished".to_string())));
    mini_loadtest::cli::report(&admin, "default", "finished", Format::Csv)
        .await
        .unwrap();
    assert_eq!(others.asked.load(std::sync::atomic::Ordering::SeqCst), 1);

    // a run going on elsewhere: served each time from there, never kept
    let json = mini_loadtest::cli::report(&admin, "default", "going", Format::Json)
        .await
        .unwrap();
    assert_eq!(summary_requests(&json), 3);
    assert!(!runs
        .stored()
        .contains(&("default".to_string(), "going".to_string())));
    // held nowhere: 404, after asking
    assert!(
        mini_loadtest::cli::report(&admin, "default", "nowhere", Format::Json)
            .await
            .is_err()
    );
    assert_eq!(others.asked.load(std::sync::atomic::Ordering::SeqCst), 3);

    // a run finished here is given to the other servers
    runs.register(
        RunInfo {
            namespace: "default".into(),
            name: "here".into(),
            uid: "u-here".into(),
            duration_seconds: 1.0,
            ..Default::default()
        },
        "token".into(),
    );
    runs.finish("u-here", "Succeeded").unwrap().unwrap();
    for _ in 0..100 {
        if !others.given.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let given = others.given.lock().unwrap().clone();
    assert_eq!(given.len(), 1);
    assert_eq!(
        (given[0].name.as_str(), given[0].phase.as_str()),
        ("here", "Succeeded")
    );
}

#[tokio::test]
async fn peer_paths_take_servers_only_and_refuse_bad_copies() {
    let env = mini_testenv::TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let runs = mini_loadtest::install(&env.server, dir.path());
    let server = env.client_as(
        mini_certs::APISERVER_CLIENT_USER,
        &[mini_certs::MASTERS_GROUP],
    );
    let admin = env.admin_client();
    let path = |name: &str| mini_loadtest::peers::peer_path("default", name);
    let put = |name: &str, doc: &RunResults| {
        http::Request::put(path(name))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(doc).unwrap())
            .unwrap()
    };
    let get = |name: &str| http::Request::get(path(name)).body(Vec::new()).unwrap();
    let code = |result: Result<String, kube::Error>| match result {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(other) => panic!("{other}"),
    };

    // a finished copy from a server is stored and served back to servers
    assert_eq!(
        code(
            server
                .request_text(put("copied", &held("copied", "Failed", 5)))
                .await
        ),
        200
    );
    let back: RunResults =
        serde_json::from_str(&server.request_text(get("copied")).await.unwrap()).unwrap();
    assert_eq!((back.summary.requests, back.phase.as_str()), (5, "Failed"));
    // people, even cluster admins, may not use the servers' paths
    assert_eq!(code(admin.request_text(get("copied")).await), 403);
    assert_eq!(
        code(
            admin
                .request_text(put("other", &held("other", "Succeeded", 1)))
                .await
        ),
        403
    );
    // a run still going on, a document of another LoadTest, a path trick: refused, nothing stored
    assert_eq!(
        code(
            server
                .request_text(put("going", &held("going", "Running", 1)))
                .await
        ),
        409
    );
    assert_eq!(
        code(
            server
                .request_text(put("mismatch", &held("copied", "Succeeded", 9)))
                .await
        ),
        400
    );
    let mut trick = held("x", "Succeeded", 1);
    trick.namespace = "..".into();
    let request = http::Request::put("/loadtest/v1/peer/namespaces/../loadtests/x/results")
        .body(serde_json::to_vec(&trick).unwrap())
        .unwrap();
    assert_eq!(code(server.request_text(request).await), 400);
    assert_eq!(
        runs.stored(),
        vec![("default".to_string(), "copied".to_string())]
    );
    let kept: RunResults =
        serde_json::from_str(&server.request_text(get("copied")).await.unwrap()).unwrap();
    assert_eq!(
        kept.summary.requests, 5,
        "the refused copies changed nothing"
    );
    // what a server does not hold is 404 (servers never ask further)
    assert_eq!(code(server.request_text(get("absent")).await), 404);
}

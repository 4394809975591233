//! Distributed load testing of applications in the cluster (issue 15). A namespaced `LoadTest`
//! (`loadtest.mini.dev/v1`) names a target (a Service, an Ingress or a URL), an open-model rate
//! or closed-model users, a duration, generators and thresholds.
//!
//! Code map: [`spec`] (the object, defaults, validation, the threshold grammar), [`target`]
//! (what a target names), [`schedule`] (the open model's timetable), [`generator`] (the HTTP
//! client that measures from the intended send instant and keeps a histogram per second, over
//! [`http1`], its own HTTP/1.1 keep-alive client),
//! [`results`] (the wire format and the exact merge of histograms), [`report`] (HTML, JSON,
//! CSV and HDR log exports), [`worker`] (a generator pod's process, and local runs), [`runs`]
//! and [`route`] (the server's record of runs and its results endpoint), [`peers`] (results
//! asked of and copied to the other servers), [`crd`] and
//! [`controller`] (the server's side), [`cli`] (what `mini loadtest` does).
//!
//! Architecture invariant: percentiles are only ever read from a histogram that holds every
//! sample of the window (the sum of the generators' histograms); nothing averages percentiles.

pub mod cli;
pub mod controller;
pub mod crd;
pub mod generator;
pub mod http1;
pub mod peers;
pub mod report;
pub mod resources;
pub mod results;
pub mod route;
pub mod runs;
pub mod schedule;
pub mod spec;
pub mod target;
pub mod worker;

/// What failed in a load test.
#[derive(Debug, thiserror::Error)]
pub enum LoadTestError {
    /// The spec (or a flag) is wrong; the message says which field and how to write it.
    #[error("{0}")]
    Invalid(String),
    /// A report or histogram could not be read.
    #[error("reading the results failed: {0}")]
    Report(String),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Talking to the server or the target failed.
    #[error("{0}")]
    Http(String),
}

pub(crate) fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> LoadTestError {
    let what = what.into();
    move |source| LoadTestError::Api { what, source }
}

/// Installs the results endpoint on `api` and returns the run registry the controller uses;
/// results live under `server_dir/loadtest`.
pub fn install(
    api: &mini_apiserver::ApiServer,
    server_dir: &std::path::Path,
) -> std::sync::Arc<runs::Runs> {
    let runs = runs::Runs::new(server_dir.join("loadtest"));
    api.add_streaming_route(std::sync::Arc::new(route::ResultsRoute::new(
        api.clone(),
        runs.clone(),
    )));
    runs
}

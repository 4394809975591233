//! The server's record of runs: for each running LoadTest the generators' token, the common
//! start instant, the merged per-second histograms and the resource samples; a finished run is
//! written to `<data-dir>/server/loadtest/<namespace>/<name>.json` (bounded: at most an hour of
//! seconds) and read back from there, and removed with its LoadTest. With several servers a
//! finished run's results are also copied to the others ([`crate::peers`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::peers::{is_object_name, OtherServers};
use crate::results::{encode, verdicts, Merger, ReportBatch, ResourceSample, RunResults};
use crate::spec::{Threshold, Verdict};
use crate::LoadTestError;

/// What a run is, as the reports show it.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub target: String,
    pub url: String,
    pub model: String,
    pub generators: u32,
    pub duration_seconds: f64,
    pub ramp_up_seconds: f64,
    /// Requests per second asked for (open model), averaged over the duration.
    pub requested_rate: Option<f64>,
    pub thresholds: Vec<Threshold>,
}

struct Run {
    info: RunInfo,
    token: String,
    start_unix_ms: Option<i64>,
    stop: bool,
    phase: String,
    merger: Merger,
    resources: Vec<ResourceSample>,
}

/// Why a generator's request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No run with this uid (it ended or was deleted).
    UnknownRun,
    BadToken,
}

/// Every run the server knows.
pub struct Runs {
    dir: PathBuf,
    live: Mutex<HashMap<String, Run>>,
    /// The other servers (several servers on one datastore), once wired.
    others: OnceLock<Arc<dyn OtherServers>>,
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs").field("dir", &self.dir).finish()
    }
}

/// Constant-time comparison of two tokens.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Runs {
    /// Runs kept under `dir` (`<data-dir>/server/loadtest`).
    pub fn new(dir: impl Into<PathBuf>) -> Arc<Runs> {
        Arc::new(Runs {
            dir: dir.into(),
            live: Mutex::new(HashMap::new()),
            others: OnceLock::new(),
        })
    }

    /// Wires the other servers: finished runs are copied to them, and results this server does
    /// not hold are asked of them.
    pub fn set_other_servers(&self, others: Arc<dyn OtherServers>) {
        let _ = self.others.set(others);
    }

    /// The other servers, when several share the datastore.
    pub fn other_servers(&self) -> Option<Arc<dyn OtherServers>> {
        self.others.get().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Run>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts recording a run; the generators authenticate with `token`.
    pub fn register(&self, info: RunInfo, token: String) {
        let uid = info.uid.clone();
        self.lock().entry(uid).or_insert(Run {
            info,
            token,
            start_unix_ms: None,
            stop: false,
            phase: "Pending".into(),
            merger: Merger::default(),
            resources: Vec::new(),
        });
    }

    pub fn is_live(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }

    /// Sets the common start instant (milliseconds since the epoch).
    pub fn set_start(&self, uid: &str, unix_ms: i64) {
        if let Some(run) = self.lock().get_mut(uid) {
            run.start_unix_ms = Some(unix_ms);
            run.phase = "Running".into();
        }
    }

    /// Tells the generators to stop at their next report or start poll.
    pub fn stop(&self, uid: &str) {
        if let Some(run) = self.lock().get_mut(uid) {
            run.stop = true;
        }
    }

    fn check<'a>(
        live: &'a mut HashMap<String, Run>,
        uid: &str,
        token: &str,
    ) -> Result<&'a mut Run, Refused> {
        let run = live.get_mut(uid).ok_or(Refused::UnknownRun)?;
        if same(&run.token, token) {
            Ok(run)
        } else {
            Err(Refused::BadToken)
        }
    }

    /// For a generator: the start instant once chosen, and whether to stop.
    pub fn start_of(&self, uid: &str, token: &str) -> Result<(Option<i64>, bool), Refused> {
        let mut live = self.lock();
        let run = Self::check(&mut live, uid, token)?;
        Ok((run.start_unix_ms, run.stop))
    }

    /// Adds a generator's batch; answers whether the generator should stop.
    pub fn add_batch(
        &self,
        uid: &str,
        token: &str,
        batch: &ReportBatch,
    ) -> Result<Result<bool, LoadTestError>, Refused> {
        let mut live = self.lock();
        let run = Self::check(&mut live, uid, token)?;
        Ok(run.merger.add(batch).map(|_| run.stop))
    }

    /// Adds one second of the target's CPU and memory.
    pub fn add_resources(&self, uid: &str, sample: ResourceSample) {
        if let Some(run) = self.lock().get_mut(uid) {
            if run.resources.len() < crate::spec::MAX_DURATION.as_secs() as usize + 120 {
                run.resources.push(sample);
            }
        }
    }

    /// (generators done, generators reporting, connect errors, requests) of a live run.
    pub fn progress(&self, uid: &str) -> Option<(usize, usize, u64, u64)> {
        let live = self.lock();
        let run = live.get(uid)?;
        let (connect, requests) = run.merger.error_kind("connect");
        Some((run.merger.done(), run.merger.reporting(), connect, requests))
    }

    fn document(run: &Run) -> (RunResults, Vec<Verdict>) {
        let info = &run.info;
        let summary = run
            .merger
            .summary(info.duration_seconds, info.requested_rate);
        let verdicts = verdicts(&info.thresholds, &summary, run.merger.total());
        let start_time = run
            .start_unix_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        (
            RunResults {
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                uid: info.uid.clone(),
                target: info.target.clone(),
                url: info.url.clone(),
                model: info.model.clone(),
                generators: info.generators,
                duration_seconds: info.duration_seconds,
                ramp_up_seconds: info.ramp_up_seconds,
                start_time,
                phase: run.phase.clone(),
                summary,
                thresholds: verdicts.clone(),
                seconds: run.merger.rows(),
                resources: run.resources.clone(),
                histogram: encode(run.merger.total()),
            },
            verdicts,
        )
    }

    /// The live run's results so far.
    pub fn snapshot(&self, uid: &str) -> Option<RunResults> {
        self.lock().get(uid).map(|run| Self::document(run).0)
    }

    fn file(&self, namespace: &str, name: &str) -> PathBuf {
        self.dir.join(namespace).join(format!("{name}.json"))
    }

    /// Ends a run: its results with `phase` are written to disk and returned, and the
    /// generators' token stops working.
    pub fn finish(&self, uid: &str, phase: &str) -> Option<Result<RunResults, LoadTestError>> {
        let mut run = self.lock().remove(uid)?;
        run.phase = phase.to_string();
        let (doc, _) = Self::document(&run);
        let written = self.write(&doc);
        if let (Ok(()), Some(others)) = (&written, self.other_servers()) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let copying = others.share(&doc);
                let (namespace, name) = (doc.namespace.clone(), doc.name.clone());
                runtime.spawn(async move {
                    let copies = copying.await;
                    if copies > 0 {
                        tracing::info!(%namespace, %name, copies, "load test results copied to the other servers");
                    }
                });
            }
        }
        Some(written.map(|_| doc))
    }

    /// Stores another server's copy of a finished run's results. Refused for names that are
    /// not object names, for a run still going on, and while this server runs it itself.
    pub fn store_copy(&self, doc: &RunResults) -> Result<(), LoadTestError> {
        if !is_object_name(&doc.namespace) || !is_object_name(&doc.name) {
            return Err(LoadTestError::Invalid(format!(
                "{:?}/{:?} does not name a LoadTest",
                doc.namespace, doc.name
            )));
        }
        if matches!(doc.phase.as_str(), "" | "Pending" | "Running") {
            return Err(LoadTestError::Invalid(format!(
                "the run of {}/{} is not finished (phase {:?}); only finished runs are copied",
                doc.namespace, doc.name, doc.phase
            )));
        }
        if self.is_live(&doc.uid) {
            return Err(LoadTestError::Invalid(format!(
                "this server runs {}/{} itself",
                doc.namespace, doc.name
            )));
        }
        self.write(doc)
    }

    fn write(&self, doc: &RunResults) -> Result<(), LoadTestError> {
        let path = self.file(&doc.namespace, &doc.name);
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| LoadTestError::Io { what, path, source }
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(doc).map_err(|e| LoadTestError::Report(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("renaming", &path))?;
        Ok(())
    }

    /// The results of the LoadTest `namespace/name`: the live run's, else the last finished
    /// run's from disk.
    pub fn results(&self, namespace: &str, name: &str) -> Option<RunResults> {
        {
            let live = self.lock();
            if let Some(run) = live
                .values()
                .find(|r| r.info.namespace == namespace && r.info.name == name)
            {
                return Some(Self::document(run).0);
            }
        }
        let bytes = std::fs::read(self.file(namespace, name)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Forgets the results of a deleted LoadTest.
    pub fn remove(&self, namespace: &str, name: &str) {
        let _ = std::fs::remove_file(self.file(namespace, name));
    }

    /// LoadTests with results on disk: `(namespace, name)`.
    pub fn stored(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Ok(namespaces) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for ns in namespaces.flatten() {
            let Ok(files) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for f in files.flatten() {
                let file = f.file_name().to_string_lossy().to_string();
                if let Some(name) = file.strip_suffix(".json") {
                    out.push((
                        ns.file_name().to_string_lossy().to_string(),
                        name.to_string(),
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{new_hist, record, SecondReport};

    fn info() -> RunInfo {
        RunInfo {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            duration_seconds: 1.0,
            thresholds: vec![Threshold::parse("p99<200ms").unwrap()],
            ..Default::default()
        }
    }

    fn batch() -> ReportBatch {
        let mut h = new_hist();
        record(&mut h, 2000);
        ReportBatch {
            generator: 0,
            seconds: vec![SecondReport {
                second: 0,
                requests: 1,
                codes: [("200".to_string(), 1)].into(),
                histogram: encode(&h),
                ..Default::default()
            }],
            done: true,
        }
    }

    #[test]
    fn runs_wrong_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::new(dir.path());
        runs.register(info(), "secret".into());
        assert_eq!(runs.start_of("u1", "nope"), Err(Refused::BadToken));
        assert_eq!(runs.start_of("u2", "secret"), Err(Refused::UnknownRun));
        assert_eq!(runs.start_of("u1", "secret"), Ok((None, false)));
        runs.set_start("u1", 1_700_000_000_000);
        runs.stop("u1");
        assert_eq!(
            runs.start_of("u1", "secret"),
            Ok((Some(1_700_000_000_000), true))
        );
    }

    #[test]
    fn runs_finished_run_is_read_back_from_disk_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let runs = Runs::new(dir.path());
        runs.register(info(), "t".into());
        runs.add_batch("u1", "t", &batch()).unwrap().unwrap();
        let done = runs.finish("u1", "Succeeded").unwrap().unwrap();
        assert_eq!(done.summary.requests, 1);
        assert!(done.thresholds[0].passed);
        assert!(!runs.is_live("u1"));
        let back = runs.results("default", "web").unwrap();
        assert_eq!(back, done);
        assert_eq!(
            runs.stored(),
            vec![("default".to_string(), "web".to_string())]
        );
        runs.remove("default", "web");
        assert!(runs.results("default", "web").is_none());
    }
}

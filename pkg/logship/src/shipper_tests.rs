//! Unit tests of the shipper: tailing real temp-dir files, rotation racing writes, checkpoints
//! and resume, the retry buffer bound, offsets per source.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::pods::StaticPodLabels;

/// A log server as the design asks of the real one: stores batches in order, drops entries at or
/// below the last stored offset of their source.
#[derive(Default)]
struct Server {
    batches: Mutex<Vec<LogBatch>>,
    down: AtomicBool,
    reject: AtomicBool,
    /// Stores the batch but answers as if the connection broke (the agent cannot know it was stored).
    lose_answer: AtomicBool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    source: String,
    stream: String,
    offset: u64,
    line: String,
}

impl Server {
    fn received(&self) -> Vec<Got> {
        let batches = self.batches.lock().unwrap();
        let mut out = Vec::new();
        for b in batches.iter() {
            for s in &b.streams {
                for e in &s.entries {
                    out.push(Got {
                        source: s.source.clone(),
                        stream: s.labels["stream"].clone(),
                        offset: e.offset,
                        line: e.line.clone(),
                    });
                }
            }
        }
        out
    }

    fn stored(&self) -> Vec<Got> {
        let mut last: HashMap<String, u64> = HashMap::new();
        self.received()
            .into_iter()
            .filter(|g| {
                let keep = last.get(&g.source).is_none_or(|&l| g.offset > l);
                if keep {
                    last.insert(g.source.clone(), g.offset);
                }
                keep
            })
            .collect()
    }

    fn lines(&self) -> Vec<String> {
        self.stored().into_iter().map(|g| g.line).collect()
    }
}

#[async_trait]
impl Sink for Server {
    async fn send(&self, batch: &LogBatch) -> Result<(), SinkError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SinkError::Retry("connection refused".into()));
        }
        if self.reject.load(Ordering::SeqCst) {
            return Err(SinkError::Rejected {
                status: 400,
                message: "bad batch".into(),
            });
        }
        self.batches.lock().unwrap().push(batch.clone());
        if self.lose_answer.load(Ordering::SeqCst) {
            return Err(SinkError::Retry("connection reset".into()));
        }
        Ok(())
    }
}

/// containerd's side of one container's log: appends CRI lines to `path`; a reopen writes the
/// `racing` lines into the renamed file first (writes landing between rename and reopen), then
/// continues in a new file at `path`.
struct Containerd {
    path: PathBuf,
    file: Mutex<File>,
    racing: Mutex<Vec<String>>,
    fail: AtomicBool,
    reopens: AtomicU64,
}

impl Containerd {
    fn new(path: PathBuf) -> Arc<Containerd> {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = open_append(&path);
        Arc::new(Containerd {
            path,
            file: Mutex::new(file),
            racing: Mutex::new(Vec::new()),
            fail: AtomicBool::new(false),
            reopens: AtomicU64::new(0),
        })
    }

    fn write(&self, stream: &str, tag: &str, text: &str) {
        let line = cri(stream, tag, text);
        self.file
            .lock()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }

    fn out(&self, text: &str) {
        self.write("stdout", "F", text);
    }
}

#[async_trait]
impl Reopener for Containerd {
    async fn reopen(
        &self,
        pod_uid: &str,
        container: &str,
        restart: u32,
    ) -> Result<Reopened, String> {
        assert_eq!((pod_uid, container, restart), ("uid1", "app", 0));
        if self.fail.load(Ordering::SeqCst) {
            return Err("rpc error: unavailable".into());
        }
        let mut file = self.file.lock().unwrap();
        for text in self.racing.lock().unwrap().drain(..) {
            file.write_all(cri("stdout", "F", &text).as_bytes())
                .unwrap();
        }
        *file = open_append(&self.path);
        self.reopens.fetch_add(1, Ordering::SeqCst);
        Ok(Reopened::Reopened)
    }
}

fn open_append(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

fn cri(stream: &str, tag: &str, text: &str) -> String {
    format!("2026-12-05T10:00:00.5Z {stream} {tag} {text}\n")
}

struct Setup {
    _dir: tempfile::TempDir,
    config: LogShipConfig,
    server: Arc<Server>,
    containerd: Arc<Containerd>,
    labels: Arc<StaticPodLabels>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let live = logs.join("ns1_web_uid1").join("app").join("0.log");
        let mut config = LogShipConfig::new("node1".into(), logs, dir.path().join("state"));
        config.idle_flush_rounds = 2;
        config.forget_after_rounds = 5;
        let labels = StaticPodLabels(HashMap::from([(
            "uid1".to_string(),
            BTreeMap::from([("app".to_string(), "web".to_string())]),
        )]));
        Setup {
            _dir: dir,
            config,
            server: Arc::new(Server::default()),
            containerd: Containerd::new(live),
            labels: Arc::new(labels),
        }
    }

    fn shipper(&self) -> Shipper {
        Shipper::new(
            self.config.clone(),
            self.server.clone(),
            self.containerd.clone(),
            self.labels.clone(),
        )
        .unwrap()
    }

    fn container_dir(&self) -> PathBuf {
        self.containerd.path.parent().unwrap().to_path_buf()
    }
}

/// Rounds until one ships nothing (bounded, so a bug cannot hang the test).
async fn drain(shipper: &mut Shipper) {
    for _ in 0..1000 {
        if shipper.round().await == Round::Idle {
            return;
        }
    }
    panic!("the shipper never became idle");
}

/// Every source's offsets increase strictly in the order they were sent.
fn assert_offsets_increase(received: &[Got]) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for g in received {
        if let Some(&l) = last.get(g.source.as_str()) {
            assert!(
                g.offset > l,
                "offset {} after {} in {}",
                g.offset,
                l,
                g.source
            );
        }
        last.insert(&g.source, g.offset);
    }
}

fn numbered(n: std::ops::Range<usize>) -> Vec<String> {
    n.map(|i| format!("line {i:05}")).collect()
}

#[tokio::test]
async fn round_new_file_ships_lines_with_labels_and_source() {
    let s = Setup::new();
    s.containerd.out("hello");
    s.containerd.write("stderr", "F", "oops");
    let mut shipper = s.shipper();
    assert!(matches!(
        shipper.round().await,
        Round::Shipped { entries: 2, .. }
    ));
    let batches = s.server.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].node, "node1");
    let streams = &batches[0].streams;
    assert_eq!(streams.len(), 2, "a stream per run of stdout/stderr");
    let labels = &streams[0].labels;
    assert_eq!(labels["namespace"], "ns1");
    assert_eq!(labels["pod"], "web");
    assert_eq!(labels["container"], "app");
    assert_eq!(labels["node"], "node1");
    assert_eq!(labels["stream"], "stdout");
    assert_eq!(streams[1].labels["stream"], "stderr");
    assert_eq!(streams[0].pod_labels["app"], "web");
    assert_eq!(streams[0].source, "node1/uid1/app/0/0");
    assert_eq!(streams[0].entries[0].line, "hello");
    assert_eq!(
        streams[0].entries[0].timestamp_ns,
        1_796_464_800_500_000_000
    );
    assert_eq!(
        streams[1].entries[0].offset,
        cri("stdout", "F", "hello").len() as u64
    );
    assert_eq!(shipper.round().await, Round::Idle);
}

#[tokio::test]
async fn round_partial_lines_across_rounds_ship_joined_once() {
    let s = Setup::new();
    let mut shipper = s.shipper();
    s.containerd.write("stdout", "P", "first half, ");
    assert_eq!(shipper.round().await, Round::Idle, "a partial line waits");
    s.containerd.write("stdout", "F", "second half");
    s.containerd.out("next");
    drain(&mut shipper).await;
    assert_eq!(s.server.lines(), vec!["first half, second half", "next"]);
    assert_eq!(s.server.received().len(), 2);
}

#[tokio::test]
async fn round_dangling_partial_line_ships_after_idle_rounds() {
    let s = Setup::new();
    let mut shipper = s.shipper();
    s.containerd.write("stdout", "P", "no end");
    for _ in 0..3 {
        shipper.round().await;
    }
    assert_eq!(s.server.lines(), vec!["no end"]);
}

#[tokio::test]
async fn round_rotation_racing_writes_loses_and_duplicates_nothing() {
    let mut s = Setup::new();
    s.config.max_file_bytes = 2048;
    s.config.max_files = 1000;
    let mut shipper = s.shipper();
    let want = numbered(0..2000);
    let mut racing = 0;
    for (i, chunk) in want.chunks(37).enumerate() {
        for line in chunk {
            s.containerd.out(line);
        }
        // some lines land in the renamed file between rename and reopen
        if i % 3 == 0 {
            let extra = format!("race {racing:05}");
            racing += 1;
            s.containerd.racing.lock().unwrap().push(extra);
        }
        shipper.round().await;
    }
    drain(&mut shipper).await;
    let rotations = shipper.stats().snapshot().rotations;
    assert!(rotations > 10, "rotated {rotations} times");
    assert_eq!(s.containerd.reopens.load(Ordering::SeqCst), rotations);
    let received = s.server.received();
    assert_offsets_increase(&received);
    assert_eq!(received, s.server.stored(), "nothing was sent twice");
    // every line exactly once; racing lines were written into the renamed files
    let mut got: Vec<String> = received.iter().map(|g| g.line.clone()).collect();
    let raced: Vec<String> = got
        .iter()
        .filter(|l| l.starts_with("race"))
        .cloned()
        .collect();
    got.retain(|l| !l.starts_with("race"));
    assert_eq!(got, want);
    let pending_race = s.containerd.racing.lock().unwrap().len();
    assert_eq!(raced.len() + pending_race, racing);
    // one source per file generation
    let sources: BTreeSet<&str> = received.iter().map(|g| g.source.as_str()).collect();
    assert_eq!(sources.len() as u64, rotations + 1);
    assert!(sources.contains(format!("node1/uid1/app/0/{rotations}").as_str()));
    // the current file is still where kubectl logs reads it
    assert!(s.containerd.path.exists());
}

#[tokio::test]
async fn round_rotation_keeps_max_files_per_container() {
    let mut s = Setup::new();
    s.config.max_file_bytes = 500;
    s.config.max_files = 3;
    let mut shipper = s.shipper();
    for line in numbered(0..200) {
        s.containerd.out(&line);
        if line.ends_with('0') {
            shipper.round().await;
        }
    }
    drain(&mut shipper).await;
    let files = std::fs::read_dir(s.container_dir()).unwrap().count();
    assert_eq!(files, 3, "the current file and two rotated ones");
    assert_eq!(
        s.server.lines(),
        numbered(0..200),
        "all shipped before removal"
    );
    assert_eq!(shipper.stats().snapshot().gap_bytes, 0);
}

#[tokio::test]
async fn round_server_away_rotated_files_removed_unread_count_a_gap() {
    let mut s = Setup::new();
    s.config.max_file_bytes = 500;
    s.config.max_files = 2;
    s.config.buffer_max_bytes = 100;
    s.config.read_chunk = 128;
    s.server.down.store(true, Ordering::SeqCst);
    let mut shipper = s.shipper();
    for line in numbered(0..200) {
        s.containerd.out(&line);
        if line.ends_with('0') {
            shipper.round().await;
        }
    }
    let stats = shipper.stats().snapshot();
    assert!(stats.gap_bytes > 0, "{stats:?}");
    assert!(stats.batches_failed > 0);
}

#[tokio::test]
async fn round_reopen_failure_puts_the_file_back() {
    let mut s = Setup::new();
    s.config.max_file_bytes = 100;
    s.containerd.fail.store(true, Ordering::SeqCst);
    let mut shipper = s.shipper();
    for line in numbered(0..10) {
        s.containerd.out(&line);
    }
    drain(&mut shipper).await;
    assert_eq!(shipper.stats().snapshot().rotation_failures, 1);
    let files: Vec<_> = std::fs::read_dir(s.container_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, vec!["0.log"]);
    s.containerd.out("after");
    drain(&mut shipper).await;
    let mut want = numbered(0..10);
    want.push("after".into());
    assert_eq!(s.server.lines(), want);
}

#[tokio::test]
async fn round_restart_resumes_without_loss_or_duplicates() {
    let s = Setup::new();
    let mut shipper = s.shipper();
    for line in numbered(0..50) {
        s.containerd.out(&line);
    }
    drain(&mut shipper).await;
    // read but not acknowledged when the agent dies
    s.server.down.store(true, Ordering::SeqCst);
    for line in numbered(50..80) {
        s.containerd.out(&line);
    }
    assert_eq!(shipper.round().await, Round::Failed);
    drop(shipper);
    s.server.down.store(false, Ordering::SeqCst);
    for line in numbered(80..100) {
        s.containerd.out(&line);
    }
    let mut shipper = s.shipper();
    drain(&mut shipper).await;
    let received = s.server.received();
    assert_eq!(received, s.server.stored(), "nothing was sent twice");
    assert_eq!(s.server.lines(), numbered(0..100));
    assert_offsets_increase(&received);
    let sources: BTreeSet<&str> = received.iter().map(|g| g.source.as_str()).collect();
    assert_eq!(
        sources.len(),
        1,
        "same source after the restart: {sources:?}"
    );
}

#[tokio::test]
async fn round_lost_answer_is_resent_and_deduplicated_by_offset() {
    let s = Setup::new();
    for line in numbered(0..20) {
        s.containerd.out(&line);
    }
    s.server.lose_answer.store(true, Ordering::SeqCst);
    let mut shipper = s.shipper();
    assert_eq!(shipper.round().await, Round::Failed);
    drop(shipper);
    s.server.lose_answer.store(false, Ordering::SeqCst);
    let mut shipper = s.shipper();
    drain(&mut shipper).await;
    assert_eq!(s.server.received().len(), 40, "sent twice on the wire");
    assert_eq!(s.server.lines(), numbered(0..20), "stored once");
}

#[tokio::test]
async fn round_restart_between_interleaved_partials_skips_shipped_lines() {
    let s = Setup::new();
    s.containerd.write("stdout", "P", "out-a ");
    s.containerd.write("stderr", "P", "err-a ");
    s.containerd.write("stdout", "F", "out-b");
    let mut shipper = s.shipper();
    assert!(matches!(
        shipper.round().await,
        Round::Shipped { entries: 1, .. }
    ));
    drop(shipper);
    s.containerd.write("stderr", "F", "err-b");
    s.containerd.out("last");
    let mut shipper = s.shipper();
    drain(&mut shipper).await;
    assert_eq!(s.server.lines(), vec!["out-a out-b", "err-a err-b", "last"]);
    assert_eq!(s.server.received().len(), 3);
    assert_offsets_increase(&s.server.received());
}

#[tokio::test]
async fn round_restart_after_rotation_continues_both_files() {
    let mut s = Setup::new();
    s.config.max_file_bytes = 300;
    let mut shipper = s.shipper();
    s.server.down.store(true, Ordering::SeqCst);
    for line in numbered(0..20) {
        s.containerd.out(&line);
    }
    shipper.round().await; // rotates; nothing acknowledged
    for line in numbered(20..30) {
        s.containerd.out(&line);
    }
    shipper.round().await;
    assert!(shipper.stats().snapshot().rotations >= 1);
    drop(shipper);
    s.server.down.store(false, Ordering::SeqCst);
    let mut shipper = s.shipper();
    drain(&mut shipper).await;
    let mut lines = s.server.lines();
    lines.sort();
    assert_eq!(lines, numbered(0..30));
    assert_eq!(s.server.received().len(), 30);
    let sources: BTreeSet<String> = s.server.received().into_iter().map(|g| g.source).collect();
    assert!(
        sources.contains("node1/uid1/app/0/0") && sources.contains("node1/uid1/app/0/1"),
        "{sources:?}"
    );
}

#[tokio::test]
async fn round_server_away_buffer_stays_bounded_then_everything_ships() {
    let mut s = Setup::new();
    s.config.buffer_max_bytes = 2000;
    s.config.read_chunk = 512;
    s.server.down.store(true, Ordering::SeqCst);
    let mut shipper = s.shipper();
    for line in numbered(0..500) {
        s.containerd.out(&line);
    }
    for _ in 0..5 {
        assert_eq!(shipper.round().await, Round::Failed);
        let buffered = shipper.stats().snapshot().buffered_bytes;
        assert!(buffered <= 2000 + 512 * 2, "buffered {buffered}");
    }
    s.server.down.store(false, Ordering::SeqCst);
    drain(&mut shipper).await;
    assert_eq!(s.server.lines(), numbered(0..500));
    assert_eq!(shipper.stats().snapshot().buffered_bytes, 0);
}

#[tokio::test]
async fn round_rejected_batch_is_counted_and_not_resent() {
    let s = Setup::new();
    s.containerd.out("bad");
    s.server.reject.store(true, Ordering::SeqCst);
    let mut shipper = s.shipper();
    assert_eq!(shipper.round().await, Round::Rejected { entries: 1 });
    s.server.reject.store(false, Ordering::SeqCst);
    s.containerd.out("good");
    drain(&mut shipper).await;
    assert_eq!(s.server.lines(), vec!["good"]);
    assert_eq!(shipper.stats().snapshot().entries_dropped, 1);
}

#[tokio::test]
async fn round_deleted_pod_dir_still_ships_unshipped_lines() {
    let s = Setup::new();
    s.containerd.out("one");
    let mut shipper = s.shipper();
    s.server.down.store(true, Ordering::SeqCst);
    shipper.round().await;
    s.containerd.out("two");
    let pod_dir = s.container_dir().parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&pod_dir).unwrap();
    s.server.down.store(false, Ordering::SeqCst);
    drain(&mut shipper).await;
    assert_eq!(s.server.lines(), vec!["one", "two"]);
    for _ in 0..6 {
        shipper.round().await;
    }
    assert!(
        shipper.sources.is_empty(),
        "the source is forgotten once shipped"
    );
    let state = state::load(&s.config.state_dir).unwrap();
    assert!(state.sources.is_empty());
}

#[test]
fn parse_log_name_live_rotated_and_others() {
    assert_eq!(parse_log_name("0.log"), Some((0, true)));
    assert_eq!(parse_log_name("3.log.20261205-101010"), Some((3, false)));
    assert_eq!(parse_log_name("3.log.20261205-101010.gz"), None);
    assert_eq!(parse_log_name("3.log.tmp"), None);
    assert_eq!(parse_log_name("x.log"), None);
}

#[tokio::test]
async fn round_file_missed_by_one_listing_continues_as_the_same_source() {
    let s = Setup::new();
    s.containerd.out("one");
    let mut shipper = s.shipper();
    drain(&mut shipper).await;
    let pod_dir = s.container_dir().parent().unwrap().to_path_buf();
    let aside = s.config.logs_dir.parent().unwrap().join("aside");
    std::fs::rename(&pod_dir, &aside).unwrap();
    s.containerd.out("two");
    drain(&mut shipper).await;
    std::fs::rename(&aside, &pod_dir).unwrap();
    s.containerd.out("three");
    drain(&mut shipper).await;
    assert_eq!(s.server.lines(), vec!["one", "two", "three"]);
    let received = s.server.received();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|g| g.source == "node1/uid1/app/0/0"));
}

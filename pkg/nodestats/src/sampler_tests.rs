//! Unit tests of whole sampling rounds on fake cgroup v1 and v2 hosts, and of the shipping
//! loop's queue draining.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::hostfs::{FakeFs, FsSize};
use crate::pods::ContainerRef;
use crate::queue::BatchQueue;
use crate::ship::{drain, SampleSink};
use crate::wire::SampleBatch;
use crate::{NodeStatsConfig, NodeStatsError, Sampler};

const PROC_STAT: &str = "cpu  300 0 100 1000 10 0 0 0 0 0\n\
    cpu0 200 0 50 500 5 0 0 0 0 0\n\
    cpu1 100 0 50 500 5 0 0 0 0 0\n\
    btime 1700000000\n";

fn node_files(fs: &FakeFs, mounts: &str) {
    fs.set(
        "/proc/mounts",
        format!("/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 /var/lib/mini xfs rw 0 0\n{mounts}"),
    );
    fs.set("/proc/stat", PROC_STAT);
    fs.set(
        "/proc/meminfo",
        "MemTotal: 4000 kB\nMemFree: 1000 kB\nMemAvailable: 3000 kB\nBuffers: 100 kB\nCached: 500 kB\n",
    );
    fs.set("/proc/loadavg", "0.10 0.20 0.30 1/100 999\n");
    fs.set(
        "/proc/net/dev",
        "Inter-| header\n face | header\n    lo: 5 0 0 0 0 0 0 0 5 0 0 0 0 0 0 0\n  \
         eth0: 1000 0 0 0 0 0 0 0 2000 0 0 0 0 0 0 0\n  \
         veth12ab: 7 0 0 0 0 0 0 0 8 0 0 0 0 0 0 0\n  \
         mini0: 30 0 0 0 0 0 0 0 40 0 0 0 0 0 0 0\n",
    );
    fs.set_filesystem(
        "/",
        FsSize {
            size_bytes: 100,
            avail_bytes: 40,
        },
    );
    fs.set_filesystem(
        "/var/lib/mini",
        FsSize {
            size_bytes: 1000,
            avail_bytes: 900,
        },
    );
}

const V1_MOUNTS: &str = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
    cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";

fn v1_container(fs: &FakeFs, pid: u32, id: &str, cpu_ns: u64, usage: u64, inactive: u64) {
    fs.set(
        format!("/proc/{pid}/cgroup"),
        format!("5:memory:/k8s.io/{id}\n3:cpu,cpuacct:/k8s.io/{id}\n"),
    );
    let cpu = format!("/sys/fs/cgroup/cpu,cpuacct/k8s.io/{id}");
    let mem = format!("/sys/fs/cgroup/memory/k8s.io/{id}");
    fs.set(format!("{cpu}/cpuacct.usage"), format!("{cpu_ns}\n"));
    fs.set(format!("{mem}/memory.usage_in_bytes"), format!("{usage}\n"));
    fs.set(
        format!("{mem}/memory.stat"),
        format!("total_rss {}\ntotal_inactive_file {inactive}\n", usage / 2),
    );
    fs.set(
        format!("{mem}/memory.limit_in_bytes"),
        "9223372036854771712\n",
    );
}

fn v2_container(fs: &FakeFs, pid: u32, id: &str, cpu_ns: u64, usage: u64, inactive: u64) {
    fs.set(format!("/proc/{pid}/cgroup"), format!("0::/k8s.io/{id}\n"));
    let dir = format!("/sys/fs/cgroup/k8s.io/{id}");
    fs.set(
        format!("{dir}/cpu.stat"),
        format!("usage_usec {}\n", cpu_ns / 1000),
    );
    fs.set(format!("{dir}/memory.current"), format!("{usage}\n"));
    fs.set(
        format!("{dir}/memory.stat"),
        format!("anon {}\ninactive_file {inactive}\n", usage / 2),
    );
    fs.set(format!("{dir}/memory.max"), "max\n");
}

fn pod_net(fs: &FakeFs, pid: u32, rx: u64, tx: u64) {
    fs.set(
        format!("/proc/{pid}/net/dev"),
        format!("h\nh\n lo: 1 0 0 0 0 0 0 0 1 0 0 0 0 0 0 0\n eth0: {rx} 0 0 0 0 0 0 0 {tx} 0 0 0 0 0 0 0\n"),
    );
}

fn cref(id: &str, pod: &str, container: &str, attempt: u32, pid: Option<u32>) -> ContainerRef {
    ContainerRef {
        id: id.into(),
        namespace: "shop".into(),
        pod: pod.into(),
        pod_uid: format!("uid-{pod}"),
        container: container.into(),
        attempt,
        pid,
    }
}

fn sampler(fs: Arc<FakeFs>) -> Arc<Sampler> {
    Sampler::new(
        NodeStatsConfig::new("n1", std::path::Path::new("/var/lib/mini")),
        fs,
        None,
    )
}

/// The value of the one series with exactly these labels (plus node and instance).
fn value(batch: &SampleBatch, name: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let mut want: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.insert("__name__".into(), name.into());
    want.insert("node".into(), "n1".into());
    want.insert("instance".into(), "n1".into());
    let found: Vec<_> = batch.series.iter().filter(|s| s.labels == want).collect();
    assert!(found.len() <= 1, "duplicate series {want:?}");
    found.first().map(|s| {
        assert_eq!(s.samples.len(), 1);
        s.samples[0].1
    })
}

fn two_pods() -> Vec<ContainerRef> {
    vec![
        cref("c1", "web", "app", 2, Some(101)),
        cref("c0", "web", "app", 1, None), // the exited previous attempt
        cref("c2", "web", "sidecar", 0, Some(102)),
        cref("c3", "db", "db", 0, Some(103)),
    ]
}

fn check_round(batch: &SampleBatch) {
    let pod = |c: &'static str| [("namespace", "shop"), ("pod", "web"), ("container", c)];
    // node rows
    assert_eq!(
        value(
            batch,
            "node_cpu_seconds_total",
            &[("cpu", "0"), ("mode", "user")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            batch,
            "node_cpu_seconds_total",
            &[("cpu", "1"), ("mode", "steal")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(batch, "node_memory_MemAvailable_bytes", &[]),
        Some(3000.0 * 1024.0)
    );
    assert_eq!(
        value(batch, "node_memory_Cached_bytes", &[]),
        Some(500.0 * 1024.0)
    );
    assert_eq!(value(batch, "node_load15", &[]), Some(0.3));
    assert_eq!(value(batch, "node_boot_time_seconds", &[]), Some(1.7e9));
    let data_fs = [
        ("device", "/dev/sdb1"),
        ("mountpoint", "/var/lib/mini"),
        ("fstype", "xfs"),
    ];
    assert_eq!(
        value(batch, "node_filesystem_avail_bytes", &data_fs),
        Some(900.0)
    );
    let root_fs = [
        ("device", "/dev/sda1"),
        ("mountpoint", "/"),
        ("fstype", "ext4"),
    ];
    assert_eq!(
        value(batch, "node_filesystem_size_bytes", &root_fs),
        Some(100.0)
    );
    assert_eq!(
        value(
            batch,
            "node_network_receive_bytes_total",
            &[("device", "eth0")]
        ),
        Some(1000.0)
    );
    assert_eq!(
        value(
            batch,
            "node_network_transmit_bytes_total",
            &[("device", "mini0")]
        ),
        Some(40.0)
    );
    for skipped in ["lo", "veth12ab"] {
        assert_eq!(
            value(
                batch,
                "node_network_receive_bytes_total",
                &[("device", skipped)]
            ),
            None
        );
    }
    // container rows: working set = usage - inactive_file
    assert_eq!(
        value(batch, "container_cpu_usage_seconds_total", &pod("app")),
        Some(1.5)
    );
    assert_eq!(
        value(batch, "container_memory_usage_bytes", &pod("app")),
        Some(1000.0)
    );
    assert_eq!(
        value(batch, "container_memory_working_set_bytes", &pod("app")),
        Some(800.0)
    );
    assert_eq!(
        value(batch, "container_memory_rss", &pod("app")),
        Some(500.0)
    );
    assert_eq!(
        value(batch, "container_spec_memory_limit_bytes", &pod("app")),
        None
    );
    // the pod row: the sum of its running containers
    assert_eq!(
        value(batch, "container_cpu_usage_seconds_total", &pod("")),
        Some(2.0)
    );
    assert_eq!(
        value(batch, "container_memory_working_set_bytes", &pod("")),
        Some(1100.0)
    );
    // restarts: the newest attempt of each container name
    assert_eq!(
        value(
            batch,
            "kube_pod_container_status_restarts_total",
            &pod("app")
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            batch,
            "kube_pod_container_status_restarts_total",
            &pod("sidecar")
        ),
        Some(0.0)
    );
    // pod network from a container process, without lo
    let net = [
        ("namespace", "shop"),
        ("pod", "web"),
        ("container", ""),
        ("interface", "eth0"),
    ];
    assert_eq!(
        value(batch, "container_network_receive_bytes_total", &net),
        Some(10.0)
    );
    assert_eq!(
        value(batch, "container_network_transmit_bytes_total", &net),
        Some(20.0)
    );
    let lo = [
        ("namespace", "shop"),
        ("pod", "web"),
        ("container", ""),
        ("interface", "lo"),
    ];
    assert_eq!(
        value(batch, "container_network_receive_bytes_total", &lo),
        None
    );
    // every series is stamped once, at the round's time, with node and instance
    assert!(batch
        .series
        .iter()
        .all(|s| s.samples.len() == 1 && s.labels["instance"] == "n1"));
    assert!(batch
        .series
        .iter()
        .all(|s| !s.labels.contains_key("namespace")
            || s.labels["__name__"].starts_with("container_")
            || s.labels["__name__"].starts_with("kube_")));
}

#[test]
fn sample_cgroup_v1_host_reports_node_container_and_pod_rows() {
    let fs = Arc::new(FakeFs::new());
    node_files(&fs, V1_MOUNTS);
    v1_container(&fs, 101, "c1", 1_500_000_000, 1000, 200);
    v1_container(&fs, 102, "c2", 500_000_000, 400, 100);
    v1_container(&fs, 103, "c3", 7, 10, 0);
    pod_net(&fs, 101, 10, 20);
    pod_net(&fs, 103, 1, 2);
    let s = sampler(fs.clone());
    assert_eq!(s.cgroup_version(), Some(1));
    let batch = s.sample_containers(1_000, &two_pods()).expect("round");
    assert_eq!(batch.node, "n1");
    check_round(&batch);
}

#[test]
fn sample_cgroup_v2_host_reports_node_container_and_pod_rows() {
    let fs = Arc::new(FakeFs::new());
    node_files(&fs, "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n");
    v2_container(&fs, 101, "c1", 1_500_000_000, 1000, 200);
    v2_container(&fs, 102, "c2", 500_000_000, 400, 100);
    v2_container(&fs, 103, "c3", 7_000, 10, 0);
    pod_net(&fs, 101, 10, 20);
    let s = sampler(fs.clone());
    assert_eq!(s.cgroup_version(), Some(2));
    check_round(&s.sample_containers(1_000, &two_pods()).expect("round"));
}

#[test]
fn sample_memory_limit_is_reported_only_when_set() {
    let fs = Arc::new(FakeFs::new());
    node_files(&fs, V1_MOUNTS);
    v1_container(&fs, 101, "c1", 1, 1000, 0);
    fs.set(
        "/sys/fs/cgroup/memory/k8s.io/c1/memory.limit_in_bytes",
        "268435456\n",
    );
    let s = sampler(fs.clone());
    let batch = s
        .sample_containers(1_000, &[cref("c1", "web", "app", 0, Some(101))])
        .expect("round");
    let app = [("namespace", "shop"), ("pod", "web"), ("container", "app")];
    let pod = [("namespace", "shop"), ("pod", "web"), ("container", "")];
    assert_eq!(
        value(&batch, "container_spec_memory_limit_bytes", &app),
        Some(268435456.0)
    );
    assert_eq!(
        value(&batch, "container_spec_memory_limit_bytes", &pod),
        Some(268435456.0)
    );
}

#[test]
fn sample_container_gone_between_list_and_read_is_left_out() {
    let fs = Arc::new(FakeFs::new());
    node_files(&fs, V1_MOUNTS);
    let s = sampler(fs.clone());
    let batch = s
        .sample_containers(1_000, &[cref("c9", "gone", "app", 4, Some(999))])
        .expect("round");
    let app = [("namespace", "shop"), ("pod", "gone"), ("container", "app")];
    assert_eq!(
        value(&batch, "container_cpu_usage_seconds_total", &app),
        None
    );
    assert_eq!(
        value(&batch, "kube_pod_container_status_restarts_total", &app),
        Some(4.0)
    );
}

#[test]
fn sample_without_proc_stat_fails_and_invents_nothing() {
    let fs = Arc::new(FakeFs::new());
    let s = sampler(fs);
    assert_eq!(s.cgroup_version(), None);
    assert!(s.sample_containers(1_000, &[]).is_err());
    assert!(s.summary().is_none());
}

#[test]
fn summary_two_rounds_give_rates_from_the_same_samples() {
    let fs = Arc::new(FakeFs::new());
    node_files(&fs, V1_MOUNTS);
    v1_container(&fs, 101, "c1", 1_000_000_000, 1000, 200);
    let s = sampler(fs.clone());
    let containers = [cref("c1", "web", "app", 0, Some(101))];
    s.sample_containers(0, &containers).expect("round 1");
    v1_container(&fs, 101, "c1", 3_000_000_000, 1000, 200); // 2 s of CPU in 10 s
    fs.set("/proc/stat", PROC_STAT.replace("cpu  300", "cpu  1300"));
    s.sample_containers(10_000, &containers).expect("round 2");
    let summary = s.summary().expect("summary");
    let web = &summary["pods"][0];
    assert_eq!(web["podRef"]["name"], "web");
    assert_eq!(web["cpu"]["usageNanoCores"], 200_000_000);
    assert_eq!(web["memory"]["workingSetBytes"], 800);
    // 1000 ticks of user time at 100 Hz in 10 s = 1 core
    assert_eq!(summary["node"]["cpu"]["usageNanoCores"], 1_000_000_000);
}

/// A sink that fails while `down`, refuses the batches of times in `refuse`, and records
/// what it accepted.
#[derive(Default)]
struct FakeSink {
    down: Mutex<bool>,
    refuse: Mutex<Vec<i64>>,
    accepted: Mutex<Vec<SampleBatch>>,
}

#[async_trait]
impl SampleSink for FakeSink {
    async fn send(&self, batch: &SampleBatch) -> Result<(), NodeStatsError> {
        if *self.down.lock().expect("lock") {
            return Err(NodeStatsError::Ship("connection refused".into()));
        }
        if self
            .refuse
            .lock()
            .expect("lock")
            .contains(&batch.series[0].samples[0].0)
        {
            return Err(NodeStatsError::Rejected("400 bad batch".into()));
        }
        self.accepted.lock().expect("lock").push(batch.clone());
        Ok(())
    }
}

#[tokio::test]
async fn drain_server_away_keeps_batches_and_sends_them_in_order_later() {
    let fs = Arc::new(FakeFs::new());
    node_files(&fs, V1_MOUNTS);
    let s = sampler(fs);
    let sink = FakeSink::default();
    let queue = Mutex::new(BatchQueue::new(3));
    *sink.down.lock().expect("lock") = true;
    for t in 1..=4 {
        let batch = s.sample_containers(t * 10_000, &[]).expect("round");
        let dropped = queue.lock().expect("lock").push(batch);
        s.shipping.batches_dropped.inc_by(dropped as u64);
        assert!(drain(&queue, &sink, &s).await.is_err());
    }
    assert!(sink.accepted.lock().expect("lock").is_empty());
    let counts = s.shipping_counts();
    assert_eq!(
        (
            counts.batches_failed,
            counts.batches_dropped,
            counts.queue_batches
        ),
        (4, 1, 3)
    );
    *sink.down.lock().expect("lock") = false;
    drain(&queue, &sink, &s).await.expect("sent");
    let times: Vec<i64> = sink
        .accepted
        .lock()
        .expect("lock")
        .iter()
        .map(|b| {
            let t = b.series[0].samples[0].0;
            assert!(b
                .series
                .iter()
                .all(|s| s.samples == vec![(t, s.samples[0].1)]));
            t
        })
        .collect();
    assert_eq!(
        times,
        vec![20_000, 30_000, 40_000],
        "oldest dropped, the rest in order, one point each"
    );
    let counts = s.shipping_counts();
    assert_eq!((counts.batches_sent, counts.queue_batches), (3, 0));
    assert!(s
        .metrics_text()
        .contains("mini_nodestats_batches_sent_total 3"));
}

#[tokio::test]
async fn drain_refused_batch_is_dropped_and_the_rest_still_sent() {
    let fs = Arc::new(FakeFs::new());
    node_files(&fs, V1_MOUNTS);
    let s = sampler(fs);
    let sink = FakeSink::default();
    sink.refuse.lock().expect("lock").push(10_000);
    let queue = Mutex::new(BatchQueue::new(10));
    for t in 1..=2 {
        let batch = s.sample_containers(t * 10_000, &[]).expect("round");
        queue.lock().expect("lock").push(batch);
    }
    drain(&queue, &sink, &s).await.expect("drained");
    let accepted = sink.accepted.lock().expect("lock").clone();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].series[0].samples[0].0, 20_000);
    let counts = s.shipping_counts();
    assert_eq!(
        (
            counts.batches_rejected,
            counts.batches_sent,
            counts.queue_batches
        ),
        (1, 1, 0)
    );
}

#[test]
fn on_grid_rounds_jittered_times_to_the_nearest_tick() {
    use crate::ship::on_grid;
    assert_eq!(on_grid(1_700_000_010_013, 10_000), 1_700_000_010_000);
    assert_eq!(on_grid(1_700_000_009_990, 10_000), 1_700_000_010_000);
    assert_eq!(on_grid(1_700_000_014_999, 10_000), 1_700_000_010_000);
    assert_eq!(on_grid(1_700_000_015_000, 10_000), 1_700_000_020_000);
}

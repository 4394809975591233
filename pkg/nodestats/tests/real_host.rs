//! Root-only: samples this real machine (/proc, statvfs and a real cgroup hierarchy, v1 or v2)
//! with a process the test puts into a cgroup it creates, and checks the values are
//! plausible. Skipped (with a message) when not root. Removes its process and cgroups.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use mini_nodestats::pods::ContainerRef;
use mini_nodestats::procfs::parse_mounts;
use mini_nodestats::{NodeStatsConfig, RealFs, SampleBatch, Sampler};

/// The cgroup directories the test created and the process in them; removed on drop.
struct Fixture {
    dirs: Vec<PathBuf>,
    child: Child,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for dir in &self.dirs {
            // the process is gone: the cgroup is empty and can be removed
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The directories of a new cgroup named `name` in each hierarchy the sampler reads.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mounts = parse_mounts(&std::fs::read_to_string("/proc/mounts").expect("mounts"));
    let v1 = |c: &str| {
        mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == c))
            .map(|m| PathBuf::from(&m.mountpoint))
    };
    let mut dirs = match (v1("cpuacct"), v1("memory")) {
        (Some(cpu), Some(mem)) => vec![cpu.join(name), mem.join(name)],
        _ => {
            let v2 = mounts
                .iter()
                .find(|m| m.fstype == "cgroup2")
                .expect("a cgroup hierarchy");
            vec![Path::new(&v2.mountpoint).join(name)]
        }
    };
    dirs.dedup();
    dirs
}

fn value(batch: &SampleBatch, name: &str, extra: &[(&str, &str)]) -> Vec<f64> {
    batch
        .series
        .iter()
        .filter(|s| {
            s.labels.get("__name__").map(String::as_str) == Some(name)
                && extra
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.samples[0].1)
        .collect()
}

#[tokio::test]
async fn sample_real_host_values_are_plausible() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: not root (creating a cgroup needs root)");
        return;
    }
    let name = format!("mini-nodestats-test-{}", std::process::id());
    let dirs = cgroup_dirs(&name);
    for d in &dirs {
        std::fs::create_dir_all(d).expect("create cgroup");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ready = tmp.path().join("ready");
    // the shell joins the cgroups, then allocates and burns a little so usage is non-zero
    let join: String = dirs
        .iter()
        .map(|d| format!("echo $$ > {}/cgroup.procs && ", d.display()))
        .collect();
    let script = format!(
        "{join} x=$(head -c 2000000 /dev/zero | tr '\\0' a | wc -c) && touch {} && exec sleep 600",
        ready.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let _fixture = Fixture {
        dirs: dirs.clone(),
        child,
    };
    for _ in 0..1500 {
        if ready.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready.exists(), "the test process never joined its cgroup");

    let sampler = Sampler::new(
        NodeStatsConfig::new("real", tmp.path()),
        Arc::new(RealFs),
        None,
    );
    let version = sampler.cgroup_version().expect("cgroups found");
    let containers = [ContainerRef {
        id: "test".into(),
        namespace: "ns".into(),
        pod: "p".into(),
        pod_uid: "u".into(),
        container: "c".into(),
        attempt: 1,
        pid: Some(pid),
    }];
    let now_ms = chrono::Utc::now().timestamp_millis();
    let started = std::time::Instant::now();
    let batch = sampler
        .sample_containers(now_ms, &containers)
        .expect("round");
    // a measurement printed for the report, not asserted (the machine is noisy)
    eprintln!(
        "cgroup v{version}: {} series from this machine, one round in {:?}, {} bytes of JSON",
        batch.series.len(),
        started.elapsed(),
        batch.to_json().len()
    );

    // node: one series per cpu and mode, memory, load, filesystems, boot time
    let cpus = std::fs::read_to_string("/proc/stat")
        .expect("stat")
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(value(&batch, "node_cpu_seconds_total", &[]).len(), cpus * 8);
    assert!(value(&batch, "node_cpu_seconds_total", &[("mode", "idle")])
        .iter()
        .all(|v| *v > 0.0));
    let total = value(&batch, "node_memory_MemTotal_bytes", &[])[0];
    let available = value(&batch, "node_memory_MemAvailable_bytes", &[])[0];
    assert!(total > 64.0 * 1024.0 * 1024.0 && available > 0.0 && available <= total);
    assert!(value(&batch, "node_load1", &[])[0] >= 0.0);
    let boot = value(&batch, "node_boot_time_seconds", &[])[0];
    assert!(boot > 1e9 && boot < now_ms as f64 / 1000.0);
    let root = [("mountpoint", "/")];
    let size = value(&batch, "node_filesystem_size_bytes", &root);
    let avail = value(&batch, "node_filesystem_avail_bytes", &root);
    assert!(
        size.len() == 1 && size[0] > 0.0 && avail[0] <= size[0],
        "{size:?} {avail:?}"
    );

    // the test's "container" and its pod row
    let c = [("namespace", "ns"), ("pod", "p"), ("container", "c")];
    let cpu = value(&batch, "container_cpu_usage_seconds_total", &c);
    let usage = value(&batch, "container_memory_usage_bytes", &c);
    let ws = value(&batch, "container_memory_working_set_bytes", &c);
    let rss = value(&batch, "container_memory_rss", &c);
    eprintln!("cpu {cpu:?} s, usage {usage:?} B, working set {ws:?} B, rss {rss:?} B");
    assert!(cpu.len() == 1 && cpu[0] > 0.0 && cpu[0] < 60.0);
    assert!(usage[0] > 0.0 && usage[0] < total);
    assert!(ws[0] <= usage[0] && rss[0] <= usage[0]);
    assert_eq!(
        value(&batch, "container_spec_memory_limit_bytes", &c).len(),
        0
    );
    let pod = [("namespace", "ns"), ("pod", "p"), ("container", "")];
    assert_eq!(
        value(&batch, "container_cpu_usage_seconds_total", &pod),
        cpu
    );
    assert_eq!(
        value(&batch, "kube_pod_container_status_restarts_total", &c),
        vec![1.0]
    );
    // the process shares the host's network namespace: the pod sees its interfaces (not lo)
    assert!(value(
        &batch,
        "container_network_receive_bytes_total",
        &[("interface", "lo")]
    )
    .is_empty());

    // a limit set on the cgroup is reported
    let limit_file = if version == 1 {
        dirs.iter()
            .map(|d| d.join("memory.limit_in_bytes"))
            .find(|p| p.exists())
    } else {
        Some(dirs[0].join("memory.max"))
    };
    if let Some(file) = limit_file {
        std::fs::write(&file, "1073741824").expect("set a memory limit");
        let batch = sampler
            .sample_containers(now_ms + 10_000, &containers)
            .expect("round 2");
        assert_eq!(
            value(&batch, "container_spec_memory_limit_bytes", &c),
            vec![1073741824.0]
        );
        let summary = sampler.summary().expect("summary");
        assert_eq!(summary["pods"][0]["podRef"]["name"], "p");
        assert!(summary["node"]["cpu"]["usageNanoCores"].as_u64().is_some());
    }
}

//! Unit tests of killall over a fake host: which processes die, in what order mounts go,
//! which namespaces, interfaces, tables and cgroups are removed, and what is left alone.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mini_sys::netlink::FakeNetlink;
use mini_sys::nft::FakeNft;

use super::*;
use crate::plan::{mounts_under, parse_bundle, pod_cgroups, pod_netns, runtime_processes};

const DATA: &str = "/var/lib/mini";
const SOCK: &str = "/var/lib/mini/agent/containerd/containerd.sock";
const TASKS: &str = "/var/lib/mini/agent/containerd/state/io.containerd.runtime.v2.task";

#[derive(Default)]
struct FakeSystem {
    procs: RefCell<BTreeMap<u32, ProcInfo>>,
    /// Processes that ignore SIGTERM.
    stubborn: BTreeSet<u32>,
    files: RefCell<BTreeMap<PathBuf, String>>,
    dirs: BTreeMap<PathBuf, Vec<String>>,
    mountinfo: RefCell<String>,
    busy: BTreeSet<PathBuf>,
    units: BTreeMap<String, Unit>,
    calls: RefCell<Vec<String>>,
}

fn proc(pid: u32, ppid: u32, exe: &str, cmdline: &[&str]) -> ProcInfo {
    ProcInfo {
        pid,
        ppid,
        exe: Some(PathBuf::from(exe)),
        cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
        cwd: Some(PathBuf::from("/")),
        env_data_dir: None,
    }
}

impl FakeSystem {
    fn add(&self, p: ProcInfo) {
        self.procs.borrow_mut().insert(p.pid, p);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
    fn log(&self, call: String) {
        self.calls.borrow_mut().push(call);
    }
}

impl System for FakeSystem {
    fn pids(&self) -> Vec<u32> {
        self.procs.borrow().keys().copied().collect()
    }
    fn process(&self, pid: u32) -> Option<ProcInfo> {
        self.procs.borrow().get(&pid).cloned()
    }
    fn alive(&self, pid: u32) -> bool {
        self.procs.borrow().contains_key(&pid)
    }
    fn signal(&self, pid: u32, sig: Sig) -> io::Result<()> {
        self.log(format!("signal {pid} {sig:?}"));
        if !self.alive(pid) {
            return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
        }
        if sig == Sig::Kill || !self.stubborn.contains(&pid) {
            self.procs.borrow_mut().remove(&pid);
        }
        Ok(())
    }
    fn mountinfo(&self) -> io::Result<String> {
        Ok(self.mountinfo.borrow().clone())
    }
    fn unmount(&self, path: &Path, lazy: bool) -> io::Result<()> {
        self.log(format!("umount {} lazy={lazy}", path.display()));
        if self.busy.contains(path) && !lazy {
            return Err(io::Error::from_raw_os_error(nix::libc::EBUSY));
        }
        Ok(())
    }
    fn read_file(&self, path: &Path) -> io::Result<String> {
        self.files
            .borrow()
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.dirs
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn exists(&self, path: &Path) -> bool {
        self.files.borrow().contains_key(path) || self.dirs.contains_key(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.log(format!("rm {}", path.display()));
        self.files.borrow_mut().remove(path);
        Ok(())
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.log(format!("rmdir {}", path.display()));
        Ok(())
    }
    fn canonicalize(&self, path: &Path) -> Option<PathBuf> {
        Some(path.to_path_buf())
    }
    fn unit(&self, name: &str) -> Option<Unit> {
        self.units.get(name).cloned()
    }
    fn stop_unit(&self, name: &str) -> io::Result<()> {
        self.log(format!("systemctl stop {name}"));
        Ok(())
    }
    fn sleep(&self, _: Duration) {}
}

fn scope() -> Scope {
    Scope::new(PathBuf::from(DATA))
}

fn bundle_json(netns: &str, id: &str) -> String {
    serde_json::json!({"linux": {
        "cgroupsPath": format!("/k8s.io/{id}"),
        "namespaces": [{"type": "pid"}, {"type": "network", "path": netns}],
    }})
    .to_string()
}

/// A host with our mini server and containerd, one shim with a pod process and its child,
/// plus a foreign mini (other data dir), a foreign containerd and shim, and unrelated
/// processes.
fn host() -> FakeSystem {
    let sys = FakeSystem::default();
    sys.add(proc(1, 0, "/sbin/init", &["/sbin/init"]));
    sys.add(proc(
        100,
        1,
        "/usr/local/bin/mini",
        &["mini", "server", "--data-dir", DATA],
    ));
    sys.add(proc(
        110,
        1,
        "/usr/bin/containerd",
        &["containerd", "--config", "x", "--address", SOCK],
    ));
    sys.add(proc(
        120,
        1,
        "/usr/bin/containerd-shim-runc-v2",
        &[
            "/usr/bin/containerd-shim-runc-v2",
            "-namespace",
            "k8s.io",
            "-id",
            "aaa",
            "-address",
            SOCK,
        ],
    ));
    sys.add(proc(121, 120, "/bin/busybox", &["sleep", "1000"]));
    sys.add(proc(122, 121, "/bin/busybox", &["sh"]));
    // foreign: another data dir's mini, the host's containerd and its shim and container
    sys.add(proc(
        200,
        1,
        "/usr/local/bin/mini",
        &["mini", "agent", "--data-dir=/srv/other"],
    ));
    sys.add(proc(210, 1, "/usr/bin/containerd", &["containerd"]));
    sys.add(proc(
        220,
        1,
        "/usr/bin/containerd-shim-runc-v2",
        &[
            "containerd-shim-runc-v2",
            "-namespace",
            "k8s.io",
            "-id",
            "bbb",
            "-address",
            "/run/containerd/containerd.sock",
        ],
    ));
    sys.add(proc(221, 220, "/bin/nginx", &["nginx"]));
    // mini's own other commands are not killed
    sys.add(proc(300, 1, "/usr/local/bin/mini", &["mini", "killall"]));
    sys
}

#[test]
fn runtime_processes_our_socket_selects_containerd_shims_and_descendants_only() {
    let sys = host();
    let procs: Vec<ProcInfo> = sys.procs.borrow().values().cloned().collect();
    let rt = runtime_processes(&procs, &scope());
    assert_eq!(rt.containerd, vec![110]);
    assert_eq!(rt.shims, vec![120]);
    assert_eq!(rt.pods, vec![121, 122]);
}

#[test]
fn mini_processes_other_data_dir_or_command_not_chosen() {
    let sys = host();
    let procs: Vec<ProcInfo> = sys.procs.borrow().values().cloned().collect();
    assert_eq!(plan::mini_processes(&procs, &scope()), vec![100]);
}

#[test]
fn is_our_mini_env_default_and_relative_data_dirs_resolved() {
    let s = scope();
    let mut p = proc(
        5,
        1,
        "/usr/local/bin/mini",
        &["mini", "agent", "--server", "x"],
    );
    assert!(
        plan::is_our_mini(&p, &s),
        "no flag and no env: the default data dir"
    );
    p.env_data_dir = Some("/srv/other".into());
    assert!(
        !plan::is_our_mini(&p, &s),
        "MINI_DATA_DIR names another dir"
    );
    let mut r = proc(
        6,
        1,
        "/usr/local/bin/mini",
        &["mini", "server", "--data-dir", "mini"],
    );
    r.cwd = Some(PathBuf::from("/var/lib"));
    assert!(plan::is_our_mini(&r, &s), "relative to the process's cwd");
    let other_binary = proc(7, 1, "/usr/bin/k3s", &["k3s", "server", "--data-dir", DATA]);
    assert!(!plan::is_our_mini(&other_binary, &s));
}

#[test]
fn mounts_under_data_dir_deepest_first_root_and_foreign_kept() {
    let mountinfo = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:40 / /var/lib/mini rw - ext4 /dev/sdb1 rw
31 30 0:41 / /var/lib/mini/agent/containerd/state/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs rw - overlay overlay rw
32 30 0:42 / /var/lib/mini/agent/pods/uid/volumes/secret rw - tmpfs tmpfs rw
33 30 0:43 / /var/lib/mini/agent/containerd/root/io.containerd.grpc.v1.cri/sandboxes/aaa/shm rw - tmpfs shm rw
34 22 0:44 / /var/lib/minimal rw - tmpfs tmpfs rw
35 22 0:45 / /var/lib/mini/agent/pods/uid/volumes/secret rw - tmpfs tmpfs rw
36 22 0:46 / /var/lib/mini/with\\040space rw - tmpfs tmpfs rw
";
    let got = mounts_under(mountinfo, &[PathBuf::from(DATA)]);
    let want: Vec<PathBuf> = [
        // equally deep: the later mount first
        "/var/lib/mini/agent/containerd/root/io.containerd.grpc.v1.cri/sandboxes/aaa/shm",
        "/var/lib/mini/agent/containerd/state/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs",
        "/var/lib/mini/agent/pods/uid/volumes/secret",
        "/var/lib/mini/agent/pods/uid/volumes/secret",
        "/var/lib/mini/with space",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(got, want);
}

#[test]
fn parse_bundle_oci_spec_reads_netns_and_cgroups_path() {
    let b = parse_bundle("aaa", &bundle_json("/var/run/netns/cni-1234", "aaa")).unwrap();
    assert_eq!(b.netns, Some(PathBuf::from("/var/run/netns/cni-1234")));
    assert_eq!(b.cgroups_path.as_deref(), Some("/k8s.io/aaa"));
}

#[test]
fn pod_netns_only_cni_files_in_the_netns_dir_or_the_cri_state_dir() {
    let bundles = vec![
        parse_bundle("a", &bundle_json("/var/run/netns/cni-1", "a")).unwrap(),
        parse_bundle("b", &bundle_json("/var/run/netns/cni-1", "b")).unwrap(),
        parse_bundle("c", &bundle_json("/proc/42/ns/net", "c")).unwrap(),
        parse_bundle("d", &bundle_json("/var/run/netns/mynet", "d")).unwrap(),
        parse_bundle("e", &bundle_json("/run/netns/cni-2", "e")).unwrap(),
        parse_bundle(
            "f",
            &bundle_json(
                "/var/lib/mini/agent/containerd/state/io.containerd.grpc.v1.cri/netns/cni-3",
                "f",
            ),
        )
        .unwrap(),
        parse_bundle("g", &bundle_json("/var/lib/other/netns/cni-4", "g")).unwrap(),
    ];
    assert_eq!(
        pod_netns(&bundles),
        vec![
            PathBuf::from("/run/netns/cni-2"),
            PathBuf::from(
                "/var/lib/mini/agent/containerd/state/io.containerd.grpc.v1.cri/netns/cni-3"
            ),
            PathBuf::from("/var/run/netns/cni-1")
        ]
    );
}

#[test]
fn pod_cgroups_v1_and_v2_hierarchies_only_paths_ending_in_the_id() {
    let mountinfo = "\
40 22 0:50 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 22 0:51 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
42 22 0:52 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    let mut foreign = parse_bundle("x", &bundle_json("/var/run/netns/cni-9", "x")).unwrap();
    foreign.cgroups_path = Some("/system.slice".into());
    let systemd_style = Bundle {
        id: "y".into(),
        netns: None,
        cgroups_path: Some("system.slice:cri-containerd:y".into()),
    };
    let bundles = vec![
        parse_bundle("aaa", &bundle_json("/var/run/netns/cni-1", "aaa")).unwrap(),
        foreign,
        systemd_style,
    ];
    let got = pod_cgroups(mountinfo, &bundles);
    assert_eq!(
        got,
        vec![
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/k8s.io/aaa"),
            PathBuf::from("/sys/fs/cgroup/memory/k8s.io/aaa"),
            PathBuf::from("/sys/fs/cgroup/unified/k8s.io/aaa"),
        ]
    );
}

fn full_host() -> FakeSystem {
    let mut sys = host();
    sys.dirs.insert(PathBuf::from(TASKS), vec!["k8s.io".into()]);
    sys.dirs
        .insert(PathBuf::from(format!("{TASKS}/k8s.io")), vec!["aaa".into()]);
    sys.files.borrow_mut().insert(
        PathBuf::from(format!("{TASKS}/k8s.io/aaa/config.json")),
        bundle_json("/var/run/netns/cni-1", "aaa"),
    );
    sys.files
        .borrow_mut()
        .insert(PathBuf::from("/var/run/netns/cni-1"), String::new());
    sys.files
        .borrow_mut()
        .insert(PathBuf::from("/var/run/netns/cni-foreign"), String::new());
    sys.dirs.insert(
        PathBuf::from("/sys/fs/cgroup/memory/k8s.io/aaa"),
        Vec::new(),
    );
    *sys.mountinfo.borrow_mut() = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
40 22 0:50 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
31 22 0:41 / /var/lib/mini/agent/containerd/state/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs rw - overlay overlay rw
32 22 0:42 / /var/lib/mini/agent/pods/uid/volumes/secret rw - tmpfs tmpfs rw
50 22 0:3 net:[4026532] /run/netns/cni-1 rw - nsfs nsfs rw
"
    .to_string();
    sys.busy
        .insert(PathBuf::from("/var/lib/mini/agent/pods/uid/volumes/secret"));
    sys
}

#[tokio::test]
async fn killall_full_host_removes_ours_and_leaves_foreign_alone() {
    let sys = full_host();
    let netlink = FakeNetlink::new();
    netlink.add_link("mini0", 1450, &[]);
    netlink.add_link("mini.1", 1450, &[]);
    netlink.add_link("eth0", 1500, &[]);
    let nft = FakeNft::default();
    nft.set_listing(Some("{}".into()));
    let out = killall(
        &sys,
        Network {
            netlink: &netlink,
            nft: &nft,
        },
        Path::new(DATA),
    )
    .await
    .unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    let alive: Vec<u32> = sys.pids();
    assert_eq!(
        alive,
        vec![1, 200, 210, 220, 221, 300],
        "only foreign processes remain"
    );
    let calls = sys.calls();
    assert!(calls.contains(&"signal 100 Term".to_string()));
    let unmounts: Vec<&String> = calls.iter().filter(|c| c.starts_with("umount")).collect();
    assert_eq!(
        unmounts,
        vec![
            "umount /var/run/netns/cni-1 lazy=false",
            "umount /var/lib/mini/agent/containerd/state/io.containerd.runtime.v2.task/k8s.io/aaa/rootfs lazy=false",
            "umount /var/lib/mini/agent/pods/uid/volumes/secret lazy=false",
            "umount /var/lib/mini/agent/pods/uid/volumes/secret lazy=true",
        ]
    );
    assert!(calls.contains(&"rm /var/run/netns/cni-1".to_string()));
    assert!(!calls.iter().any(|c| c.contains("cni-foreign")));
    assert!(calls.contains(&"rmdir /sys/fs/cgroup/memory/k8s.io/aaa".to_string()));
    assert!(netlink.link("mini0").is_none() && netlink.link("mini.1").is_none());
    assert!(netlink.link("eth0").is_some());
    assert_eq!(
        nft.batches(),
        // the fake lists a table whatever its name: every one of mini's tables is deleted
        vec![
            r#"{"nftables":[{"delete":{"table":{"family":"ip","name":"mini"}}}]}"#.to_string(),
            r#"{"nftables":[{"delete":{"table":{"family":"ip","name":"mini-portmap"}}}]}"#
                .to_string(),
            r#"{"nftables":[{"delete":{"table":{"family":"ip","name":"mini-netpol"}}}]}"#
                .to_string()
        ]
    );
    assert!(out.done.iter().any(|l| l == "deleted interface mini0"));
}

#[tokio::test]
async fn killall_stubborn_mini_gets_sigkill_after_the_grace_period() {
    let mut sys = host();
    sys.stubborn.insert(100);
    let netlink = FakeNetlink::new();
    let nft = FakeNft::default();
    let out = killall(
        &sys,
        Network {
            netlink: &netlink,
            nft: &nft,
        },
        Path::new(DATA),
    )
    .await
    .unwrap();
    let calls = sys.calls();
    let term = calls.iter().position(|c| c == "signal 100 Term").unwrap();
    let kill = calls.iter().position(|c| c == "signal 100 Kill").unwrap();
    assert!(term < kill);
    assert!(!sys.alive(100));
    assert!(nft.batches().is_empty(), "no table: nothing deleted");
    assert!(out.failed.is_empty(), "{:?}", out.failed);
}

#[tokio::test]
async fn killall_unit_of_our_data_dir_stopped_foreign_unit_left() {
    let mut sys = host();
    sys.units.insert(
        "mini-server.service".into(),
        Unit {
            active: true,
            main_pid: 100,
        },
    );
    sys.units.insert(
        "mini-agent.service".into(),
        Unit {
            active: true,
            main_pid: 200,
        },
    );
    let netlink = FakeNetlink::new();
    let nft = FakeNft::default();
    let out = killall(
        &sys,
        Network {
            netlink: &netlink,
            nft: &nft,
        },
        Path::new(DATA),
    )
    .await
    .unwrap();
    let calls = sys.calls();
    assert!(calls.contains(&"systemctl stop mini-server.service".to_string()));
    assert!(!calls.contains(&"systemctl stop mini-agent.service".to_string()));
    assert!(out
        .done
        .iter()
        .any(|l| l.starts_with("left mini-agent.service running")));
}

#[tokio::test]
async fn killall_relative_or_root_data_dir_refused() {
    let sys = FakeSystem::default();
    let netlink = FakeNetlink::new();
    let nft = FakeNft::default();
    let rel = killall(
        &sys,
        Network {
            netlink: &netlink,
            nft: &nft,
        },
        Path::new("data"),
    )
    .await;
    assert!(matches!(rel, Err(KillallError::RelativeDataDir(_))));
    let root = killall(
        &sys,
        Network {
            netlink: &netlink,
            nft: &nft,
        },
        Path::new("/"),
    )
    .await;
    assert!(matches!(root, Err(KillallError::RootDataDir(_))));
    assert!(sys.calls().is_empty());
}

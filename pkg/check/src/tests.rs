//! Unit tests of every check rule and of status on a fake host.

use std::path::PathBuf;

use crate::host::fake::FakeCheckHost;
use crate::host::{ProgramOutput, Proto};
use crate::rules;
use crate::status;
use crate::{run, CheckConfig, Level, Role};

const RELEASE: &str = "6.1.0-18-amd64";
const MODULES_DIR: &str = "/lib/modules/6.1.0-18-amd64";

const MOUNTINFO_V1: &str = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
34 30 0:30 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
";

const MOUNTINFO_V2: &str = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate
";

/// A healthy Debian 12 host.
fn healthy() -> FakeCheckHost {
    let mut host = FakeCheckHost {
        release: RELEASE.into(),
        ..Default::default()
    }
    .file(
        "/proc/modules",
        "overlay 151552 0 - Live 0x0\nbr_netfilter 32768 0 - Live 0x0\nnf_tables 274432 0 - Live 0x0\n",
    )
    .file(
        &format!("{MODULES_DIR}/modules.builtin"),
        "kernel/net/bridge/bridge.ko\n",
    )
    .file(
        &format!("{MODULES_DIR}/modules.dep"),
        "kernel/drivers/net/vxlan/vxlan.ko.xz: kernel/net/ipv4/udp_tunnel.ko.xz\n\
         kernel/drivers/net/veth.ko.xz:\n\
         kernel/net/netfilter/nf_nat.ko.xz: kernel/net/netfilter/nf_conntrack.ko.xz\n\
         kernel/net/netfilter/nf_conntrack.ko.xz:\n",
    )
    .file("/proc/self/mountinfo", MOUNTINFO_V1)
    .file("/proc/cgroups", "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\nmemory\t3\t1\t1\n")
    .file("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n")
    .file("/proc/sys/net/ipv4/ip_forward", "0\n")
    .program(
        "containerd",
        "--version",
        "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n",
    )
    .program("runc", "--version", "runc version 1.1.5+ds1\ncommit: ...\n")
    .program("timedatectl", "show", "yes\n");
    host.space
        .insert(PathBuf::from("/var/lib"), (20 << 30, 100 << 30));
    host.writable
        .insert(PathBuf::from("/proc/sys/net/ipv4/ip_forward"));
    host
}

fn find<'a>(report: &'a crate::Report, check: &str) -> &'a crate::Finding {
    report
        .results
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no check {check} in {report:#?}"))
}

#[test]
fn run_healthy_host_all_ok_but_nothing_blocks() {
    let report = run(&healthy(), &CheckConfig::new(Role::Server, "/var/lib/mini"));
    let problems: Vec<_> = report
        .results
        .iter()
        .filter(|f| f.result != Level::Ok)
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(!report.has_failures());
    assert_eq!(
        find(&report, "containerd").detail,
        "1.6.20~ds1 (/usr/bin/containerd)"
    );
    assert_eq!(find(&report, "data dir space").result, Level::Ok);
    assert!(find(&report, "port 6443/tcp").detail.contains("API server"));
}

#[test]
fn kernel_version_too_old_fails_with_upgrade_fix() {
    let host = FakeCheckHost {
        release: "3.10.0-1160.el7.x86_64".into(),
        ..Default::default()
    };
    let f = rules::kernel_version(&host);
    assert_eq!(f.result, Level::Failure);
    assert!(f.fix.unwrap().contains("upgrade the kernel"));
}

#[test]
fn kernel_modules_states_loaded_builtin_loadable_missing() {
    let mut host = healthy();
    host.files.insert(
        PathBuf::from(format!("{MODULES_DIR}/modules.dep")),
        "kernel/drivers/net/veth.ko.zst:\n".into(),
    );
    host.files.insert(
        PathBuf::from("/proc/modules"),
        "nf_tables 1 0 - Live 0\n".into(),
    );
    let findings = rules::kernel_modules(&host);
    let by = |name: &str| {
        findings
            .iter()
            .find(|f| f.check == format!("module {name}"))
            .unwrap()
            .clone()
    };
    assert_eq!(by("nf_tables").detail, "loaded");
    assert_eq!(by("bridge").detail, "built into the kernel");
    assert_eq!(by("veth").result, Level::Ok);
    assert_eq!(by("vxlan").result, Level::Failure);
    assert_eq!(by("br_netfilter").result, Level::Failure);
}

#[test]
fn kernel_modules_br_netfilter_loadable_warns_with_modprobe() {
    let mut host = healthy();
    host.files
        .insert(PathBuf::from("/proc/modules"), String::new());
    host.files.insert(
        PathBuf::from(format!("{MODULES_DIR}/modules.dep")),
        "kernel/net/bridge/br_netfilter.ko:\n".into(),
    );
    let f = rules::kernel_modules(&host)
        .into_iter()
        .find(|f| f.check == "module br_netfilter")
        .unwrap();
    assert_eq!(f.result, Level::Warning);
    assert!(f.fix.unwrap().starts_with("load it: modprobe br_netfilter"));
}

#[test]
fn kernel_modules_no_lib_modules_warns_instead_of_failing() {
    let host = FakeCheckHost {
        release: RELEASE.into(),
        ..Default::default()
    };
    let findings = rules::kernel_modules(&host);
    assert!(
        findings.iter().all(|f| f.result == Level::Warning),
        "{findings:#?}"
    );
}

#[test]
fn kernel_modules_kernel_config_says_builtin_module_or_missing() {
    let host = FakeCheckHost {
        release: RELEASE.into(),
        ..Default::default()
    }
    .file(
        "/proc/config.gz",
        "CONFIG_OVERLAY_FS=y\nCONFIG_VXLAN=m\n# CONFIG_VETH is not set\n",
    );
    let findings = rules::kernel_modules(&host);
    let level = |check: &str| findings.iter().find(|f| f.check == check).unwrap().result;
    assert_eq!(level("module overlay"), Level::Ok);
    assert_eq!(
        level("module vxlan"),
        Level::Warning,
        "a module whose files are absent"
    );
    assert_eq!(level("module veth"), Level::Failure);
}

#[test]
fn kernel_modules_sys_module_counts_as_loaded() {
    let mut host = FakeCheckHost {
        release: RELEASE.into(),
        ..Default::default()
    };
    host.dirs
        .insert(PathBuf::from("/sys/module/overlay"), Vec::new());
    let f = rules::kernel_modules(&host).remove(0);
    assert_eq!((f.check.as_str(), f.result), ("module overlay", Level::Ok));
}

#[test]
fn cgroups_v1_all_controllers_ok() {
    let findings = rules::cgroups(&healthy());
    assert!(
        findings.iter().all(|f| f.result == Level::Ok),
        "{findings:#?}"
    );
    assert!(findings[0].detail.starts_with("v1"));
}

#[test]
fn cgroups_v2_reads_cgroup_controllers_and_misses_pids() {
    let host = healthy().file("/proc/self/mountinfo", MOUNTINFO_V2).file(
        "/sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory\n",
    );
    let findings = rules::cgroups(&host);
    let pids = findings.iter().find(|f| f.check == "cgroup pids").unwrap();
    assert_eq!(pids.result, Level::Failure);
    assert!(pids.detail.starts_with("v2"));
    let cpuacct = findings
        .iter()
        .find(|f| f.check == "cgroup cpuacct")
        .unwrap();
    assert_eq!(cpuacct.result, Level::Ok, "v2 accounts CPU in cpu");
}

#[test]
fn cgroups_memory_disabled_on_command_line_fails_with_kernel_fix() {
    let host = healthy().file(
        "/proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t1\t0\n",
    );
    let f = rules::cgroups(&host)
        .into_iter()
        .find(|f| f.check == "cgroup memory")
        .unwrap();
    assert_eq!(f.result, Level::Failure);
    assert!(f.fix.unwrap().contains("cgroup_enable=memory"));
}

#[test]
fn cgroups_nothing_mounted_fails() {
    let host = healthy().file(
        "/proc/self/mountinfo",
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n",
    );
    let findings = rules::cgroups(&host);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].result, Level::Failure);
}

#[test]
fn swap_on_warns_with_swapoff() {
    let host = healthy().file(
        "/proc/swaps",
        "Filename Type Size Used Priority\n/dev/sda2 partition 1000 0 -2\n",
    );
    let f = rules::swap(&host);
    assert_eq!(f.result, Level::Warning);
    assert!(f.fix.unwrap().contains("swapoff -a"));
}

#[test]
fn port_in_use_fails_and_blocks_only_ports_required_to_start() {
    let mut host = healthy();
    host.busy.insert((Proto::Tcp, 6443));
    host.busy.insert((Proto::Udp, 8472));
    let report = run(&host, &CheckConfig::new(Role::Server, "/var/lib/mini"));
    let api = find(&report, "port 6443/tcp");
    assert_eq!(api.result, Level::Failure);
    assert!(api.blocks_start);
    let vxlan = find(&report, "port 8472/udp");
    assert_eq!(vxlan.result, Level::Failure);
    assert!(!vxlan.blocks_start, "a mini.1 of an earlier run holds it");
    assert_eq!(report.blocking().len(), 1);
}

#[test]
fn ports_agent_role_has_no_api_port_and_server_without_node_has_only_it() {
    let agent = CheckConfig::new(Role::Agent, "/var/lib/mini");
    assert!(agent.ports.iter().all(|p| p.address.port() != 6443));
    assert!(agent.ports.iter().any(|p| p.address.port() == 10250));
    let server = CheckConfig::new(Role::Server, "/var/lib/mini").without_node();
    let ports: Vec<u16> = server.ports.iter().map(|p| p.address.port()).collect();
    assert_eq!(ports, vec![6443]);
}

#[test]
fn program_containerd_missing_fails_blocking_with_install_fix() {
    let mut host = healthy();
    host.programs.clear();
    let report = run(&host, &CheckConfig::new(Role::Agent, "/var/lib/mini"));
    let c = find(&report, "containerd");
    assert_eq!(c.result, Level::Failure);
    assert!(c.blocks_start);
    assert!(c
        .fix
        .as_deref()
        .unwrap()
        .starts_with("install containerd: apt-get install containerd runc"));
    let r = find(&report, "runc");
    assert_eq!(r.result, Level::Failure);
    assert!(!r.blocks_start);
    assert!(report.has_failures());
}

#[test]
fn program_old_containerd_fails() {
    let host = healthy().program(
        "containerd",
        "--version",
        "containerd github.com/containerd/containerd v1.4.13 abc\n",
    );
    let f = rules::program(&host, "containerd", false);
    assert_eq!(f.result, Level::Failure);
    assert!(f.detail.contains("v1.4.13"));
}

#[test]
fn program_quick_form_runs_nothing() {
    let mut host = healthy();
    host.outputs.clear();
    let f = rules::program(&host, "containerd", true);
    assert_eq!(
        (f.result, f.detail.as_str()),
        (Level::Ok, "/usr/bin/containerd")
    );
}

#[test]
fn data_dir_space_thresholds_warn_and_fail_naming_the_limit() {
    let mut host = healthy();
    host.space
        .insert(PathBuf::from("/var/lib"), (1 << 30, 100 << 30));
    let f = rules::data_dir_space(&host, &PathBuf::from("/var/lib/mini"));
    assert_eq!(f.result, Level::Warning);
    assert!(f.detail.contains("below 2 GiB") && f.detail.contains("on /var/lib"));
    host.space
        .insert(PathBuf::from("/var/lib"), (100 << 20, 100 << 30));
    let f = rules::data_dir_space(&host, &PathBuf::from("/var/lib/mini"));
    assert_eq!(f.result, Level::Failure);
    assert!(f.detail.contains("below 512 MiB"));
}

#[test]
fn time_sync_unsynchronised_warns_and_timesyncd_file_counts() {
    let host = healthy().program("timedatectl", "show", "no\n");
    assert_eq!(rules::time_sync(&host).result, Level::Warning);
    let mut host = healthy();
    host.programs.remove("timedatectl");
    assert_eq!(rules::time_sync(&host).result, Level::Warning);
    let host = host.file("/run/systemd/timesync/synchronized", "");
    assert_eq!(rules::time_sync(&host).result, Level::Ok);
}

#[test]
fn forwarding_off_and_read_only_fails_blocking() {
    let mut host = healthy();
    host.writable.clear();
    let f = rules::forwarding(&host).remove(0);
    assert_eq!(f.result, Level::Failure);
    assert!(f.blocks_start);
    let host = host.file("/proc/sys/net/ipv4/ip_forward", "1\n");
    assert_eq!(rules::forwarding(&host).remove(0).result, Level::Ok);
}

#[test]
fn run_bare_host_reports_instead_of_crashing() {
    // a chroot with nothing mounted and no containerd
    let host = FakeCheckHost::default();
    let report = run(&host, &CheckConfig::new(Role::Agent, "/var/lib/mini"));
    assert!(report.results.len() > 10);
    assert!(report.has_failures());
    let table = report.render_table();
    assert!(table.starts_with("CHECK"));
    assert!(table.contains("fix: install containerd"));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["role"], "agent");
    assert!(json["summary"]["failures"].as_u64().unwrap() > 0);
}

#[test]
fn run_quick_form_has_no_time_check() {
    let mut config = CheckConfig::new(Role::Server, "/var/lib/mini");
    config.quick = true;
    let report = run(&healthy(), &config);
    assert!(report.results.iter().all(|f| f.check != "time sync"));
}

#[test]
fn parse_unit_show_reads_state_and_status_text() {
    let u = status::parse_unit_show(
        "mini-server.service",
        "LoadState=loaded\nActiveState=activating\nSubState=start\nStatusText=waiting for the node to register\nMainPID=42\n",
    );
    assert_eq!(u.active_state, "activating");
    assert_eq!(u.status_text, "waiting for the node to register");
    assert_eq!(u.main_pid, 42);
}

#[test]
fn age_prints_like_kubectl() {
    assert_eq!(status::age(30), "30s");
    assert_eq!(status::age(600), "10m");
    assert_eq!(status::age(7200), "2h");
    assert_eq!(status::age(3 * 86_400), "3d");
}

struct FakeCluster {
    ready: bool,
}

impl status::ClusterView for FakeCluster {
    async fn readyz(&self) -> Result<String, status::StatusError> {
        if self.ready {
            Ok("ok".into())
        } else {
            Err(status::StatusError::Api("connection refused".into()))
        }
    }
    async fn nodes(&self) -> Result<Vec<k8s_openapi::api::core::v1::Node>, status::StatusError> {
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "status": {
                "nodeInfo": {"kubeletVersion": "v1.33.0", "architecture": "", "bootID": "",
                    "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                    "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": ""},
                "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                    "message": "container runtime is starting"}]
            }
        }))
        .unwrap();
        Ok(vec![node])
    }
}

#[tokio::test]
async fn status_not_installed_says_so_and_is_unhealthy() {
    let host = FakeCheckHost::default();
    let s = status::gather(
        &host,
        &PathBuf::from("/var/lib/mini"),
        Err::<FakeCluster, _>("none".into()),
    )
    .await;
    assert!(s.role.is_none());
    assert!(!s.healthy);
    assert!(s.render().starts_with("mini is not installed here"));
}

#[tokio::test]
async fn status_server_lists_nodes_and_what_is_waiting() {
    let mut host = FakeCheckHost::default();
    host.dirs
        .insert(PathBuf::from("/var/lib/mini/server"), Vec::new());
    host.sizes
        .insert(PathBuf::from("/var/lib/mini/server/db"), 3 << 20);
    let s = status::gather(
        &host,
        &PathBuf::from("/var/lib/mini"),
        Ok(FakeCluster { ready: true }),
    )
    .await;
    assert_eq!(s.role, Some(Role::Server));
    assert_eq!(s.datastore.as_ref().unwrap().size_bytes, 3 << 20);
    assert_eq!(s.nodes[0].ready, "NotReady");
    assert_eq!(s.nodes[0].version, "v1.33.0");
    assert!(s
        .waiting
        .iter()
        .any(|w| w.contains("KubeletNotReady: container runtime is starting")));
    assert!(!s.healthy);
    let text = s.render();
    assert!(
        text.contains("datastore:   sled at /var/lib/mini/server/db (3.0 MiB)"),
        "{text}"
    );
    let s = status::gather(
        &host,
        &PathBuf::from("/var/lib/mini"),
        Ok(FakeCluster { ready: false }),
    )
    .await;
    assert!(s
        .render()
        .contains("api:         not ready: asking the API server: connection refused"));
}

#[test]
fn certificates_expiry_read_from_tls_dirs() {
    // a fixed self-signed certificate (openssl req -x509 -subj /CN=mini-test-ca)
    let pem = include_str!("testdata/cert.pem");
    let info = mini_certs::CertInfo::from_pem(pem, "cert.pem").unwrap();
    let not_after = info.not_after;
    assert!(info.subject.contains("CN="), "{}", info.subject);
    let mut host = FakeCheckHost::default();
    host.dirs.insert(
        PathBuf::from("/d/server/tls"),
        vec!["ca.crt".into(), "ca.key".into()],
    );
    host.files
        .insert(PathBuf::from("/d/server/tls/ca.crt"), pem.into());
    let certs = status::certificates(&host, &PathBuf::from("/d"), not_after - 10 * 86_400);
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].days_left, 10);
    assert_eq!(certs[0].issuer, info.issuer);
    assert!(certs[0].line().contains("issuer="));
}

#[test]
fn cert_expiry_overdue_leaf_after_five_sixths_ca_within_warn_days() {
    let leaf = status::CertExpiry {
        path: PathBuf::from("/d/server/tls/serving.crt"),
        subject: "CN=kube-apiserver".into(),
        issuer: "CN=mini-ca".into(),
        not_before: 0,
        not_after: 600,
        renew_at: 400,
        is_ca: false,
        days_left: 0,
    };
    assert!(!leaf.overdue(450));
    assert!(leaf.overdue(500));
    let ca = status::CertExpiry {
        is_ca: true,
        days_left: 40,
        ..leaf
    };
    assert!(!ca.overdue(10_000));
    assert!(status::CertExpiry { days_left: 3, ..ca }.overdue(0));
}

#[test]
fn program_output_failure_warns() {
    let mut host = healthy();
    host.outputs.insert(
        (PathBuf::from("/usr/bin/runc"), "--version".into()),
        ProgramOutput {
            success: false,
            text: "exec format error".into(),
        },
    );
    assert_eq!(rules::program(&host, "runc", false).result, Level::Warning);
}

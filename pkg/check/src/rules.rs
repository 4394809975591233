//! The rules of `mini check`, one function per concern, each turning host reads into findings.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::host::{CheckHost, Proto};
use crate::{Finding, Port};

/// Oldest kernel mini supports (overlayfs with multiple lower dirs, nftables NAT, cgroup v2 pids).
pub const MIN_KERNEL: (u32, u32) = (4, 15);
/// Kernel modules a node needs.
pub const MODULES: &[(&str, &str)] = &[
    ("overlay", "CONFIG_OVERLAY_FS"),
    ("br_netfilter", "CONFIG_BRIDGE_NETFILTER"),
    ("bridge", "CONFIG_BRIDGE"),
    ("vxlan", "CONFIG_VXLAN"),
    ("veth", "CONFIG_VETH"),
    ("nf_tables", "CONFIG_NF_TABLES"),
    ("nf_nat", "CONFIG_NF_NAT"),
    ("nf_conntrack", "CONFIG_NF_CONNTRACK"),
];
/// Oldest containerd with the CRI v1 API mini speaks.
pub const MIN_CONTAINERD: (u32, u32) = (1, 6);
/// Below this much free space the data dir check warns.
pub const WARN_FREE_BYTES: u64 = 2 << 30;
/// Below this much free space the data dir check fails.
pub const FAIL_FREE_BYTES: u64 = 512 << 20;

const GIB: f64 = (1u64 << 30) as f64;

/// `major.minor` at the start of a version string (`v1.6.20`, `6.1.0-18-amd64`).
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32)> {
    let text = text.strip_prefix('v').unwrap_or(text);
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn kernel_version(host: &dyn CheckHost) -> Finding {
    let release = match host.kernel_release() {
        Ok(r) => r,
        Err(e) => {
            return Finding::warning(
                "kernel",
                format!("uname failed: {e}"),
                "run mini check on the host itself",
            )
        }
    };
    match parse_version(&release) {
        Some(v) if v < MIN_KERNEL => Finding::failure(
            "kernel",
            format!("{release} is older than {}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
            format!(
                "upgrade the kernel to {}.{} or newer",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        ),
        Some(_) => Finding::ok("kernel", release),
        None => Finding::warning(
            "kernel",
            format!("cannot read the version of {release:?}"),
            format!(
                "make sure the kernel is {}.{} or newer",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        ),
    }
}

/// A module's name as the kernel spells it (`-` and `_` are the same).
fn module_name(raw: &str) -> String {
    raw.replace('-', "_")
}

/// The module name of a path in modules.dep / modules.builtin (`kernel/fs/overlayfs/overlay.ko.xz`).
fn module_of_path(path: &str) -> Option<String> {
    let file = path.trim().rsplit('/').next()?;
    let name = file.split(".ko").next()?;
    (!name.is_empty()).then(|| module_name(name))
}

/// Where a module stands on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModuleState {
    Loaded,
    Builtin,
    Loadable,
    Missing,
    /// Not loaded, and /lib/modules of this kernel is unreadable.
    Unknown,
}

pub fn kernel_modules(host: &dyn CheckHost) -> Vec<Finding> {
    let loaded: BTreeSet<String> = host
        .read_file(Path::new("/proc/modules"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(module_name)
        .collect();
    let release = host.kernel_release().unwrap_or_default();
    let dir = PathBuf::from("/lib/modules").join(&release);
    let builtin: BTreeSet<String> = host
        .read_file(&dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(module_of_path)
        .collect();
    let dep = host.read_file(&dir.join("modules.dep"));
    let loadable: Option<BTreeSet<String>> = dep.ok().map(|text| {
        text.lines()
            .filter_map(|l| l.split(':').next())
            .filter_map(module_of_path)
            .collect()
    });
    // the kernel's build config: says built in (=y) or module (=m) where /lib/modules is absent
    let kconfig = host
        .read_file(&PathBuf::from("/boot").join(format!("config-{release}")))
        .or_else(|_| host.read_gzip_file(Path::new("/proc/config.gz")))
        .ok();
    let kconfig_value = |symbol: &str| -> Option<String> {
        let text = kconfig.as_ref()?;
        Some(
            text.lines()
                .find_map(|l| l.strip_prefix(symbol)?.strip_prefix('='))
                .unwrap_or("n")
                .to_string(),
        )
    };
    MODULES
        .iter()
        .map(|&(name, symbol)| {
            let from_config = kconfig_value(symbol);
            let state = if loaded.contains(name) {
                ModuleState::Loaded
            } else if builtin.contains(name) || from_config.as_deref() == Some("y") {
                ModuleState::Builtin
            } else if host.exists(&Path::new("/sys/module").join(name))
                || (name == "br_netfilter"
                    && host.exists(Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables")))
            {
                // loaded without showing in /proc/modules (a container's view)
                ModuleState::Loaded
            } else {
                match (&loadable, from_config.as_deref()) {
                    (Some(set), _) if set.contains(name) => ModuleState::Loadable,
                    (Some(_), _) | (None, Some("n")) => ModuleState::Missing,
                    (None, _) => ModuleState::Unknown,
                }
            };
            module_finding(name, state, &dir)
        })
        .collect()
}

fn module_finding(name: &str, state: ModuleState, dir: &Path) -> Finding {
    let check = format!("module {name}");
    match state {
        ModuleState::Loaded => Finding::ok(check, "loaded"),
        ModuleState::Builtin => Finding::ok(check, "built into the kernel"),
        ModuleState::Loadable if name == "br_netfilter" => Finding::warning(
            check,
            "loadable but not loaded: traffic between pods on one node bypasses the Service rules",
            "load it: modprobe br_netfilter && echo br_netfilter > /etc/modules-load.d/mini.conf",
        ),
        ModuleState::Loadable => Finding::ok(check, "loadable (the kernel loads it on first use)"),
        ModuleState::Missing => Finding::failure(
            check,
            format!(
                "neither loaded, built in, nor in {} or the kernel config",
                dir.join("modules.dep").display()
            ),
            "install the modules of the running kernel (e.g. apt-get install linux-image-$(uname -r)) or use a kernel that has it",
        ),
        ModuleState::Unknown => Finding::warning(
            check,
            format!("not loaded, and {} is unreadable", dir.display()),
            format!("load it on the host: modprobe {name}"),
        ),
    }
}

/// A cgroup mount from mountinfo: mount point, fstype and super options.
struct CgroupMount {
    point: String,
    v2: bool,
    options: Vec<String>,
}

fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            let mut right = right.split_whitespace();
            let fstype = right.next()?;
            let _source = right.next();
            let options = right.next().unwrap_or_default();
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some(CgroupMount {
                point: point.replace("\\040", " "),
                v2: fstype == "cgroup2",
                options: options.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Controllers switched off on the kernel command line (`enabled` 0 in /proc/cgroups).
fn disabled_controllers(proc_cgroups: &str) -> BTreeSet<String> {
    proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() >= 4 && fields[3] == "0").then(|| fields[0].to_string())
        })
        .collect()
}

pub fn cgroups(host: &dyn CheckHost) -> Vec<Finding> {
    let mountinfo = match host.read_file(Path::new("/proc/self/mountinfo")) {
        Ok(text) => text,
        Err(e) => {
            return vec![Finding::warning(
                "cgroups",
                format!("cannot read /proc/self/mountinfo: {e}"),
                "mount /proc (mount -t proc proc /proc)",
            )]
        }
    };
    let mounts = cgroup_mounts(&mountinfo);
    let v1: Vec<&CgroupMount> = mounts.iter().filter(|m| !m.v2).collect();
    let mut controllers = BTreeSet::new();
    for m in &v1 {
        controllers.extend(m.options.iter().cloned());
    }
    let v2 = mounts.iter().find(|m| m.v2);
    let version = match (v1.is_empty(), v2) {
        (true, None) => {
            return vec![Finding::failure(
                "cgroups",
                "no cgroup filesystem is mounted",
                "mount one: mount -t cgroup2 none /sys/fs/cgroup",
            )]
        }
        (true, Some(m)) => {
            let path = Path::new(&m.point).join("cgroup.controllers");
            match host.read_file(&path) {
                Ok(text) => controllers.extend(text.split_whitespace().map(str::to_string)),
                Err(e) => {
                    return vec![Finding::warning(
                        "cgroups",
                        format!("cannot read {}: {e}", path.display()),
                        "run mini check on the host itself",
                    )]
                }
            }
            // cgroup v2 accounts CPU time in the cpu controller
            if controllers.contains("cpu") {
                controllers.insert("cpuacct".into());
            }
            "v2"
        }
        (false, None) => "v1",
        (false, Some(_)) => "v1 (hybrid)",
    };
    let disabled = disabled_controllers(
        &host
            .read_file(Path::new("/proc/cgroups"))
            .unwrap_or_default(),
    );
    let mut findings = Vec::new();
    for (name, required) in [
        ("cpu", true),
        ("cpuacct", true),
        ("memory", true),
        ("pids", true),
        ("cpuset", false),
    ] {
        let check = format!("cgroup {name}");
        let finding = if controllers.contains(name) && !disabled.contains(name) {
            Finding::ok(check, format!("{version}: available"))
        } else {
            let detail = if disabled.contains(name) {
                format!("{version}: disabled on the kernel command line")
            } else {
                format!("{version}: not mounted")
            };
            let fix = if name == "memory" {
                "add cgroup_enable=memory cgroup_memory=1 to the kernel command line and reboot"
                    .to_string()
            } else {
                format!("enable the {name} controller (kernel config or command line)")
            };
            if required {
                Finding::failure(check, detail, fix)
            } else {
                Finding::warning(check, format!("{detail}; pods cannot pin CPUs"), fix)
            }
        };
        findings.push(finding);
    }
    findings
}

pub fn swap(host: &dyn CheckHost) -> Finding {
    let text = match host.read_file(Path::new("/proc/swaps")) {
        Ok(t) => t,
        Err(e) => {
            return Finding::warning(
                "swap",
                format!("cannot read /proc/swaps: {e}"),
                "run mini check on the host itself",
            )
        }
    };
    let devices: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    if devices.is_empty() {
        Finding::ok("swap", "off")
    } else {
        Finding::warning(
            "swap",
            format!(
                "on ({}): memory limits of pods do not cover swap",
                devices.join(", ")
            ),
            "turn it off: swapoff -a (and remove it from /etc/fstab)",
        )
    }
}

pub fn port(host: &dyn CheckHost, port: &Port) -> Finding {
    let check = format!("port {}/{}", port.address.port(), port.proto);
    match host.bind(port.proto, port.address) {
        Ok(()) => Finding::ok(check, format!("free ({})", port.purpose)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let fix = if port.proto == Proto::Udp && port.address.port() == crate::VXLAN_PORT {
                "stop what holds it (a mini.1 device of an earlier run is fine: mini reuses it; `mini cleanup` removes it)".to_string()
            } else {
                format!(
                    "stop what listens there (ss -lpn 'sport = :{}') or choose another port",
                    port.address.port()
                )
            };
            let finding = Finding::failure(
                check,
                format!("in use on {}: the {} needs it", port.address, port.purpose),
                fix,
            );
            if port.required_to_start {
                finding.blocking()
            } else {
                finding
            }
        }
        Err(e) => Finding::failure(
            check,
            format!("cannot bind {}: {e}", port.address),
            "run as root, and give an address this host has",
        ),
    }
}

/// containerd or runc: on PATH (a missing containerd blocks the start), and its version.
pub fn program(host: &dyn CheckHost, name: &str, quick: bool) -> Finding {
    let Some(path) = host.find_program(name) else {
        let finding = Finding::failure(
            name,
            "not found on PATH",
            format!(
                "install {name}: apt-get install containerd runc (or dnf install containerd runc)"
            ),
        );
        // the managed containerd is started by name: without it the agent cannot start
        return if name == "containerd" {
            finding.blocking()
        } else {
            finding
        };
    };
    if quick {
        return Finding::ok(name, path.display().to_string());
    }
    let output = match host.run(&path, &["--version"], Duration::from_secs(10)) {
        Ok(out) if out.success => out.text,
        Ok(out) => {
            return Finding::warning(
                name,
                format!("{} --version failed: {}", path.display(), out.text.trim()),
                format!("reinstall {name}"),
            )
        }
        Err(e) => {
            return Finding::warning(
                name,
                format!("{} --version: {e}", path.display()),
                format!("reinstall {name}"),
            )
        }
    };
    let first_line = output.lines().next().unwrap_or_default();
    let version = first_line
        .split_whitespace()
        .find(|w| parse_version(w).is_some());
    let Some(version) = version else {
        return Finding::warning(
            name,
            format!(
                "{}: cannot read a version in {first_line:?}",
                path.display()
            ),
            format!("reinstall {name}"),
        );
    };
    let detail = format!("{version} ({})", path.display());
    if name == "containerd" {
        if let Some(v) = parse_version(version) {
            if v < MIN_CONTAINERD {
                return Finding::failure(
                    name,
                    format!(
                        "{detail} is older than {}.{}",
                        MIN_CONTAINERD.0, MIN_CONTAINERD.1
                    ),
                    format!(
                        "install containerd {}.{} or newer (it serves the CRI v1 API)",
                        MIN_CONTAINERD.0, MIN_CONTAINERD.1
                    ),
                );
            }
        }
    }
    Finding::ok(name, detail)
}

pub fn data_dir_space(host: &dyn CheckHost, data_dir: &Path) -> Finding {
    // the data dir may not exist yet: the filesystem that will hold it is its nearest ancestor's
    let mut path = data_dir;
    while !host.exists(path) {
        match path.parent() {
            Some(p) => path = p,
            None => break,
        }
    }
    let check = "data dir space";
    match host.free_space(path) {
        Ok((available, capacity)) => {
            let detail = format!(
                "{:.1} GiB free of {:.1} GiB on {} (for {})",
                available as f64 / GIB,
                capacity as f64 / GIB,
                path.display(),
                data_dir.display()
            );
            if available < FAIL_FREE_BYTES {
                Finding::failure(
                    check,
                    format!("{detail}: below 512 MiB"),
                    "free space there or use another --data-dir",
                )
            } else if available < WARN_FREE_BYTES {
                Finding::warning(
                    check,
                    format!("{detail}: below 2 GiB"),
                    "free space there or use another --data-dir (images and pods need room)",
                )
            } else {
                Finding::ok(check, detail)
            }
        }
        Err(e) => Finding::warning(
            check,
            format!("statvfs {}: {e}", path.display()),
            "make sure the data dir's filesystem is mounted",
        ),
    }
}

pub fn time_sync(host: &dyn CheckHost) -> Finding {
    let check = "time sync";
    if let Some(timedatectl) = host.find_program("timedatectl") {
        if let Ok(out) = host.run(
            &timedatectl,
            &["show", "-p", "NTPSynchronized", "--value"],
            Duration::from_secs(5),
        ) {
            match (out.success, out.text.trim()) {
                (true, "yes") => return Finding::ok(check, "synchronised (timedatectl)"),
                (true, "no") => {
                    return Finding::warning(
                        check,
                        "the clock is not synchronised (timedatectl): certificates and leases depend on it",
                        "enable NTP: timedatectl set-ntp true (or run chrony)",
                    )
                }
                _ => {}
            }
        }
    }
    if host.exists(Path::new("/run/systemd/timesync/synchronized")) {
        return Finding::ok(check, "synchronised (systemd-timesyncd)");
    }
    Finding::warning(
        check,
        "cannot tell whether the clock is synchronised (no answer from timedatectl, no /run/systemd/timesync/synchronized)",
        "run an NTP client: apt-get install systemd-timesyncd (or chrony)",
    )
}

/// A sysctl that must be 1: fine when it is, or when mini can set it at start.
fn sysctl_settable(host: &dyn CheckHost, key: &str, required: bool) -> Finding {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    let check = format!("sysctl {key}");
    let value = match host.read_file(&path) {
        Ok(v) => v.trim().to_string(),
        Err(e) => {
            return Finding::warning(
                check,
                format!("cannot read {}: {e}", path.display()),
                "mount /proc (mount -t proc proc /proc)",
            )
        }
    };
    let writable = host.open_for_write(&path);
    match (value.as_str(), writable) {
        ("1", Ok(())) => Finding::ok(check, "1"),
        ("1", Err(_)) => Finding::ok(check, "1 (read-only here)"),
        (v, Ok(())) => Finding::ok(check, format!("{v}, settable: mini sets it to 1 at start")),
        (v, Err(e)) => {
            let detail = format!("{v} and not settable ({e})");
            let fix = format!(
                "run as root with a writable /proc/sys, or set it on the host: sysctl -w {key}=1"
            );
            if required {
                Finding::failure(check, detail, fix).blocking()
            } else {
                Finding::warning(check, detail, fix)
            }
        }
    }
}

pub fn forwarding(host: &dyn CheckHost) -> Vec<Finding> {
    let mut findings = vec![sysctl_settable(host, "net.ipv4.ip_forward", true)];
    if host.exists(Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables")) {
        findings.push(sysctl_settable(
            host,
            "net.bridge.bridge-nf-call-iptables",
            false,
        ));
    }
    findings
}

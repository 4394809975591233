//! `mini killall`: stops mini and everything it runs on this host, as k3s-killall.sh does,
//! scoped to one data dir so it never touches anything else: the mini units, the mini
//! server/agent processes of that data dir, the containerd they started (its socket is under
//! the data dir), that containerd's shims and so every pod; then it unmounts what is mounted
//! under the data dir, removes the pods' network namespaces (named in the containerd's task
//! bundles), the interfaces `mini0` and `mini.1` (the pods' veths go with their namespaces),
//! mini's nftables table and the pods' cgroups. Every OS call goes through `System`,
//! `mini_sys::netlink::Netlink` or `mini_sys::nft::Nft`.

pub mod plan;
pub mod system;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mini_sys::netlink::Netlink;
use mini_sys::nft::Nft;

pub use plan::{Bundle, Scope};
pub use system::{LinuxSystem, ProcInfo, Sig, System, Unit};

/// The systemd units mini installs.
pub const UNITS: [&str; 2] = ["mini-server.service", "mini-agent.service"];
/// The interfaces the agent creates: the VXLAN device and the pod bridge.
pub const LINKS: [&str; 2] = ["mini.1", "mini0"];
/// The nftables tables mini owns (family, name).
pub const TABLES: [(&str, &str); 3] = [
    ("ip", "mini"),
    ("ip", "mini-portmap"),
    ("ip", "mini-netpol"),
];
/// How long mini processes get to exit after SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(10);

/// A failure that stopped killall before it did anything.
#[derive(Debug, thiserror::Error)]
pub enum KillallError {
    #[error("--data-dir {0} is not an absolute path")]
    RelativeDataDir(String),
    #[error("--data-dir {0} is /: refusing to act on the whole machine")]
    RootDataDir(String),
    #[error("opening netlink: {0}")]
    Netlink(#[from] mini_sys::netlink::NetlinkError),
}

/// What killall did, line by line, and what it could not do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub done: Vec<String>,
    pub failed: Vec<String>,
}

impl Outcome {
    fn did(&mut self, line: impl Into<String>) {
        self.done.push(line.into());
    }
    fn fail(&mut self, line: impl Into<String>) {
        self.failed.push(line.into());
    }
}

/// The network side killall acts on.
pub struct Network<'a> {
    pub netlink: &'a dyn Netlink,
    pub nft: &'a dyn Nft,
}

impl std::fmt::Debug for Network<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").finish_non_exhaustive()
    }
}

/// The real nftables: one constructor call, so another implementation drops in here.
pub fn host_nft() -> impl Nft {
    mini_sys::nft_netlink::NftNetlink::new()
}

/// `killall` on this host: /proc, mounts and files of this machine, netlink in this process's
/// network namespace, the host's nftables. Call inside a tokio runtime.
pub async fn killall_host(data_dir: &Path) -> Result<Outcome, KillallError> {
    let netlink = mini_sys::netlink::RtNetlink::connect()?;
    let nft = host_nft();
    let net = Network {
        netlink: &netlink,
        nft: &nft,
    };
    killall(&LinuxSystem, net, data_dir).await
}

/// Runs everything for the data dir `data_dir` (absolute).
pub async fn killall(
    sys: &dyn System,
    net: Network<'_>,
    data_dir: &Path,
) -> Result<Outcome, KillallError> {
    if !data_dir.is_absolute() {
        return Err(KillallError::RelativeDataDir(
            data_dir.display().to_string(),
        ));
    }
    let given = plan::normalize(data_dir);
    let scope =
        Scope::new(sys.canonicalize(data_dir).unwrap_or_else(|| given.clone())).with_alias(given);
    if scope.data_dir == Path::new("/") {
        return Err(KillallError::RootDataDir(data_dir.display().to_string()));
    }
    let mut out = Outcome::default();
    // what the containerd's tasks use, read before they go: netns files and cgroups
    let bundles = plan::read_bundles(sys, &scope);

    stop_units(sys, &scope, &mut out);
    let processes = snapshot(sys);
    let mini = plan::mini_processes(&processes, &scope);
    terminate(sys, &mini, "mini", &mut out);

    // again: mini may have started a shim between the first look and its exit
    let processes = snapshot(sys);
    let runtime = plan::runtime_processes(&processes, &scope);
    let mut victims: Vec<(u32, &str)> = Vec::new();
    victims.extend(runtime.containerd.iter().map(|p| (*p, "containerd")));
    victims.extend(runtime.shims.iter().map(|p| (*p, "containerd-shim")));
    victims.extend(runtime.pods.iter().map(|p| (*p, "pod process")));
    kill_now(sys, &victims, &mut out);

    remove_netns(sys, &bundles, &mut out);
    unmount_under(sys, &scope, &mut out);
    remove_links(net.netlink, &mut out).await;
    remove_tables(net.nft, &mut out).await;
    remove_cgroups(sys, &bundles, &mut out);
    Ok(out)
}

fn snapshot(sys: &dyn System) -> Vec<ProcInfo> {
    sys.pids()
        .into_iter()
        .filter_map(|p| sys.process(p))
        .collect()
}

fn stop_units(sys: &dyn System, scope: &Scope, out: &mut Outcome) {
    for name in UNITS {
        let Some(unit) = sys.unit(name) else { continue };
        if !unit.active {
            continue;
        }
        // a unit running another data dir's mini is not ours to stop
        let ours = sys
            .process(unit.main_pid)
            .map(|p| plan::is_our_mini(&p, scope))
            .unwrap_or(true);
        if !ours {
            out.did(format!(
                "left {name} running: its mini (pid {}) uses another data dir",
                unit.main_pid
            ));
            continue;
        }
        match sys.stop_unit(name) {
            Ok(()) => out.did(format!("stopped {name}")),
            Err(e) => out.fail(format!("systemctl stop {name}: {e}")),
        }
    }
}

/// SIGTERM, a grace period, then SIGKILL for what is left.
fn terminate(sys: &dyn System, pids: &[u32], what: &str, out: &mut Outcome) {
    if pids.is_empty() {
        return;
    }
    for &pid in pids {
        match sys.signal(pid, Sig::Term) {
            Ok(()) => out.did(format!("sent SIGTERM to {what} (pid {pid})")),
            Err(e) => out.fail(format!("kill -TERM {pid}: {e}")),
        }
    }
    if !wait_gone(sys, pids, TERM_GRACE) {
        let left: Vec<(u32, &str)> = pids
            .iter()
            .filter(|p| sys.alive(**p))
            .map(|p| (*p, what))
            .collect();
        kill_now(sys, &left, out);
    }
}

fn kill_now(sys: &dyn System, victims: &[(u32, &str)], out: &mut Outcome) {
    for &(pid, what) in victims {
        match sys.signal(pid, Sig::Kill) {
            Ok(()) => out.did(format!("killed {what} (pid {pid})")),
            // gone already: its shim or parent took it down
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {}
            Err(e) => out.fail(format!("kill -KILL {pid} ({what}): {e}")),
        }
    }
    let pids: Vec<u32> = victims.iter().map(|v| v.0).collect();
    if !wait_gone(sys, &pids, Duration::from_secs(10)) {
        for pid in pids.iter().filter(|p| sys.alive(**p)) {
            out.fail(format!("pid {pid} is still alive after SIGKILL"));
        }
    }
}

fn wait_gone(sys: &dyn System, pids: &[u32], within: Duration) -> bool {
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    loop {
        if pids.iter().all(|p| !sys.alive(*p)) {
            return true;
        }
        if waited >= within {
            return false;
        }
        sys.sleep(step);
        waited += step;
    }
}

fn unmount_one(sys: &dyn System, path: &Path, out: &mut Outcome) {
    match sys.unmount(path, false) {
        Ok(()) => out.did(format!("unmounted {}", path.display())),
        Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => match sys.unmount(path, true) {
            Ok(()) => out.did(format!("unmounted {} (lazily: busy)", path.display())),
            Err(e) => out.fail(format!("umount -l {}: {e}", path.display())),
        },
        // a parent's lazy unmount took it already, or it was never a mount
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => out.fail(format!("umount {}: {e}", path.display())),
    }
}

fn remove_netns(sys: &dyn System, bundles: &[Bundle], out: &mut Outcome) {
    for path in plan::pod_netns(bundles) {
        if !sys.exists(&path) {
            continue;
        }
        unmount_one(sys, &path, out);
        match sys.remove_file(&path) {
            Ok(()) => out.did(format!("removed network namespace {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.fail(format!("rm {}: {e}", path.display())),
        }
    }
}

fn unmount_under(sys: &dyn System, scope: &Scope, out: &mut Outcome) {
    let mountinfo = match sys.mountinfo() {
        Ok(m) => m,
        Err(e) => {
            out.fail(format!("reading /proc/self/mountinfo: {e}"));
            return;
        }
    };
    for path in plan::mounts_under(&mountinfo, &scope.mount_roots()) {
        unmount_one(sys, &path, out);
    }
}

async fn remove_links(netlink: &dyn Netlink, out: &mut Outcome) {
    for name in LINKS {
        match netlink.link_by_name(name).await {
            Ok(Some(link)) => match netlink.delete_link(link.index).await {
                Ok(()) => out.did(format!("deleted interface {name}")),
                Err(e) if e.is_not_found() => {}
                Err(e) => out.fail(format!("deleting interface {name}: {e}")),
            },
            Ok(None) => {}
            Err(e) => out.fail(format!("looking up interface {name}: {e}")),
        }
    }
}

async fn remove_tables(nft: &dyn Nft, out: &mut Outcome) {
    for (family, name) in TABLES {
        match nft.list_table(family, name).await {
            Ok(Some(_)) => {
                let batch = serde_json::json!({"nftables": [
                    {"delete": {"table": {"family": family, "name": name}}}
                ]});
                match nft.apply(&batch.to_string()).await {
                    Ok(()) => out.did(format!("deleted nftables table {family} {name}")),
                    Err(e) => out.fail(format!("deleting nftables table {family} {name}: {e}")),
                }
            }
            Ok(None) => {}
            Err(e) => out.fail(format!("listing nftables table {family} {name}: {e}")),
        }
    }
}

fn remove_cgroups(sys: &dyn System, bundles: &[Bundle], out: &mut Outcome) {
    let Ok(mountinfo) = sys.mountinfo() else {
        return;
    };
    for dir in plan::pod_cgroups(&mountinfo, bundles) {
        if !sys.exists(&dir) {
            continue;
        }
        // a cgroup empties a moment after its last process is reaped
        let mut result = sys.remove_dir(&dir);
        for _ in 0..20 {
            match &result {
                Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                    sys.sleep(Duration::from_millis(100));
                    result = sys.remove_dir(&dir);
                }
                _ => break,
            }
        }
        match result {
            Ok(()) => out.did(format!("removed cgroup {}", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.fail(format!("rmdir {}: {e}", dir.display())),
        }
    }
}

/// The data dir's containerd socket (as the agent's managed containerd uses it).
pub fn containerd_socket(data_dir: &Path) -> PathBuf {
    data_dir
        .join("agent")
        .join("containerd")
        .join("containerd.sock")
}

#[cfg(test)]
mod tests;

//! `mini uninstall`: stops the service, runs `mini killall` (pods, containerd, mounts,
//! interfaces, nftables), and removes everything `mini install` put on the machine -- binary,
//! units, environment files, `/etc/mini` and (unless kept) the data dir.

use std::io::Write;
use std::path::PathBuf;

use crate::envfile;
use crate::install::{bin_dir, data_dir, setting, CONFIG_DIR};
use crate::system::System;
use crate::units::Role;
use crate::InstallError;

/// What to remove.
#[derive(Debug, Clone)]
pub struct UninstallRequest {
    /// This binary: runs `killall`.
    pub self_exe: PathBuf,
    /// Keep the data dir (store, certificates, images).
    pub keep_data: bool,
}

/// Removes mini; every step runs even when an earlier one failed, and the first failure is
/// returned at the end.
pub fn uninstall(
    sys: &dyn System,
    request: &UninstallRequest,
    out: &mut dyn Write,
) -> Result<(), InstallError> {
    let mut first_error: Option<InstallError> = None;
    let mut keep = |r: Result<(), InstallError>, out: &mut dyn Write| {
        if let Err(e) = r {
            let _ = writeln!(out, "[mini uninstall] {e}");
            first_error.get_or_insert(e);
        }
    };
    let say = |out: &mut dyn Write, line: String| {
        let _ = writeln!(out, "[mini uninstall] {line}");
    };

    // what each role's env file says about where things are
    let mut bin_dirs = vec![bin_dir(&Default::default())];
    let mut data_dirs = vec![data_dir(&Default::default())];
    let mut extra_files = Vec::new();
    let mut units = Vec::new();
    for role in Role::ALL {
        let env = match sys.read(&role.env_path())? {
            Some(b) => envfile::parse(&String::from_utf8_lossy(&b)),
            None => Default::default(),
        };
        let exists = sys.read(&role.unit_path())?.is_some();
        if exists || !env.is_empty() {
            units.push(role);
        }
        bin_dirs.push(bin_dir(&env));
        data_dirs.push(data_dir(&env));
        if let Some(k) = setting(&env, "write-kubeconfig", "MINI_WRITE_KUBECONFIG") {
            extra_files.push(PathBuf::from(k));
        }
    }
    bin_dirs.dedup();
    data_dirs.sort();
    data_dirs.dedup();

    // 1. stop the services so systemd does not restart what killall stops
    for role in &units {
        say(out, format!("stopping {}", role.unit_name()));
        let _ = sys.systemctl(&["disable", "--now", role.unit_name()]);
    }
    // 2. pods, containerd, mounts, interfaces, nftables: per data dir
    for dir in &data_dirs {
        let dir = dir.to_string_lossy();
        say(out, format!("running `mini killall --data-dir {dir}`"));
        keep(
            sys.run(&request.self_exe, &["killall", "--data-dir", &dir]),
            out,
        );
    }
    // 3. files
    let mut paths: Vec<PathBuf> = Vec::new();
    for role in Role::ALL {
        paths.push(role.unit_path());
        paths.push(role.env_path());
    }
    paths.extend(bin_dirs.iter().map(|d| d.join("mini")));
    paths.push(PathBuf::from(CONFIG_DIR));
    paths.extend(extra_files);
    if request.keep_data {
        say(
            out,
            format!(
                "keeping the data dir {}",
                data_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    } else {
        paths.extend(data_dirs);
    }
    for path in &paths {
        match sys.remove(path) {
            Ok(true) => say(out, format!("removed {}", path.display())),
            Ok(false) => {}
            Err(e) => keep(Err(e), out),
        }
    }
    if !units.is_empty() {
        keep(sys.systemctl(&["daemon-reload"]), out);
        for role in &units {
            let _ = sys.systemctl(&["reset-failed", role.unit_name()]);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            say(out, "mini is uninstalled".into());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::fake::FakeSystem;

    fn installed() -> FakeSystem {
        let sys = FakeSystem::default();
        sys.put("/usr/local/bin/mini", b"bin", 0o755);
        sys.put("/etc/systemd/system/mini-server.service", b"unit", 0o644);
        sys.put(
            "/etc/systemd/system/mini-server.service.env",
            b"MINI_EXEC=\"--data-dir /srv/mini\"\nMINI_BIN_DIR=\"/opt/bin\"\n",
            0o600,
        );
        sys.put("/opt/bin/mini", b"bin", 0o755);
        sys.put("/etc/mini/config.yaml", b"a: b", 0o644);
        sys.put("/srv/mini/server/db", b"x", 0o600);
        sys.put("/var/lib/mini/agent/x", b"x", 0o600);
        sys.put("/etc/hosts", b"keep", 0o644);
        sys
    }

    fn req(keep_data: bool) -> UninstallRequest {
        UninstallRequest {
            self_exe: PathBuf::from("/usr/local/bin/mini"),
            keep_data,
        }
    }

    #[test]
    fn uninstall_removes_everything_install_created() {
        let sys = installed();
        let mut out = Vec::new();
        uninstall(&sys, &req(false), &mut out).unwrap();
        let calls = sys.take_calls();
        assert_eq!(calls[0], "systemctl disable --now mini-server.service");
        assert_eq!(
            calls[1],
            "run /usr/local/bin/mini killall --data-dir /srv/mini"
        );
        assert_eq!(
            calls[2],
            "run /usr/local/bin/mini killall --data-dir /var/lib/mini"
        );
        let left: Vec<PathBuf> = sys.files.borrow().keys().cloned().collect();
        assert_eq!(left, vec![PathBuf::from("/etc/hosts")]);
        assert!(calls.contains(&"systemctl daemon-reload".to_string()));
    }

    #[test]
    fn uninstall_keep_data_leaves_data_dirs() {
        let sys = installed();
        uninstall(&sys, &req(true), &mut Vec::new()).unwrap();
        assert!(sys.file("/srv/mini/server/db").is_some());
        assert!(sys.file("/var/lib/mini/agent/x").is_some());
        assert!(sys.file("/usr/local/bin/mini").is_none());
        assert!(sys.file("/etc/mini/config.yaml").is_none());
    }

    #[test]
    fn uninstall_failed_killall_still_removes_files_and_fails() {
        let sys = installed();
        sys.failing_programs
            .borrow_mut()
            .push("/usr/local/bin/mini killall --data-dir /var/lib/mini".into());
        let err = uninstall(&sys, &req(false), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("killall"), "{err}");
        assert!(sys.file("/usr/local/bin/mini").is_none());
    }

    #[test]
    fn uninstall_nothing_installed_succeeds_without_systemctl() {
        let sys = FakeSystem::default();
        uninstall(&sys, &req(false), &mut Vec::new()).unwrap();
        assert_eq!(
            sys.take_calls(),
            vec!["run /usr/local/bin/mini killall --data-dir /var/lib/mini"]
        );
    }
}

//! The systemd units of mini (`mini-server.service`, `mini-agent.service`): their text rendered
//! for a bin dir, and where units and their environment files live.

use std::path::{Path, PathBuf};

/// Where units and their environment files are written.
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// The bin dir the master copies in `systemd/` are rendered for.
pub const DEFAULT_BIN_DIR: &str = "/usr/local/bin";

/// Which service this machine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `mini server`: control plane and, by default, this machine's node.
    Server,
    /// `mini agent`: a node joining a server.
    Agent,
}

impl Role {
    /// Both roles, server first.
    pub const ALL: [Role; 2] = [Role::Server, Role::Agent];

    /// The `mini` subcommand the unit runs.
    pub fn subcommand(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }

    /// `mini-server.service` or `mini-agent.service`.
    pub fn unit_name(self) -> &'static str {
        match self {
            Role::Server => "mini-server.service",
            Role::Agent => "mini-agent.service",
        }
    }

    /// `/etc/systemd/system/<unit>`.
    pub fn unit_path(self) -> PathBuf {
        Path::new(UNIT_DIR).join(self.unit_name())
    }

    /// `/etc/systemd/system/<unit>.env`: the unit's `EnvironmentFile`.
    pub fn env_path(self) -> PathBuf {
        Path::new(UNIT_DIR).join(format!("{}.env", self.unit_name()))
    }
}

/// The unit's text for a binary installed as `<bin_dir>/mini`. Extra flags reach `mini` through
/// `$MINI_EXEC` in the environment file, so the text depends only on the role and the bin dir.
pub fn render_unit(role: Role, bin_dir: &Path) -> String {
    let description = match role {
        Role::Server => "mini server: a single-binary Kubernetes control plane and node",
        Role::Agent => "mini agent: a node of a mini cluster",
    };
    format!(
        "[Unit]
Description={description}
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-{env}
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart={bin}/mini {sub} $MINI_EXEC
",
        env = role.env_path().display(),
        bin = bin_dir.display(),
        sub = role.subcommand(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER_SERVER: &str = include_str!("../../../systemd/mini-server.service");
    const MASTER_AGENT: &str = include_str!("../../../systemd/mini-agent.service");

    #[test]
    fn render_unit_default_bin_dir_equals_master_copies() {
        let bin = Path::new(DEFAULT_BIN_DIR);
        assert_eq!(render_unit(Role::Server, bin), MASTER_SERVER);
        assert_eq!(render_unit(Role::Agent, bin), MASTER_AGENT);
    }

    #[test]
    fn render_unit_other_bin_dir_changes_only_exec_start() {
        let text = render_unit(Role::Agent, Path::new("/opt/mini/bin"));
        assert!(text.contains("ExecStart=/opt/mini/bin/mini agent $MINI_EXEC\n"));
        assert_eq!(
            text.replace("/opt/mini/bin/mini", "/usr/local/bin/mini"),
            MASTER_AGENT
        );
    }

    #[test]
    fn render_unit_systemd_analyze_verify_is_clean() {
        if std::process::Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: systemd-analyze is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for role in Role::ALL {
            let path = dir.path().join(role.unit_name());
            std::fs::write(&path, render_unit(role, Path::new(DEFAULT_BIN_DIR))).unwrap();
            // the unit runs /usr/local/bin/mini, which need not exist here: verify the unit
            // with ExecStart pointing at a program that does
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("/usr/local/bin/mini", "/bin/true");
            std::fs::write(&path, text).unwrap();
            let out = std::process::Command::new("systemd-analyze")
                .arg("verify")
                .arg(&path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            // lines about other units on this machine (e.g. its own broken units) are not ours
            let ours: Vec<&str> = stderr
                .lines()
                .filter(|l| l.contains(role.unit_name()))
                .collect();
            assert!(
                out.status.success() && ours.is_empty(),
                "systemd-analyze verify {}: {}\n{stderr}",
                role.unit_name(),
                out.status
            );
        }
    }
}

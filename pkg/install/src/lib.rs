//! mini as a service: the systemd units, config files turned into flags, `sd_notify`, and the
//! logic of `mini install` / `mini uninstall`, with every host call behind [`system::System`].

pub mod config;
pub mod envfile;
pub mod install;
pub mod notify;
pub mod probe;
pub mod system;
pub mod uninstall;
pub mod units;

use std::path::PathBuf;

pub use config::{with_config_files, ConfigError, FlagKind, FlagSpec};
pub use install::{install, InstallOutcome, InstallRequest};
pub use notify::{Notifier, SystemdNotifier};
pub use probe::{ClusterProbe, KubeProbe};
pub use system::{HostSystem, System};
pub use uninstall::{uninstall, UninstallRequest};
pub use units::{render_unit, Role};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error(
        "{unit} failed: {state}: {reason} (systemd restarts it every 5s; see `journalctl -u {unit}`, fix the cause and run the installer again)"
    )]
    UnitFailed {
        unit: String,
        state: String,
        reason: String,
    },
    #[error("timed out after {secs}s waiting for {unit}: {what} (see `journalctl -u {unit}`)")]
    Timeout {
        secs: u64,
        unit: String,
        what: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

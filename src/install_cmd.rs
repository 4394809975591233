//! Clap types and dispatch of `mini install` / `mini uninstall`, the `--config` file flag of
//! `mini server` / `mini agent`, and the config files turned into flags before parsing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgAction, CommandFactory};

use crate::Cli;

/// `--config`: the config file of `mini server` / `mini agent`.
#[derive(Debug, clap::Args)]
pub struct ConfigFileArgs {
    /// Config file whose keys are this command's long flags (default /etc/mini/config.yaml);
    /// drop-ins in FILE.d/*.yaml apply after it, and flags given here override both.
    #[arg(long = "config", env = "MINI_CONFIG_FILE", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Join this server as an agent (as MINI_URL); without it this machine runs `mini server`.
    #[arg(long)]
    pub server: Option<String>,
    /// Join token (as MINI_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// The binary to install (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Air-gap bundle to install from (verified; its images go to <data-dir>/agent/images).
    #[arg(long, env = "MINI_BUNDLE")]
    pub bundle: Option<PathBuf>,
    /// Seconds to wait for the service to be Ready.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Extra flags for `mini server` / `mini agent` (kept as MINI_EXEC).
    #[arg(last = true)]
    pub extra: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// Keep the data dir (store, certificates, images).
    #[arg(long)]
    pub keep_data: bool,
}

/// The long flags of a subcommand that reads config files (`server`, `agent`).
fn flags_of(subcommand: &str) -> Option<Vec<mini_install::FlagSpec>> {
    if !matches!(subcommand, "server" | "agent") {
        return None;
    }
    let command = Cli::command();
    let sub = command.find_subcommand(subcommand)?;
    Some(
        sub.get_arguments()
            .filter_map(|a| {
                let long = a.get_long()?.to_string();
                let kind = match a.get_action() {
                    ArgAction::SetTrue | ArgAction::SetFalse => mini_install::FlagKind::Switch,
                    ArgAction::Append => mini_install::FlagKind::List,
                    ArgAction::Set => mini_install::FlagKind::Value,
                    _ => return None,
                };
                Some(mini_install::FlagSpec { long, kind })
            })
            .collect(),
    )
}

/// The command line with the config files' flags inserted after `server` / `agent`.
pub fn with_config_files(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let env = std::env::var_os("MINI_CONFIG_FILE");
    Ok(mini_install::with_config_files(
        args,
        env.as_deref(),
        flags_of,
    )?)
}

/// Installing from an air-gap bundle: verifies it and unpacks its images into
/// `<data_dir>/agent/images` (and its .debs when containerd/runc are missing).
fn install_bundle(path: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let summary = mini_bundle::install_from(path, data_dir)?;
    if let Some(images) = &summary.images_tarball {
        println!("bundle images: {}", images.display());
    }
    for package in &summary.installed_packages {
        println!("installed package {package}");
    }
    Ok(())
}

pub fn run_install(args: InstallArgs) -> anyhow::Result<()> {
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    if let Some(bundle) = &args.bundle {
        let data_dir = env
            .get("MINI_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(mini_install::install::DEFAULT_DATA_DIR));
        install_bundle(bundle, &data_dir)?;
    }
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("finding this binary to install it: {e}"))?,
    };
    let request = mini_install::InstallRequest {
        env,
        server: args.server,
        token: args.token,
        extra_args: args.extra,
        binary,
        timeout: Duration::from_secs(args.timeout),
    };
    let probe = mini_install::KubeProbe::new()?;
    mini_install::install(
        &mini_install::HostSystem::new(),
        &probe,
        &request,
        &mut std::io::stdout(),
    )?;
    Ok(())
}

pub fn run_uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    let self_exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("finding this binary to run `mini killall`: {e}"))?;
    mini_install::uninstall(
        &mini_install::HostSystem::new(),
        &mini_install::UninstallRequest {
            self_exe,
            keep_data: args.keep_data,
        },
        &mut std::io::stdout(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_of_server_knows_kinds_from_clap() {
        let flags = flags_of("server").unwrap();
        let kind = |n: &str| flags.iter().find(|f| f.long == n).map(|f| f.kind);
        assert_eq!(kind("node-label"), Some(mini_install::FlagKind::List));
        assert_eq!(kind("tls-san"), Some(mini_install::FlagKind::List));
        assert_eq!(kind("disable-agent"), Some(mini_install::FlagKind::Switch));
        assert_eq!(kind("data-dir"), Some(mini_install::FlagKind::Value));
        assert!(flags_of("agent")
            .unwrap()
            .iter()
            .any(|f| f.long == "server"));
        assert!(flags_of("images").is_none());
    }

    #[test]
    fn with_config_files_server_flags_from_file_parse_with_clap() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            "node-label: [a=b]\ntls-san: x\ndisable-agent: true\nhttps-listen-port: 7443\n",
        )
        .unwrap();
        let args: Vec<OsString> = [
            "mini",
            "server",
            "--config",
            file.to_str().unwrap(),
            "--tls-san",
            "y",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let args = mini_install::with_config_files(args, None, flags_of).unwrap();
        let cli = <Cli as clap::Parser>::try_parse_from(args).unwrap();
        let crate::Command::Server(server) = cli.command else {
            panic!("not a server command");
        };
        assert_eq!(server.tls_san, vec!["x".to_string(), "y".to_string()]);
        assert!(server.disable_agent);
        assert_eq!(server.https_listen_port, 7443);
        assert_eq!(server.node.node_label, vec!["a=b".to_string()]);
    }

    #[test]
    fn with_config_files_unknown_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "tls-sans: x\n").unwrap();
        let args: Vec<OsString> = ["mini", "agent", "--config", file.to_str().unwrap()]
            .iter()
            .map(OsString::from)
            .collect();
        let err = mini_install::with_config_files(args, None, flags_of).unwrap_err();
        assert!(err.to_string().contains("\"tls-sans\""), "{err}");
    }
}

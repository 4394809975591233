//! The CNI plugins mini builds in, so a node needs no containernetworking-plugins: `bridge`,
//! `host-local` (IPAM), `loopback` and `portmap`, speaking CNI spec 0.3.0-1.1.0 as containerd's
//! CRI (libcni) invokes them. The mini binary is installed under each plugin's name; when it
//! starts under one of them, `plugin_main` runs that plugin: `CNI_*` environment in, network
//! config on stdin, result (or the CNI error JSON, exit code 1) on stdout.
//!
//! OS access goes through `mini_sys` (netlink, nftables, sysctls) and the `Delegate` trait (the
//! IPAM plugin run from `CNI_PATH`), so every plugin runs in unit tests over fakes.

pub mod bridge;
pub mod hostlocal;
pub mod invoke;
pub mod loopback;
pub mod portmap;
pub mod types;

#[cfg(test)]
mod tests;

use std::io::{Read, Write};
use std::sync::Arc;

use mini_sys::netlink::Netlink;
use mini_sys::nft::Nft;
use serde_json::{json, Value};

pub use invoke::{Delegate, ExecDelegate};
pub use types::{CniError, Command, Context};

/// The names the mini binary answers to as a CNI plugin.
pub const PLUGIN_NAMES: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// Whether `name` (a file name, e.g. of argv[0]) is one of the built-in plugins.
pub fn is_plugin_name(name: &str) -> bool {
    PLUGIN_NAMES.contains(&name)
}

/// What the plugins act through.
pub struct Deps {
    /// Netlink in the namespace the plugin runs in (the host's, as containerd runs it).
    pub netlink: Arc<dyn Netlink>,
    pub nft: Arc<dyn Nft>,
    /// Sysctls and route look-ups.
    pub host: Arc<dyn mini_sys::Host>,
    pub delegate: Arc<dyn Delegate>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").finish_non_exhaustive()
    }
}

/// The nftables implementation the portmap plugin programs rules through.
pub fn default_nft() -> Arc<dyn Nft> {
    Arc::new(mini_sys::nft_netlink::NftNetlink::new())
}

/// The `VERSION` answer.
pub fn version_info() -> Value {
    json!({"cniVersion": types::LATEST_VERSION, "supportedVersions": types::SUPPORTED_VERSIONS})
}

/// Runs plugin `name` for one invocation; `Some` is the JSON to print.
pub async fn run_plugin(name: &str, deps: &Deps, ctx: &Context) -> Result<Option<Value>, CniError> {
    if ctx.command == Command::Version {
        return Ok(Some(version_info()));
    }
    let common: types::CommonConf = types::decode(&ctx.stdin)?;
    types::check_version(&common.cni_version)?;
    if ctx.command == Command::Check && !types::supports_check(&common.cni_version) {
        return Err(CniError::new(
            types::code::INCOMPATIBLE_VERSION,
            "config version does not allow CHECK",
            format!("cniVersion {}", common.cni_version),
        ));
    }
    if matches!(ctx.command, Command::Status | Command::Gc)
        && !common.cni_version.starts_with("1.1")
    {
        return Err(CniError::new(
            types::code::INCOMPATIBLE_VERSION,
            format!("config version does not allow {}", ctx.command.as_str()),
            format!("cniVersion {}", common.cni_version),
        ));
    }
    match name {
        "bridge" => bridge::run(deps, ctx).await,
        "host-local" => hostlocal::run(ctx),
        "loopback" => loopback::run(deps, ctx).await,
        "portmap" => portmap::run(deps, ctx).await,
        other => Err(CniError::new(
            types::code::PLUGIN,
            format!("{other:?} is not a built-in CNI plugin"),
            format!("built in: {}", PLUGIN_NAMES.join(", ")),
        )),
    }
}

/// The version errors are printed in: the config's, when it can be read.
fn error_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<types::CommonConf>(stdin)
        .ok()
        .map(|c| c.cni_version)
        .filter(|v| types::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| types::LATEST_VERSION.to_string())
}

/// The mini binary's entry point as CNI plugin `name`: reads the environment and stdin, runs
/// the plugin on a small runtime, prints the result or the error; returns the exit code.
pub fn plugin_main(name: &str) -> u8 {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        return print_error(
            &CniError::new(
                types::code::IO,
                "failed to read the config from stdin",
                e.to_string(),
            ),
            types::LATEST_VERSION,
        );
    }
    let version = error_version(&stdin);
    let outcome = Context::from_env(|k| std::env::var(k).ok(), stdin).and_then(|ctx| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CniError::plugin("failed to start the async runtime", e))?;
        runtime.block_on(async {
            let netlink = mini_sys::netlink::RtNetlink::connect()
                .map_err(|e| CniError::plugin("failed to open netlink", e))?;
            let deps = Deps {
                netlink: Arc::new(netlink),
                nft: default_nft(),
                host: Arc::new(mini_sys::LinuxHost),
                delegate: Arc::new(ExecDelegate),
            };
            run_plugin(name, &deps, &ctx).await
        })
    });
    match outcome {
        Ok(Some(out)) => {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{out}");
            0
        }
        Ok(None) => 0,
        Err(e) => print_error(&e, &version),
    }
}

fn print_error(e: &CniError, version: &str) -> u8 {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", e.to_json(version));
    1
}

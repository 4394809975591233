//! Delegation to another plugin (bridge runs its IPAM plugin this way): `Delegate` is the
//! trait, `ExecDelegate` runs the plugin found in `CNI_PATH` as libcni's invoke package does
//! (same environment with `CNI_COMMAND` set, config on stdin, result or error JSON on stdout).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use serde_json::Value;

use crate::types::{code, CniError, Command, Context};

/// Runs another plugin for this invocation.
pub trait Delegate: Send + Sync {
    /// Runs `plugin` with `command` and `stdin`; `Some` is its printed result (ADD).
    fn invoke(
        &self,
        plugin: &str,
        command: Command,
        stdin: &[u8],
        ctx: &Context,
    ) -> Result<Option<Value>, CniError>;
}

/// Executes plugins from `CNI_PATH`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecDelegate;

/// The first `CNI_PATH` entry holding an executable `plugin`.
pub fn find_in_path(plugin: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(CniError::invalid_config(format!(
            "plugin type {plugin:?} is not a plugin name"
        )));
    }
    path.iter()
        .map(|dir| dir.join(plugin))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            CniError::plugin(
                format!("failed to find plugin {plugin:?} in path"),
                format!("{path:?}"),
            )
        })
}

impl Delegate for ExecDelegate {
    fn invoke(
        &self,
        plugin: &str,
        command: Command,
        stdin: &[u8],
        ctx: &Context,
    ) -> Result<Option<Value>, CniError> {
        let program = find_in_path(plugin, &ctx.path)?;
        let mut child = Process::new(&program)
            .env("CNI_COMMAND", command.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| CniError::plugin(format!("starting {}", program.display()), e))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin)
                .map_err(|e| CniError::plugin(format!("writing the config to {plugin}"), e))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| CniError::plugin(format!("waiting for {plugin}"), e))?;
        let parsed: Option<Value> = if output.stdout.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(serde_json::from_slice(&output.stdout).map_err(|e| {
                CniError::new(
                    code::DECODE,
                    format!("{plugin} printed something that is not JSON"),
                    e.to_string(),
                )
            })?)
        };
        if !output.status.success() {
            return Err(parsed
                .as_ref()
                .and_then(CniError::from_json)
                .unwrap_or_else(|| {
                    CniError::plugin(
                        format!("{plugin} {} failed", command.as_str()),
                        output.status,
                    )
                }));
        }
        Ok(parsed)
    }
}

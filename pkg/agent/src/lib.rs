//! mini agent: join by token, register the node, run containerd and the kubelet, serve port 10250.

pub mod cni;
pub mod config;
mod fsutil;
pub mod join;
pub mod node;
pub mod server;
pub mod stats;

#[cfg(test)]
mod testutil;

pub use config::{parse_node_labels, parse_node_taints, AgentConfig, ContainerRuntimeMode};

use std::path::PathBuf;

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{flag} {value:?}: {reason}")]
    Config {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}; pass the token printed by `mini server` (K10<ca hash>::server:<secret>)")]
    Token(String),
    #[error("the CA of {server} does not match the join token's CA hash (token: sha256 {expected}, server: sha256 {actual}): wrong server or wrong token")]
    CaHashMismatch {
        server: String,
        expected: String,
        actual: String,
    },
    #[error("{server} refused the join token: {message}; check --token")]
    JoinRefused { server: String, message: String },
    #[error("node name {node:?} is already used by another machine ({message}); pick another with --node-name")]
    NodeNameConflict { node: String, message: String },
    #[error("joining the cluster failed: {0}")]
    Join(String),
    #[error("cannot reach the server {server}: {reason}")]
    ServerUnreachable { server: String, reason: String },
    #[error("node identity {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sys(#[from] mini_sys::SysError),
    #[error("{what}: {source}")]
    Api {
        what: String,
        source: Box<kube::Error>,
    },
    #[error("serving the node API failed: {0}")]
    Serve(String),
    #[error("container runtime: {0}")]
    Runtime(String),
}

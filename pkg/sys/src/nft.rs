//! nftables through the `nft` binary's JSON interface (run by the `nftables` crate), behind the
//! `Nft` trait: `NftCli` is the real thing, `FakeNft` records batches for unit tests.
//!
//! Batches travel as nftables JSON documents (`{"nftables": [...]}`) rather than the crate's
//! typed schema: nftables 0.6's schema has no `verdict` map type, which kube-proxy-style
//! rulesets are built on, and cannot even parse a listing that holds one.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;

/// A failed `nft` run: what was asked and what nft said.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nft {action}: {message}")]
    Failed { action: String, message: String },
    #[error("nft {action}: the blocking task failed: {message}")]
    Task { action: String, message: String },
}

/// The nftables calls the node side makes.
#[async_trait::async_trait]
pub trait Nft: Send + Sync + 'static {
    /// Applies `batch`, one nftables JSON document of commands (`{"nftables": [{"add": ...},
    /// {"delete": ...}, ...]}`), as one transaction: all of it or none of it.
    async fn apply(&self, batch: &str) -> Result<(), NftError>;
    /// The JSON listing (`nft -j list table`) of one table; `None` when it does not exist.
    async fn list_table(&self, family: &str, table: &str) -> Result<Option<String>, NftError>;
}

/// The real nftables: runs `nft -j -f -` through the `nftables` crate, in this process's
/// network namespace or, with `in_netns`, in a named one (`ip netns exec`).
#[derive(Debug, Clone, Default)]
pub struct NftCli {
    netns: Option<String>,
}

impl NftCli {
    pub fn new() -> NftCli {
        NftCli::default()
    }

    /// Runs every command inside the named network namespace (`/var/run/netns/<name>`).
    pub fn in_netns(name: impl Into<String>) -> NftCli {
        NftCli {
            netns: Some(name.into()),
        }
    }

    fn program_and_args(&self) -> (PathBuf, Vec<OsString>) {
        match &self.netns {
            None => (PathBuf::from("nft"), Vec::new()),
            Some(ns) => (
                PathBuf::from("ip"),
                ["netns", "exec", ns.as_str(), "nft"]
                    .iter()
                    .map(OsString::from)
                    .collect(),
            ),
        }
    }

    async fn run(&self, action: String, payload: String) -> Result<String, NftError> {
        let (program, args) = self.program_and_args();
        let task_action = action.clone();
        tokio::task::spawn_blocking(move || {
            nftables::helper::apply_ruleset_raw(&payload, Some(&program), &args).map_err(|e| {
                let message = match e {
                    nftables::helper::NftablesError::NftFailed { stderr, .. } => {
                        stderr.trim().to_string()
                    }
                    other => other.to_string(),
                };
                NftError::Failed {
                    action: task_action,
                    message,
                }
            })
        })
        .await
        .map_err(|e| NftError::Task {
            action,
            message: e.to_string(),
        })?
    }
}

/// Whether nft's message says the listed object does not exist.
fn is_not_found(message: &str) -> bool {
    message.contains("No such file or directory")
}

#[async_trait::async_trait]
impl Nft for NftCli {
    async fn apply(&self, batch: &str) -> Result<(), NftError> {
        self.run("apply batch".into(), batch.to_string())
            .await
            .map(|_| ())
    }

    async fn list_table(&self, family: &str, table: &str) -> Result<Option<String>, NftError> {
        // A `list` command in a JSON batch prints its JSON listing on stdout, which keeps
        // the one `nft -j -f -` call shape for both directions (and for `ip netns exec`).
        let payload = format!(
            r#"{{"nftables":[{{"list":{{"table":{{"family":"{family}","name":"{table}"}}}}}}]}}"#
        );
        match self
            .run(format!("list table {family} {table}"), payload)
            .await
        {
            Ok(listing) => Ok(Some(listing)),
            Err(NftError::Failed { message, .. }) if is_not_found(&message) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An `Nft` for unit tests: records every applied batch, answers listings with what the
/// test set, and fails the next `apply` when told to.
#[derive(Debug, Default)]
pub struct FakeNft {
    batches: Mutex<Vec<String>>,
    listing: Mutex<Option<String>>,
    fail_next: Mutex<Option<String>>,
}

impl FakeNft {
    pub fn new() -> FakeNft {
        FakeNft::default()
    }

    /// Every batch applied so far, oldest first.
    pub fn batches(&self) -> Vec<String> {
        self.batches.lock().expect("fake nft lock").clone()
    }

    /// What `list_table` answers from now on (`None`: the table does not exist).
    pub fn set_listing(&self, listing: Option<String>) {
        *self.listing.lock().expect("fake nft lock") = listing;
    }

    /// Makes the next `apply` fail with `message` (and record nothing).
    pub fn fail_next_apply(&self, message: impl Into<String>) {
        *self.fail_next.lock().expect("fake nft lock") = Some(message.into());
    }
}

#[async_trait::async_trait]
impl Nft for FakeNft {
    async fn apply(&self, batch: &str) -> Result<(), NftError> {
        if let Some(message) = self.fail_next.lock().expect("fake nft lock").take() {
            return Err(NftError::Failed {
                action: "apply batch".into(),
                message,
            });
        }
        self.batches
            .lock()
            .expect("fake nft lock")
            .push(batch.to_string());
        Ok(())
    }

    async fn list_table(&self, _family: &str, _table: &str) -> Result<Option<String>, NftError> {
        Ok(self.listing.lock().expect("fake nft lock").clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_nft_records_batches_and_fails_once_when_told() {
        let nft = FakeNft::new();
        nft.apply(r#"{"nftables":[]}"#).await.expect("apply");
        nft.fail_next_apply("boom");
        assert!(nft.apply("x").await.is_err());
        nft.apply("y").await.expect("apply after failure");
        assert_eq!(
            nft.batches(),
            vec![r#"{"nftables":[]}"#.to_string(), "y".into()]
        );
        assert_eq!(nft.list_table("ip", "mini").await.expect("list"), None);
    }

    #[test]
    fn nft_cli_in_netns_runs_through_ip_netns_exec() {
        let (program, args) = NftCli::in_netns("minipx1").program_and_args();
        assert_eq!(program, PathBuf::from("ip"));
        assert_eq!(args, vec!["netns", "exec", "minipx1", "nft"]);
        assert_eq!(NftCli::new().program_and_args().0, PathBuf::from("nft"));
    }

    #[test]
    fn nft_missing_table_message_is_not_found() {
        assert!(is_not_found(
            "Error: No such file or directory\nlist table ip mini"
        ));
        assert!(!is_not_found("Error: syntax error"));
    }
}

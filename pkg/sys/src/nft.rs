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

/// The real nftables: runs `nft -j` through the `nftables` crate, in this process's
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

    /// The program and the arguments before nft's own: the `nftables` crate puts `-j` right
    /// after the program, which `ip` takes as its own (harmless) JSON flag, so nft gets its
    /// own `-j` here too.
    fn program_and_args(&self) -> (PathBuf, Vec<OsString>) {
        match &self.netns {
            None => (PathBuf::from("nft"), Vec::new()),
            Some(ns) => (
                PathBuf::from("ip"),
                ["netns", "exec", ns.as_str(), "nft", "-j"]
                    .iter()
                    .map(OsString::from)
                    .collect(),
            ),
        }
    }

    /// Runs `nft -j <args>` (through the crate, which captures stdout and stderr).
    async fn run(&self, action: String, args: Vec<OsString>) -> Result<String, NftError> {
        let (program, mut all) = self.program_and_args();
        all.extend(args);
        let task_action = action.clone();
        tokio::task::spawn_blocking(move || {
            nftables::helper::get_current_ruleset_raw(Some(&program), &all).map_err(|e| {
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

/// A batch file removed on drop.
struct BatchFile(PathBuf);

impl BatchFile {
    fn write(batch: &str) -> Result<BatchFile, NftError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mini-nft-{}-{n}.json", std::process::id()));
        std::fs::write(&path, batch).map_err(|e| NftError::Failed {
            action: format!("write batch file {}", path.display()),
            message: e.to_string(),
        })?;
        Ok(BatchFile(path))
    }
}

impl Drop for BatchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[async_trait::async_trait]
impl Nft for NftCli {
    async fn apply(&self, batch: &str) -> Result<(), NftError> {
        // From a file rather than stdin: the crate's stdin path does not capture stderr, and
        // nft's error message is what says which command failed.
        let file = BatchFile::write(batch)?;
        let args = vec![OsString::from("-f"), file.0.clone().into_os_string()];
        self.run("apply batch".into(), args).await.map(|_| ())
    }

    async fn list_table(&self, family: &str, table: &str) -> Result<Option<String>, NftError> {
        let args = ["list", "table", family, table]
            .iter()
            .map(OsString::from)
            .collect();
        match self.run(format!("list table {family} {table}"), args).await {
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
        assert_eq!(args, vec!["netns", "exec", "minipx1", "nft", "-j"]);
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

//! nftables behind the `Nft` trait: batches are nftables JSON documents (`{"nftables": [...]}`,
//! what `nft -j -f` reads) and listings are what `nft -j list table` prints. The real thing is
//! `crate::nft_netlink::NftNetlink` (nf_tables over netlink, no `nft` program needed);
//! `FakeNft` records batches for unit tests.

use std::sync::Mutex;

/// A failed nftables call: what was asked (the command, e.g. `add rule ip mini svc-x`) and
/// what the kernel said.
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
}

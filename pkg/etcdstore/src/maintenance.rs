//! Keeping etcd's disk use bounded, online: compaction of every revision older than the watch
//! history window (no watcher can resume from those any more), then defragmentation of each
//! member whose file is mostly free pages, one member at a time.

use crate::client::{endpoint, tls_config};
use crate::convert::to_i64;
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::{CompactionRequest, DefragmentRequest, StatusRequest};
use crate::{describe_status, EtcdStore};
use mini_store::{Revision, StoreError};

/// A member is defragmented when its free pages exceed both half the pages in use and this.
pub const DEFRAGMENT_MIN_FREE: i64 = 4 << 20;

/// The file of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpace {
    pub endpoint: String,
    /// Bytes of the member's database file.
    pub db_size: i64,
    /// Bytes of it holding data (the rest is free pages a defragmentation gives back).
    pub db_size_in_use: i64,
    /// Defragmented by this pass.
    pub defragmented: bool,
}

/// What [`EtcdStore::reclaim_space`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceReport {
    /// etcd's history was compacted up to this revision.
    pub compacted: Revision,
    /// Each member after the pass.
    pub members: Vec<MemberSpace>,
}

impl EtcdStore {
    async fn maintenance(
        &self,
        url: &str,
    ) -> Result<MaintenanceClient<tonic::transport::Channel>, StoreError> {
        let tls = tls_config(&self.config).map_err(|e| StoreError::Backend(e.to_string()))?;
        let channel = endpoint(url, tls.as_ref(), self.timeout)
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .connect()
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("connecting to {url}: {}", crate::describe(&e)))
            })?;
        Ok(MaintenanceClient::new(channel))
    }

    /// The database file of each member, as its status reports it.
    pub async fn member_space(&self) -> Result<Vec<MemberSpace>, StoreError> {
        let mut members = Vec::new();
        for url in &self.config.endpoints {
            let mut client = self.maintenance(url).await?;
            let status = tokio::time::timeout(self.timeout, client.status(StatusRequest {}))
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!("{url} did not report its status in time"))
                })?
                .map_err(|e| {
                    StoreError::Unavailable(format!("status of {url}: {}", describe_status(&e)))
                })?
                .into_inner();
            members.push(MemberSpace {
                endpoint: url.clone(),
                db_size: status.db_size,
                db_size_in_use: status.db_size_in_use,
                defragmented: false,
            });
        }
        Ok(members)
    }

    /// Compacts etcd to the oldest revision the watch history still serves (older ones already
    /// answer `Compacted`), then defragments, one at a time, each member whose free pages exceed
    /// both half its pages in use and [`DEFRAGMENT_MIN_FREE`]. A member defragmenting briefly stops
    /// answering; the others serve meanwhile.
    pub async fn reclaim_space(&self) -> Result<SpaceReport, StoreError> {
        let floor = self.oldest_retained_revision().saturating_sub(1);
        if floor > 0 {
            // physical: the call returns once the old revisions are gone from the file, so the
            // space check below sees the pages they freed
            let request = CompactionRequest {
                revision: to_i64(floor),
                physical: true,
            };
            match self
                .call(
                    &format!("compacting etcd to revision {floor}"),
                    self.client.compact(request),
                )
                .await
            {
                Ok(_) => {}
                Err(StoreError::Backend(message)) if message.contains("has been compacted") => {}
                Err(error) => return Err(error),
            }
        }
        let mut members = self.member_space().await?;
        for member in &mut members {
            let free = member.db_size - member.db_size_in_use;
            if free <= member.db_size_in_use / 2 || free <= DEFRAGMENT_MIN_FREE {
                continue;
            }
            let mut client = self.maintenance(&member.endpoint).await?;
            // defragmenting rewrites the whole file: allow it more than one request's time
            let deadline = self.timeout * 12;
            tokio::time::timeout(deadline, client.defragment(DefragmentRequest {}))
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "defragmenting {} took over {deadline:?}",
                        member.endpoint
                    ))
                })?
                .map_err(|e| {
                    StoreError::Unavailable(format!(
                        "defragmenting {}: {}",
                        member.endpoint,
                        describe_status(&e)
                    ))
                })?;
            tracing::info!(endpoint = %member.endpoint, before = member.db_size, in_use = member.db_size_in_use, "defragmented an etcd member");
            member.defragmented = true;
        }
        let after = self.member_space().await?;
        for (member, now) in members.iter_mut().zip(after) {
            member.db_size = now.db_size;
            member.db_size_in_use = now.db_size_in_use;
        }
        Ok(SpaceReport {
            compacted: floor,
            members,
        })
    }
}

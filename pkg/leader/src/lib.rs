//! Leader election on `coordination.k8s.io` Leases, as client-go's leaderelection does it: a
//! candidate takes a Lease that is free, its own, or not renewed for a lease duration (measured on
//! the candidate's own clock from when it last saw the record change, so clocks need not agree),
//! renews it every retry period, and runs its work only while it holds it. A leader that cannot
//! renew within the renew deadline stops its work before anyone else may take over; on shutdown it
//! releases the Lease so another candidate takes over at once.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What to elect on and how fast.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// The Lease's namespace (upstream: `kube-system`).
    pub namespace: String,
    /// The Lease's name (`kube-scheduler`, `kube-controller-manager`).
    pub name: String,
    /// This candidate, unique among the servers and stable across its restarts (a restarted
    /// server takes its own Lease back at once).
    pub identity: String,
    /// How long a Lease holds without renewal (upstream default 15 s).
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops its work (upstream default 10 s).
    pub renew_deadline: Duration,
    /// Between tries to take or renew the Lease (upstream default 2 s).
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// Upstream's timings (15 s / 10 s / 2 s) for `kube-system/<name>`.
    pub fn new(name: &str, identity: &str) -> Self {
        ElectionConfig {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {name}: api request failed: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("lease {name} is held by {holder}")]
    HeldByOther { name: String, holder: String },
}

/// The last Lease record a candidate saw and when (by its own clock) it last changed.
#[derive(Debug, Default)]
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    at: Option<Instant>,
}

impl Observed {
    fn see(&mut self, lease: &Lease, now: Instant) {
        let spec = lease.spec.clone().unwrap_or_default();
        let record = Some((spec.holder_identity, spec.renew_time));
        if self.record != record {
            self.record = record;
            self.at = Some(now);
        }
    }
}

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    config: ElectionConfig,
    observed: Observed,
}

impl Elector {
    pub fn new(client: kube::Client, config: ElectionConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Observed::default(),
        }
    }

    fn api_error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            name: self.config.name.clone(),
            source,
        }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Takes or renews the Lease once: `Ok` when this candidate holds it afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<(), LeaderError> {
        let now = Instant::now();
        let current = match self.api.get_opt(&self.config.name).await {
            Ok(current) => current,
            Err(e) => return Err(self.api_error(e)),
        };
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(0, None)),
            };
            let created = self
                .api
                .create(&PostParams::default(), &lease)
                .await
                .map_err(|e| self.api_error(e))?;
            self.observed.see(&created, now);
            return Ok(());
        };
        self.observed.see(&lease, now);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        if let Some(holder) = &holder {
            let duration = spec
                .lease_duration_seconds
                .map_or(self.config.lease_duration, |s| {
                    Duration::from_secs(u64::try_from(s).unwrap_or(0))
                });
            let expired = self
                .observed
                .at
                .is_some_and(|at| now.duration_since(at) >= duration);
            if !mine && !expired {
                return Err(LeaderError::HeldByOther {
                    name: self.config.name.clone(),
                    holder: holder.clone(),
                });
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let (transitions, acquired) = if mine {
            (transitions, spec.acquire_time.clone())
        } else {
            (transitions.saturating_add(1), None)
        };
        lease.spec = Some(self.spec(transitions, acquired));
        // replace carries the resourceVersion read above: a concurrent taker makes this a conflict
        let updated = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.api_error(e))?;
        self.observed.see(&updated, now);
        Ok(())
    }

    /// Gives the Lease up (if still held) so another candidate takes over without waiting.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..spec
        });
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.api_error(e))?;
        Ok(())
    }
}

/// Runs `work` on this candidate only while it holds the Lease, until `shutdown`: waits to take
/// the Lease, starts `work` with a token of its own, renews every retry period, and when renewal
/// fails past the renew deadline cancels that token and waits for `work` to end (so a deposed
/// leader stops writing) before campaigning again. At `shutdown` it stops `work` and releases the
/// Lease.
pub async fn run_while_leader<F, Fut>(
    client: kube::Client,
    config: ElectionConfig,
    shutdown: CancellationToken,
    work: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut elector = Elector::new(client, config.clone());
    loop {
        // campaign
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(()) => break,
                Err(LeaderError::HeldByOther { .. }) => {}
                Err(e) => tracing::debug!(error = %e, "taking the lease failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(config.retry_period) => {}
            }
        }
        tracing::info!(lease = %config.name, identity = %config.identity, "became the leader");
        let stop = shutdown.child_token();
        let mut running = tokio::spawn(work(stop.clone()));
        let mut last_renew = Instant::now();
        let lost = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                _ = &mut running => {
                    // the work ended on its own (an error it logged): give the lease to another
                    break false;
                }
                _ = tokio::time::sleep(config.retry_period) => {}
            }
            match elector.try_acquire_or_renew().await {
                Ok(()) => last_renew = Instant::now(),
                Err(e) => {
                    tracing::warn!(lease = %config.name, error = %e, "renewing the lease failed");
                    if last_renew.elapsed() >= config.renew_deadline
                        || matches!(e, LeaderError::HeldByOther { .. })
                    {
                        break true;
                    }
                }
            }
        };
        stop.cancel();
        if !running.is_finished() {
            let _ = running.await;
        }
        if lost {
            tracing::warn!(lease = %config.name, identity = %config.identity, "lost the lease: stopped its work; campaigning again");
            continue;
        }
        if let Err(e) = elector.release().await {
            tracing::debug!(lease = %config.name, error = %e, "releasing the lease failed");
        }
        if shutdown.is_cancelled() {
            return;
        }
        // the work ended by itself: wait a lease period so another candidate may take over
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.lease_duration) => {}
        }
    }
}

#[cfg(test)]
mod tests;

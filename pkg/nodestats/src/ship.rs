//! Shipping: every interval one round goes into the bounded queue; alongside, the queue is sent
//! oldest first to the server (`POST /v1-mini/samples` with the node's client certificate),
//! stopping at the first failure so batches arrive in order and once; the next round's arrival
//! is the retry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::queue::BatchQueue;
use crate::sampler::Sampler;
use crate::wire::SampleBatch;
use crate::NodeStatsError;

/// The server's ingest path for [`SampleBatch`] JSON bodies.
pub const SAMPLES_PATH: &str = "/v1-mini/samples";

/// How long one send may take before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where batches go.
#[async_trait]
pub trait SampleSink: Send + Sync + 'static {
    /// Ok once the receiver accepted the batch (2xx); [`NodeStatsError::Rejected`] when it
    /// refused this batch for good (400, 413, 422: dropped, counted); any other error keeps
    /// the batch queued.
    async fn send(&self, batch: &SampleBatch) -> Result<(), NodeStatsError>;
}

/// The API server, through the agent's client (node credentials, cluster CA).
#[derive(Clone)]
pub struct ApiSink {
    client: kube::Client,
}

impl std::fmt::Debug for ApiSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSink").finish()
    }
}

impl ApiSink {
    pub fn new(client: kube::Client) -> ApiSink {
        ApiSink { client }
    }
}

#[async_trait]
impl SampleSink for ApiSink {
    async fn send(&self, batch: &SampleBatch) -> Result<(), NodeStatsError> {
        let request = http::Request::post(SAMPLES_PATH)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(batch.to_json())
            .map_err(|e| NodeStatsError::Ship(e.to_string()))?;
        let response = self
            .client
            .send(request.map(kube::client::Body::from))
            .await
            .map_err(|e| NodeStatsError::Ship(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_default();
        let message = format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
        );
        // the batch itself is refused: sending it again cannot help
        if matches!(status.as_u16(), 400 | 413 | 422) {
            Err(NodeStatsError::Rejected(message))
        } else {
            Err(NodeStatsError::Ship(message))
        }
    }
}

/// Sends queued batches oldest first until the queue is empty or a send fails. The queue is
/// not locked while a batch is on its way (the sampler keeps pushing).
pub(crate) async fn drain(
    queue: &Mutex<BatchQueue>,
    sink: &dyn SampleSink,
    sampler: &Sampler,
) -> Result<(), NodeStatsError> {
    let metrics = &sampler.shipping;
    let lock = || queue.lock().unwrap_or_else(|e| e.into_inner());
    let result = loop {
        let Some((seq, batch)) = lock().front().map(|(seq, b)| (seq, b.clone())) else {
            break Ok(());
        };
        let sent = match tokio::time::timeout(SEND_TIMEOUT, sink.send(&batch)).await {
            Ok(r) => r,
            Err(_) => Err(NodeStatsError::Ship(format!(
                "no answer within {}s",
                SEND_TIMEOUT.as_secs()
            ))),
        };
        match sent {
            Ok(()) => {
                metrics.batches_sent.inc();
                metrics.points_sent.inc_by(batch.points() as u64);
                lock().ack(seq);
            }
            Err(NodeStatsError::Rejected(reason)) => {
                metrics.batches_rejected.inc();
                tracing::warn!(reason, "the server refused a sample batch; it is dropped");
                lock().ack(seq);
            }
            Err(e) => {
                metrics.batches_failed.inc();
                break Err(e);
            }
        }
    };
    metrics.queue_batches.set(lock().len() as i64);
    result
}

/// The point of the `interval_ms` grid nearest to `time_ms`.
pub fn on_grid(time_ms: i64, interval_ms: i64) -> i64 {
    (time_ms + interval_ms / 2).div_euclid(interval_ms) * interval_ms
}

/// Samples every interval into the queue and, alongside, ships the queue until `shutdown`.
/// Sampling never waits for the server: a slow or absent server delays no round.
pub async fn run(sampler: Arc<Sampler>, sink: Arc<dyn SampleSink>, shutdown: CancellationToken) {
    let config = sampler.config().clone();
    let queue = Mutex::new(BatchQueue::new(config.queue_capacity));
    let queued = Notify::new();
    let sampling = async {
        let interval_ms = i64::try_from(config.interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        // rounds start on the interval's grid (…:00, :10, :20 for 10 s) and are stamped with
        // the grid time, so consecutive timestamps differ by exactly the interval and the
        // metrics store keeps one bit per timestamp instead of the scheduling jitter
        let now_ms = chrono::Utc::now().timestamp_millis();
        let first = tokio::time::Instant::now()
            + Duration::from_millis(
                u64::try_from(interval_ms - now_ms.rem_euclid(interval_ms)).unwrap_or(0),
            );
        let mut ticker = tokio::time::interval_at(first, config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now_ms = on_grid(chrono::Utc::now().timestamp_millis(), interval_ms);
            match sampler.sample(now_ms).await {
                Ok(batch) => {
                    let (dropped, len) = {
                        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                        (q.push(batch), q.len())
                    };
                    sampler.shipping.queue_batches.set(len as i64);
                    if dropped > 0 {
                        sampler.shipping.batches_dropped.inc_by(dropped as u64);
                        tracing::warn!(
                            dropped,
                            capacity = config.queue_capacity,
                            "the server has been unreachable too long: dropped the oldest sample batches"
                        );
                    }
                    queued.notify_one();
                }
                Err(e) => tracing::warn!(error = %e, "sampling the node failed"),
            }
        }
    };
    let shipping = async {
        let mut failing = false;
        loop {
            // after a failure the next round's arrival is the retry
            queued.notified().await;
            match drain(&queue, sink.as_ref(), &sampler).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("the server accepts samples again; the queue is empty");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "samples are queued until the server answers");
                }
                Err(e) => tracing::debug!(error = %e, "samples still queued"),
            }
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = sampling => {}
        _ = shipping => {}
    }
}

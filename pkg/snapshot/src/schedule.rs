//! Scheduled snapshots: a cron expression (five fields, minute first, in UTC; a sixth leading
//! seconds field is accepted) saying when the server saves a `scheduled` snapshot, and how many of them it keeps.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::source::Snapshotter;
use crate::{SnapshotError, SCHEDULED};

/// Every 12 hours, at minute 0 (k3s' default).
pub const DEFAULT_CRON: &str = "0 */12 * * *";
/// Scheduled snapshots kept.
pub const DEFAULT_KEEP: usize = 5;

/// When to save and how many to keep.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    cron: croner::Cron,
    pub keep: usize,
}

/// Parses a five-field cron expression (`minute hour day-of-month month day-of-week`; ranges,
/// lists, steps and names as in crontab).
pub fn parse_cron(expression: &str, keep: usize) -> Result<Schedule, SnapshotError> {
    let cron = croner::Cron::new(expression)
        .with_seconds_optional()
        .parse()
        .map_err(|e| SnapshotError::Schedule {
            expression: expression.to_string(),
            reason: e.to_string().to_lowercase(),
        })?;
    Ok(Schedule {
        expression: expression.to_string(),
        cron,
        keep,
    })
}

impl Schedule {
    /// The first time strictly after `after` the schedule fires.
    pub fn next_after(
        &self,
        after: chrono::DateTime<Utc>,
    ) -> Result<chrono::DateTime<Utc>, SnapshotError> {
        self.cron
            .find_next_occurrence(&after, false)
            .map_err(|e| SnapshotError::Schedule {
                expression: self.expression.clone(),
                reason: e.to_string().to_lowercase(),
            })
    }
}

/// Saves a `scheduled` snapshot at every time of `schedule` and prunes them to `keep`, until
/// `shutdown`. A failed snapshot is logged and the next time is tried.
pub async fn run_schedule(
    snapshotter: Arc<Snapshotter>,
    schedule: Schedule,
    shutdown: CancellationToken,
) {
    loop {
        let now = Utc::now();
        let next = match schedule.next_after(now) {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(%error, "scheduled snapshots stop: no next time");
                return;
            }
        };
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match snapshotter.save(SCHEDULED).await {
            Ok(entry) => tracing::info!(file = %entry.file, "scheduled snapshot saved"),
            Err(error) => {
                tracing::error!(%error, "scheduled snapshot failed");
                continue;
            }
        }
        let dir = snapshotter.dir().to_path_buf();
        let keep = schedule.keep;
        match tokio::task::spawn_blocking(move || crate::dir::prune(&dir, SCHEDULED, keep)).await {
            Ok(Ok(removed)) => {
                for entry in removed {
                    tracing::info!(file = %entry.file, "pruned a scheduled snapshot");
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "pruning scheduled snapshots failed"),
            Err(error) => tracing::warn!(%error, "pruning scheduled snapshots failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parse_cron_default_fires_at_midnight_and_noon() {
        let schedule = parse_cron(DEFAULT_CRON, DEFAULT_KEEP).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 5, 30, 0).unwrap();
        let next = schedule.next_after(at).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap());
        let after = schedule.next_after(next).unwrap();
        assert_eq!(after, Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    }

    #[test]
    fn parse_cron_every_minute_is_next_minute() {
        let schedule = parse_cron("* * * * *", 2).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 5, 30, 10).unwrap();
        assert_eq!(
            schedule.next_after(at).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 1, 5, 31, 0).unwrap()
        );
    }

    #[test]
    fn parse_cron_garbage_is_refused_naming_it() {
        let err = parse_cron("every day", 5).unwrap_err();
        assert!(err.to_string().contains("every day"), "{err}");
        assert!(parse_cron("61 * * * *", 5).is_err());
    }

    #[test]
    fn parse_cron_with_seconds_fires_within_the_minute() {
        let schedule = parse_cron("*/5 * * * * *", 2).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 5, 30, 11).unwrap();
        assert_eq!(
            schedule.next_after(at).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 1, 5, 30, 15).unwrap()
        );
    }
}

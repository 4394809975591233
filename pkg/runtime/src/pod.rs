//! Pod state predicates as upstream's controllers use them.

use k8s_openapi::api::core::v1::Pod;

/// Not finished and not being deleted (upstream `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded") | Some("Failed"))
        && pod.metadata.deletion_timestamp.is_none()
}

/// Succeeded or Failed.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ready for at least `min_ready_seconds` at `now` (upstream `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: chrono::DateTime<chrono::Utc>) -> bool {
    let Some(cond) = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
    else {
        return false;
    };
    if cond.status != "True" {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    cond.last_transition_time
        .as_ref()
        .is_some_and(|t| t.0.as_second() + min_ready_seconds as i64 <= now.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn pod(phase: &str, ready: bool) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_predicates_follow_phase_and_ready_condition() {
        assert!(is_active(&pod("Running", true)));
        assert!(!is_active(&pod("Succeeded", false)));
        assert!(is_terminal(&pod("Failed", false)));
        assert!(is_ready(&pod("Running", true)));
        assert!(!is_ready(&pod("Running", false)));
        assert!(is_available(&pod("Running", true), 0, chrono::Utc::now()));
    }
}

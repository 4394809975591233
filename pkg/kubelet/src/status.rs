//! Pod status as upstream computes it: container statuses from CRI, phase, and the
//! PodScheduled / Initialized / ContainersReady / Ready conditions with stable transition times.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mini_cri::proto;

/// Whole-second time (the API stores seconds; finer times would look like changes forever).
pub(crate) fn time_from_nanos(nanos: i64) -> Option<Time> {
    if nanos <= 0 {
        return None;
    }
    k8s_openapi::jiff::Timestamp::from_second(nanos / 1_000_000_000)
        .ok()
        .map(Time)
}

pub(crate) fn now() -> Time {
    let secs = k8s_openapi::jiff::Timestamp::now().as_second();
    Time(
        k8s_openapi::jiff::Timestamp::from_second(secs)
            .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
    )
}

/// A terminated state from a CRI container status.
pub(crate) fn terminated(s: &proto::ContainerStatus) -> ContainerStateTerminated {
    let reason = if !s.reason.is_empty() {
        s.reason.clone()
    } else if s.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: Some(reason),
        message: Some(s.message.clone()).filter(|m| !m.is_empty()),
        started_at: time_from_nanos(s.started_at),
        finished_at: time_from_nanos(s.finished_at),
        container_id: Some(format!("containerd://{}", s.id)),
        signal: None,
    }
}

/// The API state of a CRI container status (created-but-not-started is waiting).
pub(crate) fn state_of(s: &proto::ContainerStatus) -> ContainerState {
    match proto::ContainerState::try_from(s.state) {
        Ok(proto::ContainerState::ContainerRunning) => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time_from_nanos(s.started_at),
            }),
            ..Default::default()
        },
        Ok(proto::ContainerState::ContainerExited) => ContainerState {
            terminated: Some(terminated(s)),
            ..Default::default()
        },
        _ => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
    }
}

pub(crate) fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    }
}

fn is_running(cs: &ContainerStatus) -> bool {
    cs.state.as_ref().is_some_and(|s| s.running.is_some())
}

fn terminated_of(cs: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    cs.state.as_ref().and_then(|s| s.terminated.as_ref())
}

/// Upstream's `getPhase`.
pub(crate) fn phase(pod: &Pod, init: &[ContainerStatus], containers: &[ContainerStatus]) -> String {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    let init_count = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map_or(0, |v| v.len());
    let mut pending_init = 0;
    for cs in init {
        match terminated_of(cs) {
            Some(t) if t.exit_code == 0 => {}
            Some(_) if policy == "Never" => return "Failed".into(),
            _ => pending_init += 1,
        }
    }
    if init.len() < init_count {
        pending_init += 1;
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for cs in containers {
        if is_running(cs) {
            running += 1;
        } else if let Some(t) = terminated_of(cs) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some()
        {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    let total = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    waiting += total.saturating_sub(containers.len());
    if pending_init > 0 {
        return "Pending".into();
    }
    if waiting > 0 {
        return "Pending".into();
    }
    if running > 0 {
        return "Running".into();
    }
    if stopped > 0 {
        if policy == "Always" {
            return "Running".into();
        }
        if stopped == succeeded {
            return "Succeeded".into();
        }
        if policy == "Never" {
            return "Failed".into();
        }
        return "Running".into();
    }
    "Pending".into()
}

/// A condition that keeps its transition time while its status stays the same.
pub(crate) fn condition(
    old: Option<&PodStatus>,
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let previous = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_));
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone().or_else(|| Some(now())),
        _ => Some(now()),
    };
    PodCondition {
        type_: type_.to_string(),
        status,
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        last_transition_time,
        last_probe_time: None,
        observed_generation: None,
    }
}

/// Initialized / ContainersReady / Ready / PodScheduled for the computed statuses.
pub(crate) fn conditions(
    pod: &Pod,
    old: Option<&PodStatus>,
    phase: &str,
    init: &[ContainerStatus],
    containers: &[ContainerStatus],
) -> Vec<PodCondition> {
    let spec = pod.spec.clone().unwrap_or_default();
    let not_initialized: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| {
            !init
                .iter()
                .any(|s| s.name == c.name && terminated_of(s).is_some_and(|t| t.exit_code == 0))
        })
        .map(|c| c.name.clone())
        .collect();
    let initialized = not_initialized.is_empty() || phase == "Succeeded";
    let unready: Vec<String> = spec
        .containers
        .iter()
        .filter(|c| !containers.iter().any(|s| s.name == c.name && s.ready))
        .map(|c| c.name.clone())
        .collect();
    let completed = phase == "Succeeded" || phase == "Failed";
    let containers_ready = unready.is_empty() && !completed;
    let gates_ok = spec.readiness_gates.iter().flatten().all(|g| {
        old.and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == g.condition_type))
            .is_some_and(|c| c.status == "True")
    });
    let (reason, message) = if completed {
        (Some("PodCompleted".to_string()), None)
    } else {
        (
            Some("ContainersNotReady".to_string()),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let mut out = vec![
        condition(
            old,
            "Initialized",
            initialized,
            Some(
                if completed {
                    "PodCompleted"
                } else {
                    "ContainersNotInitialized"
                }
                .into(),
            ),
            Some(format!(
                "containers with incomplete status: [{}]",
                not_initialized.join(" ")
            )),
        ),
        condition(
            old,
            "Ready",
            containers_ready && gates_ok,
            reason.clone(),
            message.clone(),
        ),
        condition(old, "ContainersReady", containers_ready, reason, message),
        condition(old, "PodScheduled", true, None, None),
    ];
    // Keep conditions other components own (readiness gates, DisruptionTarget, ...).
    for c in old
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if !out.iter().any(|o| o.type_ == c.type_) {
            out.push(c.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str, init: usize) -> Pod {
        let inits: Vec<_> = (0..init)
            .map(|i| serde_json::json!({"name": format!("i{i}"), "image": "x"}))
            .collect();
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": {
            "restartPolicy": policy, "initContainers": inits,
            "containers": [{"name": "a", "image": "x"}]}}))
        .expect("pod")
    }

    fn cs(name: &str, state: ContainerState, last: Option<ContainerState>) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(state),
            last_state: last,
            ..Default::default()
        }
    }

    fn exited(code: i32) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn running() -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }
    }

    #[test]
    fn phase_follows_upstream_rules() {
        assert_eq!(
            phase(&pod("Always", 0), &[], &[cs("a", running(), None)]),
            "Running"
        );
        assert_eq!(phase(&pod("Always", 0), &[], &[]), "Pending");
        assert_eq!(
            phase(&pod("Never", 0), &[], &[cs("a", exited(0), None)]),
            "Succeeded"
        );
        assert_eq!(
            phase(&pod("Never", 0), &[], &[cs("a", exited(1), None)]),
            "Failed"
        );
        assert_eq!(
            phase(&pod("OnFailure", 0), &[], &[cs("a", exited(1), None)]),
            "Running"
        );
        assert_eq!(
            phase(&pod("Always", 0), &[], &[cs("a", exited(0), None)]),
            "Running"
        );
        let backoff = cs("a", waiting("CrashLoopBackOff", None), Some(exited(1)));
        assert_eq!(phase(&pod("Always", 0), &[], &[backoff]), "Running");
        assert_eq!(
            phase(&pod("Never", 1), &[cs("i0", exited(2), None)], &[]),
            "Failed"
        );
        assert_eq!(
            phase(&pod("Always", 1), &[cs("i0", running(), None)], &[]),
            "Pending"
        );
    }

    #[test]
    fn conditions_keep_transition_time_while_status_is_unchanged() {
        let p = pod("Always", 0);
        let mut ready = cs("a", running(), None);
        ready.ready = true;
        let first = conditions(&p, None, "Running", &[], &[ready.clone()]);
        let mut old = PodStatus {
            conditions: Some(first),
            ..Default::default()
        };
        let stamp = Time(k8s_openapi::jiff::Timestamp::from_second(1000).expect("ts"));
        for c in old.conditions.iter_mut().flatten() {
            c.last_transition_time = Some(stamp.clone());
        }
        let again = conditions(&p, Some(&old), "Running", &[], &[ready]);
        let r = again.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert_eq!(r.status, "True");
        assert_eq!(r.last_transition_time, Some(stamp.clone()));
        let unready = conditions(&p, Some(&old), "Running", &[], &[cs("a", running(), None)]);
        let r = unready.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some("ContainersNotReady"));
        assert_ne!(r.last_transition_time, Some(stamp));
    }
}

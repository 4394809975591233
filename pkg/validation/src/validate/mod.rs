//! Upstream-like validation of built-in kinds on create and update.

mod meta;
mod other;
mod pod;
mod update;
mod util;
mod workloads;

use serde_json::Value;

use crate::FieldError;

pub(crate) use util::Errs;

pub(crate) fn create(group: &str, version: &str, kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut e = Errs::default();
    meta::object_meta(group, kind, obj, &mut e);
    match (group, kind) {
        ("", "Pod") => pod::pod(obj, &mut e),
        ("", "PodTemplate") => pod::template(obj.get("template"), "template", &mut e),
        ("", "ReplicationController") => workloads::replication_controller(obj, &mut e),
        ("apps", "Deployment") => workloads::deployment(obj, &mut e),
        ("apps", "ReplicaSet") => workloads::replica_set(obj, &mut e),
        ("apps", "StatefulSet") => workloads::stateful_set(obj, &mut e),
        ("apps", "DaemonSet") => workloads::daemon_set(obj, &mut e),
        ("batch", "Job") => workloads::job(obj, &mut e),
        ("batch", "CronJob") => workloads::cron_job(obj, &mut e),
        ("autoscaling", "Scale") => workloads::scale(obj, &mut e),
        _ => other::validate(group, version, kind, obj, &mut e),
    }
    e.into_vec()
}

pub(crate) fn update(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
    old: &Value,
) -> Vec<FieldError> {
    let mut errs = create(group, version, kind, obj);
    let mut e = Errs::default();
    update::update(group, kind, obj, old, &mut e);
    errs.extend(e.into_vec());
    errs
}

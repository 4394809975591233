//! Workload controllers: ReplicationController, Deployment, ReplicaSet, StatefulSet,
//! DaemonSet, Job, CronJob and Scale.

use serde_json::Value;

use super::pod;
use super::util::{
    arr, at, int_or_percent, int_or_percent_value, join, label_selector, one_of, quote, repr,
    selector_matches, selector_repr, str_at, string_map, Errs,
};

fn template_labels(spec: &Value) -> Option<&serde_json::Map<String, Value>> {
    at(spec, &["template", "metadata", "labels"]).and_then(Value::as_object)
}

fn mismatch(spec: &Value, e: &mut Errs) {
    e.invalid(
        "spec.template.metadata.labels",
        &string_map(template_labels(spec)),
        "`selector` does not match template `labels`",
    );
}

/// Selector checks shared by the apps/v1 controllers; `what` names the kind in messages.
fn selector_and_template(spec: &Value, what: &str, require: bool, e: &mut Errs) {
    match spec.get("selector") {
        None => {
            if require {
                e.required("spec.selector", "");
            }
            // A nil selector selects nothing, so the template never matches.
            mismatch(spec, e);
        }
        Some(sel) => {
            label_selector(sel, "spec.selector", e);
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
            if empty {
                e.invalid(
                    "spec.selector",
                    &selector_repr(sel),
                    &format!("empty selector is invalid for {what}"),
                );
            } else if !selector_matches(sel, template_labels(spec)) {
                mismatch(spec, e);
            }
        }
    }
}

/// Template of a controller whose pods must restart Always and have no deadline.
fn always_template(spec: &Value, owner: &str, e: &mut Errs) {
    pod::template(spec.get("template"), "spec.template", e);
    if let Some(t) = spec.get("template") {
        if let Some(rp) = at(t, &["spec", "restartPolicy"]) {
            if rp.as_str() != Some("Always") {
                e.not_supported("spec.template.spec.restartPolicy", &repr(rp), &["Always"]);
            }
        }
        if at(t, &["spec", "activeDeadlineSeconds"]).is_some() {
            e.forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                &format!("activeDeadlineSeconds in {owner} is not Supported"),
            );
        }
    }
}

fn spec_of(obj: &Value, e: &mut Errs) -> Option<Value> {
    match obj.get("spec") {
        Some(s) => Some(s.clone()),
        None => {
            e.required("spec", "");
            None
        }
    }
}

pub(crate) fn replication_controller(obj: &Value, e: &mut Errs) {
    let Some(spec) = spec_of(obj, e) else { return };
    e.non_negative(Some(&spec), "replicas", "spec");
    e.non_negative(Some(&spec), "minReadySeconds", "spec");
    let selector = spec.get("selector").and_then(Value::as_object);
    match selector {
        Some(sel) if !sel.is_empty() => {
            super::util::labels(spec.get("selector"), "spec.selector", e);
            let matches = sel.iter().all(|(k, v)| {
                template_labels(&spec)
                    .and_then(|l| l.get(k))
                    .and_then(Value::as_str)
                    == v.as_str()
            });
            if spec.get("template").is_some() && !matches {
                mismatch(&spec, e);
            }
        }
        _ => e.required("spec.selector", ""),
    }
    always_template(&spec, "ReplicationController", e);
}

pub(crate) fn deployment(obj: &Value, e: &mut Errs) {
    let Some(spec) = spec_of(obj, e) else { return };
    e.non_negative(Some(&spec), "replicas", "spec");
    selector_and_template(&spec, "deployment", true, e);
    always_template(&spec, "ReplicaSet", e);
    if let Some(strategy) = spec.get("strategy") {
        match str_at(strategy, "type") {
            "Recreate" => {
                if strategy.get("rollingUpdate").is_some() {
                    e.forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    );
                }
            }
            "RollingUpdate" => {
                if let Some(ru) = strategy.get("rollingUpdate") {
                    rolling_update(ru, e);
                }
            }
            _ => e.not_supported(
                "spec.strategy.type",
                &repr(
                    strategy
                        .get("type")
                        .unwrap_or(&Value::String(String::new())),
                ),
                &["Recreate", "RollingUpdate"],
            ),
        }
    }
    e.non_negative(Some(&spec), "minReadySeconds", "spec");
    e.non_negative(Some(&spec), "revisionHistoryLimit", "spec");
    if let Some(pd) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
        if pd < 0 {
            e.invalid(
                "spec.progressDeadlineSeconds",
                &pd.to_string(),
                "must be greater than or equal to 0",
            );
        } else if pd
            <= spec
                .get("minReadySeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        {
            e.invalid(
                "spec.progressDeadlineSeconds",
                &pd.to_string(),
                "must be greater than minReadySeconds",
            );
        }
    }
}

fn rolling_update(ru: &Value, e: &mut Errs) {
    let base = "spec.strategy.rollingUpdate";
    int_or_percent(ru.get("maxUnavailable"), &join(base, "maxUnavailable"), e);
    int_or_percent(ru.get("maxSurge"), &join(base, "maxSurge"), e);
    let unavailable = int_or_percent_value(ru.get("maxUnavailable"));
    let surge = int_or_percent_value(ru.get("maxSurge"));
    if unavailable.is_some_and(|(n, _)| n == 0) && surge.is_none_or(|(n, _)| n == 0) {
        e.invalid(
            &join(base, "maxUnavailable"),
            &repr(ru.get("maxUnavailable").unwrap_or(&Value::Null)),
            "may not be 0 when `maxSurge` is 0",
        );
    }
    if let Some((n, true)) = unavailable {
        if n > 100 {
            e.invalid(
                &join(base, "maxUnavailable"),
                &repr(ru.get("maxUnavailable").unwrap_or(&Value::Null)),
                "must not be greater than 100%",
            );
        }
    }
}

pub(crate) fn replica_set(obj: &Value, e: &mut Errs) {
    let Some(spec) = spec_of(obj, e) else { return };
    e.non_negative(Some(&spec), "replicas", "spec");
    e.non_negative(Some(&spec), "minReadySeconds", "spec");
    selector_and_template(&spec, "deployment", true, e);
    always_template(&spec, "ReplicaSet", e);
}

pub(crate) fn stateful_set(obj: &Value, e: &mut Errs) {
    let Some(spec) = spec_of(obj, e) else { return };
    if let Some(p) = spec.get("podManagementPolicy") {
        if !matches!(p.as_str(), Some("OrderedReady" | "Parallel")) {
            e.invalid(
                "spec.podManagementPolicy",
                &repr(p),
                "must be 'OrderedReady' or 'Parallel'",
            );
        }
    }
    if let Some(us) = spec.get("updateStrategy") {
        match str_at(us, "type") {
            "OnDelete" => {
                if us.get("rollingUpdate").is_some() {
                    e.invalid(
                        "spec.updateStrategy.rollingUpdate",
                        &repr(&us["rollingUpdate"]),
                        "only allowed for updateStrategy 'RollingUpdate'",
                    );
                }
            }
            "RollingUpdate" => {
                e.non_negative(
                    us.get("rollingUpdate"),
                    "partition",
                    "spec.updateStrategy.rollingUpdate",
                );
            }
            "" => e.required("spec.updateStrategy", ""),
            other => e.invalid(
                "spec.updateStrategy",
                &quote(other),
                "must be 'RollingUpdate' or 'OnDelete'",
            ),
        }
    }
    if let Some(p) = spec.get("persistentVolumeClaimRetentionPolicy") {
        for key in ["whenDeleted", "whenScaled"] {
            one_of(
                p.get(key),
                &format!("spec.persistentVolumeClaimRetentionPolicy.{key}"),
                &["Retain", "Delete"],
                e,
            );
        }
    }
    e.non_negative(Some(&spec), "replicas", "spec");
    e.non_negative(Some(&spec), "minReadySeconds", "spec");
    selector_and_template(&spec, "statefulset", true, e);
    always_template(&with_claim_volumes(spec), "StatefulSet", e);
}

/// The spec with a volume per volumeClaimTemplate added to the pod template, as the pods get
/// them: containers may mount claim templates by name.
fn with_claim_volumes(mut spec: Value) -> Value {
    let names: Vec<Value> = arr(Some(&spec), "volumeClaimTemplates")
        .iter()
        .map(|t| str_at(t.get("metadata").unwrap_or(&Value::Null), "name").to_string())
        .filter(|n| !n.is_empty())
        .map(|n| serde_json::json!({"name": n, "persistentVolumeClaim": {"claimName": n}}))
        .collect();
    if names.is_empty() {
        return spec;
    }
    if let Some(pod) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        let volumes = pod
            .entry("volumes")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(v) = volumes.as_array_mut() {
            // a template volume of the same name is replaced by the claim in the pods
            for n in names {
                if !v.iter().any(|x| x.get("name") == n.get("name")) {
                    v.push(n);
                }
            }
        }
    }
    spec
}

pub(crate) fn daemon_set(obj: &Value, e: &mut Errs) {
    let Some(spec) = spec_of(obj, e) else { return };
    selector_and_template(&spec, "daemonset", false, e);
    pod::template(spec.get("template"), "spec.template", e);
    if let Some(rp) = at(&spec, &["template", "spec", "restartPolicy"]) {
        if rp.as_str() != Some("Always") {
            e.not_supported("spec.template.spec.restartPolicy", &repr(rp), &["Always"]);
        }
    }
    if let Some(ads) = at(&spec, &["template", "spec", "activeDeadlineSeconds"]) {
        e.invalid(
            "spec.template.spec.activeDeadlineSeconds",
            &repr(ads),
            "activeDeadlineSeconds in DaemonSet is not Supported",
        );
    }
    e.non_negative(Some(&spec), "minReadySeconds", "spec");
    e.non_negative(Some(&spec), "revisionHistoryLimit", "spec");
    if let Some(us) = spec.get("updateStrategy") {
        match str_at(us, "type") {
            "OnDelete" => {}
            "RollingUpdate" => {
                if let Some(ru) = us.get("rollingUpdate") {
                    let base = "spec.updateStrategy.rollingUpdate";
                    int_or_percent(ru.get("maxUnavailable"), &join(base, "maxUnavailable"), e);
                    int_or_percent(ru.get("maxSurge"), &join(base, "maxSurge"), e);
                    let unavailable = int_or_percent_value(ru.get("maxUnavailable"));
                    let surge = int_or_percent_value(ru.get("maxSurge"));
                    if unavailable.is_some_and(|(n, _)| n == 0) && surge.is_none_or(|(n, _)| n == 0)
                    {
                        e.invalid(
                            &join(base, "maxUnavailable"),
                            &repr(&ru["maxUnavailable"]),
                            "may not be 0 when `maxSurge` is 0",
                        );
                    }
                }
            }
            _ => e.not_supported(
                "spec.updateStrategy.type",
                &repr(us.get("type").unwrap_or(&Value::String(String::new()))),
                &["OnDelete", "RollingUpdate"],
            ),
        }
    }
}

/// JobSpec checks at `base` (`spec` for Jobs, `spec.jobTemplate.spec` for CronJobs).
fn job_spec(spec: &Value, base: &str, e: &mut Errs) {
    for key in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        e.non_negative(Some(spec), key, base);
    }
    if let Some(v) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        if v <= 0 {
            e.invalid(
                &join(base, "activeDeadlineSeconds"),
                &v.to_string(),
                "must be greater than 0",
            );
        }
    }
    one_of(
        spec.get("completionMode"),
        &join(base, "completionMode"),
        &["NonIndexed", "Indexed"],
        e,
    );
    if str_at(spec, "completionMode") == "Indexed" && spec.get("completions").is_none() {
        e.required(
            &join(base, "completions"),
            "when completion mode is Indexed",
        );
    }
    let manual = spec
        .get("manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match spec.get("selector") {
        Some(sel) => {
            label_selector(sel, &join(base, "selector"), e);
            let labels = at(spec, &["template", "metadata", "labels"]).and_then(Value::as_object);
            if !selector_matches(sel, labels) {
                e.invalid(
                    &join(base, "template.metadata.labels"),
                    &string_map(labels),
                    "`selector` does not match template `labels`",
                );
            }
        }
        None if manual => e.required(&join(base, "selector"), ""),
        None => {}
    }
    let tpath = join(base, "template");
    pod::template(spec.get("template"), &tpath, e);
    if let Some(t) = spec.get("template") {
        let rp = at(t, &["spec", "restartPolicy"]);
        if !rp
            .and_then(Value::as_str)
            .is_some_and(|p| p == "OnFailure" || p == "Never")
        {
            e.not_supported(
                &join(&tpath, "spec.restartPolicy"),
                &repr(rp.unwrap_or(&Value::String(String::new()))),
                &["OnFailure", "Never"],
            );
        }
    }
}

pub(crate) fn job(obj: &Value, e: &mut Errs) {
    let Some(spec) = spec_of(obj, e) else { return };
    job_spec(&spec, "spec", e);
}

pub(crate) fn cron_job(obj: &Value, e: &mut Errs) {
    let Some(spec) = spec_of(obj, e) else { return };
    let schedule = str_at(&spec, "schedule");
    if schedule.is_empty() {
        e.required("spec.schedule", "");
    } else if !schedule.starts_with('@') {
        let fields = schedule
            .split_whitespace()
            .filter(|f| !f.starts_with("TZ=") && !f.starts_with("CRON_TZ="))
            .count();
        if fields != 5 {
            e.invalid(
                "spec.schedule",
                &quote(schedule),
                &format!("Expected exactly 5 fields, found {fields}: {schedule}"),
            );
        }
    }
    one_of(
        spec.get("concurrencyPolicy"),
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
        e,
    );
    for key in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        e.non_negative(Some(&spec), key, "spec");
    }
    match at(&spec, &["jobTemplate", "spec"]) {
        Some(js) => job_spec(js, "spec.jobTemplate.spec", e),
        None => e.required("spec.jobTemplate.spec.template.spec.containers", ""),
    }
}

pub(crate) fn scale(obj: &Value, e: &mut Errs) {
    e.non_negative(obj.get("spec"), "replicas", "spec");
}

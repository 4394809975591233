//! Workload kinds: apps, batch, autoscaling and policy groups.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::util::{
    age, arr_at, condition_true, container_cells, deleting, format_label_selector, format_labels,
    get, int_at, int_or_string, name, opt_bool, opt_int, parse_time, quantity, selector_string,
    since, since_time, str_at,
};
use crate::{col, wide, Col, Printer, AGE, CONTAINERS, IMAGES, NAME};

pub(crate) fn lookup(group: &str, kind: &str) -> Option<Printer> {
    let p = |cols: &'static [Col], cells: crate::CellFn| Some(Printer { cols, cells });
    match (group, kind) {
        ("apps", "Deployment") => p(DEPLOYMENT, deployment_cells),
        ("apps", "ReplicaSet") => p(REPLICA_SET, replica_set_cells),
        ("apps", "StatefulSet") => p(STATEFUL_SET, stateful_set_cells),
        ("apps", "DaemonSet") => p(DAEMON_SET, daemon_set_cells),
        ("apps", "ControllerRevision") => p(CONTROLLER_REVISION, controller_revision_cells),
        ("batch", "Job") => p(JOB, job_cells),
        ("batch", "CronJob") => p(CRON_JOB, cron_job_cells),
        ("autoscaling", "HorizontalPodAutoscaler") => p(HPA, hpa_cells),
        ("autoscaling", "Scale") => p(SCALE, scale_cells),
        ("policy", "PodDisruptionBudget") => p(PDB, pdb_cells),
        _ => None,
    }
}

const SELECTOR: Col = wide(
    "Selector",
    "string",
    "Label query over the pods this object manages.",
);

const DEPLOYMENT: &[Col] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "string",
        "Number of pods running the latest template.",
    ),
    col("Available", "string", "Number of pods available to serve."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn template_containers(obj: &Value) -> (Value, Value) {
    container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]))
}

fn deployment_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let desired = opt_int(obj, &["spec", "replicas"]).unwrap_or(1);
    let ready = int_at(obj, &["status", "readyReplicas"]);
    let (names, images) = template_containers(obj);
    // Upstream prints the selector directly here (empty, not <none>).
    let selector = selector_string(get(obj, &["spec", "selector"]))
        .unwrap_or_else(|()| "<invalid>".to_string());
    vec![
        name(obj),
        Value::from(format!("{ready}/{desired}")),
        Value::from(int_at(obj, &["status", "updatedReplicas"])),
        Value::from(int_at(obj, &["status", "availableReplicas"])),
        age(obj, now),
        names,
        images,
        Value::from(selector),
    ]
}

const REPLICA_SET: &[Col] = &[
    NAME,
    col("Desired", "integer", "Number of desired pods."),
    col("Current", "integer", "Number of pods observed."),
    col("Ready", "integer", "Number of ready pods."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn replica_set_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(obj);
    vec![
        name(obj),
        Value::from(opt_int(obj, &["spec", "replicas"]).unwrap_or(1)),
        Value::from(int_at(obj, &["status", "replicas"])),
        Value::from(int_at(obj, &["status", "readyReplicas"])),
        age(obj, now),
        names,
        images,
        Value::from(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

const STATEFUL_SET: &[Col] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

fn stateful_set_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let desired = opt_int(obj, &["spec", "replicas"]).unwrap_or(1);
    let ready = int_at(obj, &["status", "readyReplicas"]);
    let (names, images) = template_containers(obj);
    vec![
        name(obj),
        Value::from(format!("{ready}/{desired}")),
        age(obj, now),
        names,
        images,
    ]
}

const DAEMON_SET: &[Col] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Number of nodes that should run the daemon pod.",
    ),
    col(
        "Current",
        "integer",
        "Number of nodes running at least one daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        "Number of nodes with a ready daemon pod.",
    ),
    col(
        "Up-to-date",
        "integer",
        "Number of nodes running the updated daemon pod.",
    ),
    col(
        "Available",
        "integer",
        "Number of nodes with an available daemon pod.",
    ),
    col(
        "Node Selector",
        "string",
        "Nodes the daemon pods must be scheduled onto.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn daemon_set_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let status = |f: &str| Value::from(int_at(obj, &["status", f]));
    let (names, images) = template_containers(obj);
    vec![
        name(obj),
        status("desiredNumberScheduled"),
        status("currentNumberScheduled"),
        status("numberReady"),
        status("updatedNumberScheduled"),
        status("numberAvailable"),
        Value::from(format_labels(get(
            obj,
            &["spec", "template", "spec", "nodeSelector"],
        ))),
        age(obj, now),
        names,
        images,
        Value::from(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

const CONTROLLER_REVISION: &[Col] = &[
    NAME,
    col("Controller", "string", "Controller of the object"),
    col("Revision", "string", "Revision number of this state."),
    AGE,
];

fn controller_revision_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let controller = arr_at(obj, &["metadata", "ownerReferences"])
        .iter()
        .find(|r| opt_bool(r, &["controller"]) == Some(true))
        .map_or_else(
            || "<none>".to_string(),
            |r| {
                let api_version = str_at(r, &["apiVersion"]);
                let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                let kind = str_at(r, &["kind"]);
                let ref_name = str_at(r, &["name"]);
                match (kind, group) {
                    ("", "") => ref_name.to_string(),
                    (k, "") => format!("{}/{ref_name}", k.to_lowercase()),
                    (k, g) => format!("{}.{}/{ref_name}", k.to_lowercase(), g.to_lowercase()),
                }
            },
        );
    vec![
        name(obj),
        Value::from(controller),
        Value::from(int_at(obj, &["revision"])),
        age(obj, now),
    ]
}

const JOB: &[Col] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn job_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let succeeded = int_at(obj, &["status", "succeeded"]);
    let completions = match opt_int(obj, &["spec", "completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = int_at(obj, &["spec", "parallelism"]);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let start = parse_time(str_at(obj, &["status", "startTime"]));
    let end = parse_time(str_at(obj, &["status", "completionTime"]));
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => since_time(s, now),
        (Some(s), Some(e)) => since_time(s, e),
    };
    let conditions = arr_at(obj, &["status", "conditions"]);
    let has = |t: &str| condition_true(conditions, t);
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if deleting(obj) {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = template_containers(obj);
    vec![
        name(obj),
        Value::from(status),
        Value::from(completions),
        Value::from(duration),
        age(obj, now),
        names,
        images,
        Value::from(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

const CRON_JOB: &[Col] = &[
    NAME,
    col("Schedule", "string", "The schedule in Cron format."),
    col(
        "Timezone",
        "string",
        "The time zone the schedule is evaluated in.",
    ),
    col(
        "Suspend",
        "boolean",
        "Whether subsequent executions are suspended.",
    ),
    col("Active", "integer", "Number of currently running jobs."),
    col(
        "Last Schedule",
        "string",
        "Time since the job was last scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cron_job_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let last = match get(obj, &["status", "lastScheduleTime"]).and_then(Value::as_str) {
        Some(t) => since(t, now),
        None => "<none>".to_string(),
    };
    let suspend = match opt_bool(obj, &["spec", "suspend"]) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let job_spec = get(obj, &["spec", "jobTemplate", "spec"]).unwrap_or(&Value::Null);
    let (names, images) = container_cells(arr_at(job_spec, &["template", "spec", "containers"]));
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "schedule"])),
        Value::from(
            get(obj, &["spec", "timeZone"])
                .and_then(Value::as_str)
                .unwrap_or("<none>"),
        ),
        Value::from(suspend),
        Value::from(arr_at(obj, &["status", "active"]).len()),
        Value::from(last),
        age(obj, now),
        names,
        images,
        Value::from(format_label_selector(get(job_spec, &["selector"]))),
    ]
}

const HPA: &[Col] = &[
    NAME,
    col("Reference", "string", "The target resource being scaled."),
    col("Targets", "string", "Current and target metric values."),
    col(
        "MinPods",
        "string",
        "Lower limit for the number of replicas.",
    ),
    col(
        "MaxPods",
        "string",
        "Upper limit for the number of replicas.",
    ),
    col("Replicas", "string", "Current number of replicas."),
    AGE,
];

/// `current/target` for one metric, following upstream's formatHPAMetrics.
fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let unknown = || "<unknown>".to_string();
    let field = |src: &str| status.and_then(|s| get(s, &[src]));
    match str_at(spec, &["type"]) {
        kind @ ("External" | "Object") => {
            let src = if kind == "External" {
                "external"
            } else {
                "object"
            };
            let target = get(spec, &[src, "target"]).unwrap_or(&Value::Null);
            if let Some(avg) = get(target, &["averageValue"]) {
                let current = field(src)
                    .and_then(|s| get(s, &["current", "averageValue"]))
                    .map_or_else(unknown, |v| quantity(Some(v)));
                format!("{current}/{} (avg)", quantity(Some(avg)))
            } else {
                let current =
                    field(src).map_or_else(unknown, |s| quantity(get(s, &["current", "value"])));
                format!("{current}/{}", quantity(get(target, &["value"])))
            }
        }
        "Pods" => {
            let current = field("pods")
                .map_or_else(unknown, |s| quantity(get(s, &["current", "averageValue"])));
            format!(
                "{current}/{}",
                quantity(get(spec, &["pods", "target", "averageValue"]))
            )
        }
        kind @ ("Resource" | "ContainerResource") => {
            let src = if kind == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let res = get(spec, &[src]).unwrap_or(&Value::Null);
            let res_name = str_at(res, &["name"]);
            if let Some(avg) = get(res, &["target", "averageValue"]) {
                let current = field(src)
                    .map_or_else(unknown, |s| quantity(get(s, &["current", "averageValue"])));
                format!("{res_name}: {current}/{}", quantity(Some(avg)))
            } else {
                let current = field(src)
                    .and_then(|s| opt_int(s, &["current", "averageUtilization"]))
                    .map_or_else(unknown, |u| format!("{u}%"));
                let target = opt_int(res, &["target", "averageUtilization"])
                    .map_or_else(|| "<auto>".to_string(), |u| format!("{u}%"));
                format!("{res_name}: {current}/{target}")
            }
        }
        _ => "<unknown type>".to_string(),
    }
}

fn hpa_targets(obj: &Value) -> String {
    let specs = arr_at(obj, &["spec", "metrics"]);
    if specs.is_empty() {
        // autoscaling/v1 form.
        if let Some(target) = opt_int(obj, &["spec", "targetCPUUtilizationPercentage"]) {
            let current = opt_int(obj, &["status", "currentCPUUtilizationPercentage"])
                .map_or_else(|| "<unknown>".to_string(), |u| format!("{u}%"));
            return format!("cpu: {current}/{target}%");
        }
        return "<none>".to_string();
    }
    let statuses = arr_at(obj, &["status", "currentMetrics"]);
    const MAX: usize = 2;
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| hpa_metric(spec, statuses.get(i)))
        .collect();
    let shown = list
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > MAX {
        format!("{shown} + {} more...", list.len() - MAX)
    } else {
        shown
    }
}

fn hpa_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        str_at(obj, &["spec", "scaleTargetRef", "kind"]),
        str_at(obj, &["spec", "scaleTargetRef", "name"])
    );
    let min_pods = opt_int(obj, &["spec", "minReplicas"])
        .map_or_else(|| "<unset>".to_string(), |m| m.to_string());
    vec![
        name(obj),
        Value::from(reference),
        Value::from(hpa_targets(obj)),
        Value::from(min_pods),
        Value::from(int_at(obj, &["spec", "maxReplicas"])),
        Value::from(int_at(obj, &["status", "currentReplicas"])),
        age(obj, now),
    ]
}

const SCALE: &[Col] = &[
    NAME,
    col("Desired", "integer", "Desired number of replicas."),
    col("Available", "integer", "Actual number of replicas."),
    AGE,
];

fn scale_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(int_at(obj, &["spec", "replicas"])),
        Value::from(int_at(obj, &["status", "replicas"])),
        age(obj, now),
    ]
}

const PDB: &[Col] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

fn pdb_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let field = |f: &str| get(obj, &["spec", f]).map_or_else(|| "N/A".to_string(), int_or_string);
    vec![
        name(obj),
        Value::from(field("minAvailable")),
        Value::from(field("maxUnavailable")),
        Value::from(int_at(obj, &["status", "disruptionsAllowed"])),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        parse_time("2024-05-01T12:00:00Z").unwrap()
    }

    fn meta(name: &str) -> Value {
        json!({"name": name, "namespace": "default", "creationTimestamp": "2024-04-30T12:00:00Z"})
    }

    #[test]
    fn deployment_partially_ready() {
        let d = json!({
            "metadata": meta("web"),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [
                        {"name": "nginx", "image": "nginx:1.27"}, {"name": "sidecar", "image": "envoy"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            crate::cells("apps", "Deployment", &d, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("24h"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,envoy"),
                json!("app=web"),
            ]
        );
    }

    #[test]
    fn deployment_new_without_status() {
        let d = json!({"metadata": meta("api"), "spec": {"replicas": 0}});
        let row = crate::cells("apps", "Deployment", &d, now());
        assert_eq!(row[1], json!("0/0"));
        assert_eq!(row[2], json!(0));
        assert_eq!(row[7], json!(""));
    }

    #[test]
    fn replica_set_stateful_set_daemon_set() {
        let rs = json!({"metadata": meta("web-abc"),
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}}},
            "status": {"replicas": 2, "readyReplicas": 2}});
        let row = crate::cells("apps", "ReplicaSet", &rs, now());
        assert_eq!(row[..4], [json!("web-abc"), json!(2), json!(2), json!(2)]);
        assert_eq!(row[7], json!("app=web,pod-template-hash=abc"));

        let sts = json!({"metadata": meta("db"), "spec": {"replicas": 3,
            "template": {"spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}}},
            "status": {"readyReplicas": 1}});
        assert_eq!(
            crate::cells("apps", "StatefulSet", &sts, now()),
            vec![
                json!("db"),
                json!("1/3"),
                json!("24h"),
                json!("pg"),
                json!("postgres:16")
            ]
        );

        let ds = json!({"metadata": meta("svclb"), "spec": {
                "selector": {"matchLabels": {"app": "svclb"}},
                "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "lb", "image": "klipper"}]}}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                       "updatedNumberScheduled": 2, "numberAvailable": 1}});
        assert_eq!(
            crate::cells("apps", "DaemonSet", &ds, now()),
            vec![
                json!("svclb"),
                json!(2),
                json!(2),
                json!(1),
                json!(2),
                json!(1),
                json!("kubernetes.io/os=linux"),
                json!("24h"),
                json!("lb"),
                json!("klipper"),
                json!("app=svclb"),
            ]
        );
    }

    #[test]
    fn controller_revision_names_its_controller() {
        let cr = json!({"metadata": {"name": "db-7f9", "creationTimestamp": "2024-04-30T12:00:00Z",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": true}]},
            "revision": 2});
        assert_eq!(
            crate::cells("apps", "ControllerRevision", &cr, now()),
            vec![
                json!("db-7f9"),
                json!("statefulset.apps/db"),
                json!(2),
                json!("24h")
            ]
        );
    }

    #[test]
    fn job_complete_running_failed_suspended() {
        let complete = json!({"metadata": meta("pi"),
            "spec": {"completions": 1, "parallelism": 1, "selector": {"matchLabels": {"job-name": "pi"}}},
            "status": {"succeeded": 1, "startTime": "2024-05-01T11:00:00Z",
                       "completionTime": "2024-05-01T11:00:42Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}});
        let row = crate::cells("batch", "Job", &complete, now());
        assert_eq!(
            row[..4],
            [json!("pi"), json!("Complete"), json!("1/1"), json!("42s")]
        );
        assert_eq!(row[7], json!("job-name=pi"));

        let running = json!({"metadata": meta("w"), "spec": {"parallelism": 3},
            "status": {"startTime": "2024-05-01T11:57:00Z", "active": 3}});
        let row = crate::cells("batch", "Job", &running, now());
        assert_eq!(
            row[1..4],
            [json!("Running"), json!("0/1 of 3"), json!("3m")]
        );

        let failed = json!({"metadata": meta("f"), "spec": {"completions": 2},
            "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        let row = crate::cells("batch", "Job", &failed, now());
        assert_eq!(row[1..4], [json!("Failed"), json!("0/2"), json!("")]);

        let suspended = json!({"metadata": meta("s"), "spec": {"completions": 1, "suspend": true},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(
            crate::cells("batch", "Job", &suspended, now())[1],
            json!("Suspended")
        );
    }

    #[test]
    fn cron_job_row() {
        let cj = json!({"metadata": meta("backup"),
            "spec": {"schedule": "*/5 * * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": "2024-05-01T11:55:00Z"}});
        assert_eq!(
            crate::cells("batch", "CronJob", &cj, now()),
            vec![
                json!("backup"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("5m"),
                json!("24h"),
                json!("b"),
                json!("busybox"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn hpa_targets_known_and_unknown() {
        let hpa = json!({"metadata": meta("web"),
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource",
                "resource": {"name": "cpu", "current": {"averageUtilization": 20, "averageValue": "100m"}}}]}});
        assert_eq!(
            crate::cells("autoscaling", "HorizontalPodAutoscaler", &hpa, now()),
            vec![
                json!("web"),
                json!("Deployment/web"),
                json!("cpu: 20%/50%"),
                json!("1"),
                json!(5),
                json!(2),
                json!("24h"),
            ]
        );
        let mut fresh = hpa.clone();
        fresh["status"] = json!({});
        let row = crate::cells("autoscaling", "HorizontalPodAutoscaler", &fresh, now());
        assert_eq!(row[2], json!("cpu: <unknown>/50%"));
        let mut many = hpa;
        many["spec"]["metrics"] = json!([
            {"type": "Resource", "resource": {"name": "cpu", "target": {"averageUtilization": 50}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"averageValue": "100Mi"}}},
            {"type": "Pods", "pods": {"target": {"averageValue": "1k"}}}
        ]);
        many["spec"].as_object_mut().unwrap().remove("minReplicas");
        let row = crate::cells("autoscaling", "HorizontalPodAutoscaler", &many, now());
        assert_eq!(
            row[2],
            json!("cpu: 20%/50%, memory: <unknown>/100Mi + 1 more...")
        );
        assert_eq!(row[3], json!("<unset>"));
        let v1 = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"},
            "targetCPUUtilizationPercentage": 80}});
        assert_eq!(
            crate::cells("autoscaling", "HorizontalPodAutoscaler", &v1, now())[2],
            json!("cpu: <unknown>/80%")
        );
    }

    #[test]
    fn pdb_min_available_percent_and_na() {
        let pdb = json!({"metadata": meta("web"), "spec": {"minAvailable": "50%"},
            "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            crate::cells("policy", "PodDisruptionBudget", &pdb, now()),
            vec![
                json!("web"),
                json!("50%"),
                json!("N/A"),
                json!(1),
                json!("24h")
            ]
        );
        let max = json!({"spec": {"maxUnavailable": 1}});
        assert_eq!(
            crate::cells("policy", "PodDisruptionBudget", &max, now())[1..3],
            [json!("N/A"), json!("1")]
        );
    }
}

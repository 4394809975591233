//! Table columns and rows for `kubectl get`, per kind.
//!
//! Mirrors upstream's server-side printers (the API server always prints the
//! wide form; kubectl hides priority-1 columns unless `-o wide`).

use chrono::{DateTime, Utc};
use serde_json::Value;

mod apps;
mod core;
mod crd;
mod jsonpath;
mod other;
mod util;

/// A `meta.k8s.io/v1` TableColumnDefinition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
}

/// A static column definition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Col {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    desc: &'static str,
    priority: i32,
}

impl Col {
    fn to_column(self) -> Column {
        Column {
            name: self.name.to_string(),
            type_: self.ty.to_string(),
            format: self.format.to_string(),
            description: self.desc.to_string(),
            priority: self.priority,
        }
    }
}

/// A column shown by default.
pub(crate) const fn col(name: &'static str, ty: &'static str, desc: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        desc,
        priority: 0,
    }
}

/// A column shown only with `-o wide`.
pub(crate) const fn wide(name: &'static str, ty: &'static str, desc: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        desc,
        priority: 1,
    }
}

/// The `Name` column.
pub(crate) const NAME: Col = Col {
    name: "Name",
    ty: "string",
    format: "name",
    desc: "Name must be unique within a namespace. It is the object's identifier.",
    priority: 0,
};

/// The `Age` column.
pub(crate) const AGE: Col = col(
    "Age",
    "string",
    "Time since the object was created (metadata.creationTimestamp).",
);

/// The `Created At` column of upstream's default table convertor.
pub(crate) const CREATED_AT: Col = col(
    "Created At",
    "date",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

/// Wide `Containers` column.
pub(crate) const CONTAINERS: Col = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);

/// Wide `Images` column.
pub(crate) const IMAGES: Col = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

/// Cell builder for one kind.
pub(crate) type CellFn = fn(&Value, DateTime<Utc>) -> Vec<Value>;

/// Columns plus cell builder for one kind.
#[derive(Clone, Copy)]
pub(crate) struct Printer {
    pub(crate) cols: &'static [Col],
    pub(crate) cells: CellFn,
}

const DEFAULT_COLS: &[Col] = &[NAME, AGE];

fn default_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![util::name(obj), util::age(obj, now)]
}

/// Upstream's default table convertor (`Name`, `Created At`), used by kinds
/// without a dedicated printer (Role, ClusterRole, LimitRange, CRD).
pub(crate) const CREATED_AT_PRINTER: Printer = Printer {
    cols: &[NAME, CREATED_AT],
    cells: created_at_cells,
};

fn created_at_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let created = util::parse_time(util::str_at(obj, &["metadata", "creationTimestamp"]))
        .map_or_else(
            || "0001-01-01T00:00:00Z".to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
    vec![util::name(obj), Value::from(created)]
}

fn lookup(group: &str, kind: &str) -> Option<Printer> {
    let group = if group == "core" { "" } else { group };
    match group {
        "" => core::lookup(kind),
        "apps" | "batch" | "autoscaling" | "policy" => apps::lookup(group, kind),
        _ => other::lookup(group, kind),
    }
}

fn printer(group: &str, kind: &str) -> Printer {
    lookup(group, kind).unwrap_or(Printer {
        cols: DEFAULT_COLS,
        cells: default_cells,
    })
}

/// Upstream's columns for a built-in kind; `Name`, `Age` for others.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    printer(group, kind)
        .cols
        .iter()
        .map(|c| c.to_column())
        .collect()
}

/// The cells of one row, matching `columns(group, kind)`.
pub fn cells(group: &str, kind: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    (printer(group, kind).cells)(obj, now)
}

/// Columns for a custom resource from the CRD version's `additionalPrinterColumns`
/// (`Name` first; `Age` when the list is empty).
pub fn crd_columns(additional_printer_columns: &[Value]) -> Vec<Column> {
    crd::columns(additional_printer_columns)
}

/// Cells for a custom resource; JSONPath columns evaluated against `obj`.
pub fn crd_cells(
    additional_printer_columns: &[Value],
    obj: &Value,
    now: DateTime<Utc>,
) -> Vec<Value> {
    crd::cells(additional_printer_columns, obj, now)
}

/// Upstream's short human duration (`5s`, `3m2s`, `4h`, `2d3h`, `45d`, `3y`).
///
/// Follows apimachinery's `duration.HumanDuration`: up to one second of clock
/// skew renders as `0s`, more as `<invalid>`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Every (group, kind) with a dedicated printer, for tests.
#[cfg(test)]
pub(crate) const SUPPORTED: &[(&str, &str)] = &[
    ("registry.mini.dev", "Repository"),
    ("registry.mini.dev", "ImageTag"),
    ("", "Pod"),
    ("", "PodTemplate"),
    ("", "ReplicationController"),
    ("", "Service"),
    ("", "Endpoints"),
    ("", "Node"),
    ("", "Event"),
    ("", "Namespace"),
    ("", "Secret"),
    ("", "ServiceAccount"),
    ("", "PersistentVolume"),
    ("", "PersistentVolumeClaim"),
    ("", "ComponentStatus"),
    ("", "ConfigMap"),
    ("", "ResourceQuota"),
    ("", "LimitRange"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ControllerRevision"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("policy", "PodDisruptionBudget"),
    ("coordination.k8s.io", "Lease"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("networking.k8s.io", "IPAddress"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("scheduling.k8s.io", "PriorityClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("apiregistration.k8s.io", "APIService"),
    ("events.k8s.io", "Event"),
    ("autoscaling", "Scale"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn human_duration_matches_upstream_table() {
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (60, "60s"),
            (119, "119s"),
            (120, "2m"),
            (121, "2m1s"),
            (5 * 60 + 30, "5m30s"),
            (9 * 60 + 59, "9m59s"),
            (10 * 60, "10m"),
            (10 * 60 + 59, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 25 * 60, "3h25m"),
            (7 * 3600 + 59 * 60, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (7 * 86400 + 23 * 3600, "7d23h"),
            (8 * 86400, "8d"),
            (45 * 86400, "45d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (3 * 365 * 86400 + 12 * 86400, "3y12d"),
            (8 * 365 * 86400, "8y"),
            (20 * 365 * 86400 + 100 * 86400, "20y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(*secs), *want, "seconds = {secs}");
        }
    }

    fn now() -> DateTime<Utc> {
        util::parse_time("2024-05-01T12:00:00Z").unwrap()
    }

    #[test]
    fn every_supported_kind_has_as_many_cells_as_columns() {
        let realistic = json!({
            "metadata": {"name": "x", "namespace": "default",
                         "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {}
        });
        for (group, kind) in SUPPORTED {
            let cols = columns(group, kind);
            assert!(!cols.is_empty(), "{group}/{kind}");
            for obj in [json!({}), realistic.clone()] {
                let row = cells(group, kind, &obj, now());
                assert_eq!(row.len(), cols.len(), "{group}/{kind} with {obj}");
            }
            let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
            assert!(names.contains(&"Name"), "{group}/{kind} lacks Name");
            for c in &cols {
                assert!(c.priority == 0 || c.priority == 1);
                if c.name == "Name" {
                    assert_eq!(c.format, "name");
                }
            }
        }
    }

    #[test]
    fn every_supported_kind_is_not_the_fallback() {
        for (group, kind) in SUPPORTED {
            assert!(lookup(group, kind).is_some(), "{group}/{kind} fell back");
        }
    }

    #[test]
    fn unknown_kind_falls_back_to_name_and_age() {
        let cols = columns("example.com", "Widget");
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Name", "Age"]);
        let obj = json!({"metadata": {"name": "w", "creationTimestamp": "2024-05-01T11:59:00Z"}});
        assert_eq!(
            cells("example.com", "Widget", &obj, now()),
            vec![json!("w"), json!("60s")]
        );
        let bare = json!({"metadata": {"name": "w"}});
        assert_eq!(
            cells("example.com", "Widget", &bare, now())[1],
            json!("<unknown>")
        );
    }

    #[test]
    fn role_uses_created_at_rfc3339() {
        let obj =
            json!({"metadata": {"name": "r", "creationTimestamp": "2024-05-01T11:00:00.123Z"}});
        let cols = columns("rbac.authorization.k8s.io", "Role");
        assert_eq!(cols[1].name, "Created At");
        assert_eq!(cols[1].type_, "date");
        assert_eq!(
            cells("rbac.authorization.k8s.io", "ClusterRole", &obj, now()),
            vec![json!("r"), json!("2024-05-01T11:00:00Z")]
        );
    }

    #[test]
    fn core_alias_group_resolves_to_core() {
        assert_eq!(columns("core", "Pod"), columns("", "Pod"));
    }

    #[test]
    fn column_serializes_type_field() {
        let v = serde_json::to_value(NAME.to_column()).unwrap();
        assert_eq!(v["type"], "string");
        assert_eq!(v["format"], "name");
    }
}

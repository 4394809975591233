//! The audit log: who did what, as JSON lines in a subset of upstream's `audit.k8s.io/v1`
//! Event (timestamp, user, verb, objectRef, responseStatus.code, sourceIPs), appended to
//! `<data-dir>/server/audit.log` and rotated by size (`audit.log.1` … `audit.log.<keep>`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mini_apiserver::{AuditRecord, AuditSink};
use serde_json::{json, Value};

use crate::ACCOUNTS_GROUP;

/// Where and how big the audit log is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// Rotate when the file would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
}

impl AuditConfig {
    /// `<server_dir>/audit.log`, 10 MiB per file, 5 rotated files.
    pub fn in_dir(server_dir: &Path) -> Self {
        AuditConfig {
            path: server_dir.join("audit.log"),
            max_bytes: 10 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// The JSON line of one audited request (without the newline).
pub fn to_json(event: &AuditRecord, timestamp: &str) -> Value {
    let mut object_ref = serde_json::Map::new();
    for (k, v) in [
        ("resource", &event.resource),
        ("subresource", &event.subresource),
        ("namespace", &event.namespace),
        ("name", &event.name),
        ("apiGroup", &event.api_group),
    ] {
        if !v.is_empty() {
            object_ref.insert(k.into(), json!(v));
        }
    }
    json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": hex::encode(rand::random::<[u8; 16]>()),
        "stage": "ResponseComplete",
        "requestURI": event.request_uri,
        "verb": event.verb,
        "user": {"username": event.user.name, "groups": event.user.groups},
        "sourceIPs": event.source_ip.map(|ip| vec![ip.to_string()]).unwrap_or_default(),
        "objectRef": object_ref,
        "responseStatus": {"code": event.code},
        "requestReceivedTimestamp": timestamp,
        "stageTimestamp": timestamp,
    })
}

/// The log file, rotated by size; writes are serialised.
pub struct AuditLog {
    config: AuditConfig,
    file: Mutex<Option<std::fs::File>>,
}

impl AuditLog {
    pub fn new(config: AuditConfig) -> Self {
        AuditLog {
            config,
            file: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Appends `event`; a failure is logged, never fails the request.
    pub fn write(&self, event: &AuditRecord) {
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut line = to_json(event, &timestamp).to_string();
        line.push('\n');
        if let Err(e) = self.append(line.as_bytes()) {
            tracing::warn!(path = %self.config.path.display(), error = %e, "writing the audit log failed");
        }
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let size = std::fs::metadata(&self.config.path)
            .map(|m| m.len())
            .unwrap_or(0);
        if size > 0 && size + line.len() as u64 > self.config.max_bytes {
            *guard = None;
            self.rotate()?;
        }
        if guard.is_none() {
            if let Some(dir) = self.config.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            use std::os::unix::fs::OpenOptionsExt;
            *guard = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&self.config.path)?,
            );
        }
        match guard.as_mut() {
            Some(file) => file.write_all(line),
            None => Ok(()),
        }
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.config.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&self) -> std::io::Result<()> {
        if self.config.keep == 0 {
            return std::fs::remove_file(&self.config.path);
        }
        let _ = std::fs::remove_file(self.rotated(self.config.keep));
        for n in (1..self.config.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.config.path, self.rotated(1))
    }
}

/// Keeps the API requests of people's accounts (group [`ACCOUNTS_GROUP`]).
impl AuditSink for AuditLog {
    fn record(&self, r: AuditRecord) {
        if !r.user.groups.iter().any(|g| g == ACCOUNTS_GROUP) {
            return;
        }
        self.write(&r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mini_rbac::UserInfo;

    fn event(name: &str) -> AuditRecord {
        AuditRecord {
            user: UserInfo {
                name: "alice".into(),
                groups: vec![ACCOUNTS_GROUP.into()],
            },
            verb: "create".into(),
            api_group: "apps".into(),
            resource: "deployments".into(),
            subresource: String::new(),
            namespace: "a".into(),
            name: name.into(),
            request_uri: "/apis/apps/v1/namespaces/a/deployments".into(),
            code: 201,
            source_ip: Some("127.0.0.1".parse().unwrap()),
        }
    }

    #[test]
    fn write_appends_one_json_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(AuditConfig::in_dir(dir.path()));
        log.write(&event("web"));
        log.write(&event("db"));
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["user"]["username"], "alice");
        assert_eq!(lines[0]["objectRef"]["resource"], "deployments");
        assert_eq!(lines[0]["objectRef"]["namespace"], "a");
        assert_eq!(lines[1]["objectRef"]["name"], "db");
        assert_eq!(lines[0]["responseStatus"]["code"], 201);
        assert_eq!(lines[0]["sourceIPs"][0], "127.0.0.1");
    }

    #[test]
    fn write_past_max_bytes_rotates_and_keeps_a_few_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(AuditConfig {
            path: dir.path().join("audit.log"),
            max_bytes: 600,
            keep: 2,
        });
        for i in 0..20 {
            log.write(&event(&format!("obj{i}")));
        }
        assert!(log.path().exists());
        assert!(dir.path().join("audit.log.1").exists());
        assert!(dir.path().join("audit.log.2").exists());
        assert!(!dir.path().join("audit.log.3").exists());
        let last = std::fs::read_to_string(log.path()).unwrap();
        assert!(last.contains("obj19"));
    }

    #[test]
    fn record_other_users_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(AuditConfig::in_dir(dir.path()));
        log.record(AuditRecord {
            user: UserInfo {
                name: "system:admin".into(),
                groups: vec!["system:masters".into()],
            },
            verb: "create".into(),
            api_group: String::new(),
            resource: "pods".into(),
            subresource: String::new(),
            namespace: "a".into(),
            name: String::new(),
            request_uri: "/api/v1/namespaces/a/pods".into(),
            code: 201,
            source_ip: None,
        });
        assert!(!log.path().exists());
    }
}

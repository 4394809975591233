//! Container log files in the CRI format: where they live, and reading them back for
//! `kubectl logs` (tail, since, timestamps, follow, previous).

use std::path::{Path, PathBuf};

/// The CRI `log_directory` of a pod: `<logs_root>/<namespace>_<name>_<uid>`, as upstream's
/// `/var/log/pods` layout.
pub fn pod_log_dir(logs_root: &Path, namespace: &str, pod_name: &str, pod_uid: &str) -> PathBuf {
    logs_root.join(format!("{namespace}_{pod_name}_{pod_uid}"))
}

/// The CRI `log_path` of a container, relative to its pod's log directory:
/// `<container>/<restart_count>.log`.
pub fn container_log_relpath(container_name: &str, restart_count: u32) -> PathBuf {
    PathBuf::from(container_name).join(format!("{restart_count}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_follow_the_var_log_pods_layout() {
        let dir = pod_log_dir(Path::new("/logs"), "default", "web-1", "u-1");
        assert_eq!(dir, PathBuf::from("/logs/default_web-1_u-1"));
        assert_eq!(container_log_relpath("app", 2), PathBuf::from("app/2.log"));
    }
}

//! The hand-over of a pod's pool address from the kubelet to the CNI IPAM: before it creates
//! the sandbox, the kubelet writes `<dir>/<namespace>_<name>` (JSON: address and pod uid); the
//! built-in `host-local` reads it for the pod named in `CNI_ARGS` and hands out exactly that
//! address. Namespace and pod names cannot hold `_` or `/`, so the file name is unambiguous.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::IpPoolError;

/// What the kubelet asks the IPAM for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedRequest {
    pub address: Ipv4Addr,
    /// The pod's uid: a request left by an earlier pod of the same name is not used.
    #[serde(default)]
    pub uid: String,
}

/// The request file of one pod.
pub fn request_path(dir: &Path, namespace: &str, name: &str) -> Option<PathBuf> {
    let ok = |s: &str| !s.is_empty() && !s.contains(['/', '_']) && s != "." && s != "..";
    (ok(namespace) && ok(name)).then(|| dir.join(format!("{namespace}_{name}")))
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IpPoolError {
    let path = path.to_path_buf();
    move |source| IpPoolError::Io { what, path, source }
}

/// Writes (replacing atomically) the request of a pod.
pub fn write_request(
    dir: &Path,
    namespace: &str,
    name: &str,
    request: &PinnedRequest,
) -> Result<(), IpPoolError> {
    let Some(path) = request_path(dir, namespace, name) else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let tmp = dir.join(format!(".{namespace}_{name}.tmp"));
    let text = serde_json::to_vec(request).expect("a request encodes");
    std::fs::write(&tmp, text).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming into", &path))
}

/// Removes the request of a pod (none is fine).
pub fn remove_request(dir: &Path, namespace: &str, name: &str) -> Result<(), IpPoolError> {
    let Some(path) = request_path(dir, namespace, name) else {
        return Ok(());
    };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &path)(e)),
        _ => Ok(()),
    }
}

/// The request of a pod; `uid` (when known) must match the one written.
pub fn read_request(
    dir: &Path,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Result<Option<PinnedRequest>, IpPoolError> {
    let Some(path) = request_path(dir, namespace, name) else {
        return Ok(None);
    };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", &path)(e)),
    };
    let request: PinnedRequest = serde_json::from_slice(&text).map_err(|e| IpPoolError::Io {
        what: "decoding",
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    match uid.filter(|u| !u.is_empty()) {
        Some(uid) if !request.uid.is_empty() && request.uid != uid => Ok(None),
        _ => Ok(Some(request)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_roundtrip_matches_uid_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = PinnedRequest {
            address: "10.99.0.5".parse().expect("ip"),
            uid: "u1".into(),
        };
        write_request(dir.path(), "ns", "web-0", &req).expect("write");
        assert_eq!(
            read_request(dir.path(), "ns", "web-0", Some("u1")).expect("read"),
            Some(req.clone())
        );
        assert_eq!(
            read_request(dir.path(), "ns", "web-0", None).expect("read"),
            Some(req)
        );
        assert_eq!(
            read_request(dir.path(), "ns", "web-0", Some("u2")).expect("read"),
            None
        );
        remove_request(dir.path(), "ns", "web-0").expect("remove");
        assert_eq!(
            read_request(dir.path(), "ns", "web-0", None).expect("read"),
            None
        );
        remove_request(dir.path(), "ns", "web-0").expect("removing twice is fine");
    }

    #[test]
    fn request_path_refuses_names_that_escape() {
        let dir = Path::new("/x");
        assert_eq!(request_path(dir, "a/b", "c"), None);
        assert_eq!(request_path(dir, "a", ".."), None);
        assert_eq!(request_path(dir, "ns", "p"), Some(PathBuf::from("/x/ns_p")));
    }
}

//! Image references mapped to repositories of a registry, the way every mini component names
//! them: docker normalisation (`busybox` → `docker.io/library/busybox:latest`), then the path
//! alone for the registry's own host, `<host>/<path>` (a mirror repository) for any other host.

use crate::RegClientError;

/// A reference split into its parts, after docker normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// `docker.io`, `registry.k8s.io`, `10.0.0.1:6443`, ...
    pub host: String,
    /// The path under the host: `library/busybox`, `default/app`.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageReference {
    /// Normalises like docker and splits. A digest reference keeps its tag, if it had one.
    pub fn parse(reference: &str) -> Result<ImageReference, RegClientError> {
        let normalized = mini_images::normalize_image_name(reference.trim()).map_err(|e| {
            RegClientError::Reference {
                reference: reference.to_string(),
                reason: match e {
                    mini_images::ImageError::InvalidReference { reason, .. } => reason,
                    other => other.to_string(),
                },
            }
        })?;
        let (name, digest) = match normalized.split_once('@') {
            Some((n, d)) => (n.to_string(), Some(d.to_string())),
            None => (normalized.clone(), None),
        };
        let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repo, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                name[..last_slash + i].to_string(),
                Some(name[last_slash + i + 1..].to_string()),
            ),
            None => (name.clone(), None),
        };
        let (host, path) = repo
            .split_once('/')
            .map(|(h, p)| (h.to_string(), p.to_string()))
            .ok_or_else(|| RegClientError::Reference {
                reference: reference.to_string(),
                reason: "no repository path".into(),
            })?;
        Ok(ImageReference {
            host,
            path,
            tag,
            digest,
        })
    }

    /// The digest if there is one, else the tag (`latest` when neither was given).
    pub fn tag_or_digest(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".to_string())
    }

    /// The repository of the registry at `registry_host` that holds this image.
    pub fn repository(&self, registry_host: &str) -> String {
        if same_host(&self.host, registry_host) {
            self.path.clone()
        } else {
            format!("{}/{}", self.host, self.path)
        }
    }
}

/// Host names compared case-insensitively; `host:443` equals `host`.
fn same_host(a: &str, b: &str) -> bool {
    let norm = |h: &str| {
        let h = h.trim().to_ascii_lowercase();
        h.strip_suffix(":443").map(str::to_string).unwrap_or(h)
    };
    !b.trim().is_empty() && norm(a) == norm(b)
}

/// Maps an image reference to `(repository, tag_or_digest)` of the registry at `registry_host`:
/// `busybox` → (`docker.io/library/busybox`, `latest`); `10.0.0.1:6443/default/app:v1` with
/// host `10.0.0.1:6443` → (`default/app`, `v1`); `ghcr.io/org/x@sha256:…` → (`ghcr.io/org/x`,
/// `sha256:…`).
pub fn repository_for(
    reference: &str,
    registry_host: &str,
) -> Result<(String, String), RegClientError> {
    let parsed = ImageReference::parse(reference)?;
    Ok((parsed.repository(registry_host), parsed.tag_or_digest()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "10.0.0.1:6443";
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn repository_for_short_name_is_docker_library_latest() {
        assert_eq!(
            repository_for("busybox", HOST).unwrap(),
            ("docker.io/library/busybox".into(), "latest".into())
        );
    }

    #[test]
    fn repository_for_user_repository_on_docker_hub_keeps_tag() {
        assert_eq!(
            repository_for("foo/bar:1.2", HOST).unwrap(),
            ("docker.io/foo/bar".into(), "1.2".into())
        );
    }

    #[test]
    fn repository_for_own_host_is_path_only() {
        assert_eq!(
            repository_for("10.0.0.1:6443/default/app:v1", HOST).unwrap(),
            ("default/app".into(), "v1".into())
        );
    }

    #[test]
    fn repository_for_own_host_with_port_443_matches_bare_host() {
        assert_eq!(
            repository_for("registry.example:443/team/web:2", "registry.example").unwrap(),
            ("team/web".into(), "2".into())
        );
    }

    #[test]
    fn repository_for_other_host_is_mirror_repository() {
        assert_eq!(
            repository_for("registry.k8s.io/pause:3.10", HOST).unwrap(),
            ("registry.k8s.io/pause".into(), "3.10".into())
        );
        assert_eq!(
            repository_for("localhost:5000/x/y", HOST).unwrap(),
            ("localhost:5000/x/y".into(), "latest".into())
        );
    }

    #[test]
    fn repository_for_digest_reference_returns_digest() {
        let reference = format!("ghcr.io/org/x:1@{DIGEST}");
        assert_eq!(
            repository_for(&reference, HOST).unwrap(),
            ("ghcr.io/org/x".into(), DIGEST.into())
        );
    }

    #[test]
    fn repository_for_legacy_docker_index_host_is_docker_io() {
        assert_eq!(
            repository_for("index.docker.io/library/alpine:3", HOST).unwrap(),
            ("docker.io/library/alpine".into(), "3".into())
        );
    }

    #[test]
    fn repository_for_invalid_reference_is_error() {
        let err = repository_for("Bad Name", HOST).unwrap_err();
        assert!(err.to_string().contains("invalid image reference"), "{err}");
    }

    #[test]
    fn parse_tag_and_digest_keeps_both() {
        let r = ImageReference::parse(&format!("busybox:1@{DIGEST}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.digest.as_deref(), Some(DIGEST));
        assert_eq!(r.host, "docker.io");
        assert_eq!(r.path, "library/busybox");
    }
}

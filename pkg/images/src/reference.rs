//! Image name normalisation the way containerd's CRI plugin (docker/distribution `reference`) does it.

use crate::ImageError;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";

/// Normalises an image reference to its fully qualified form:
/// `busybox:1.0` -> `docker.io/library/busybox:1.0`, `foo/bar` -> `docker.io/foo/bar:latest`,
/// `registry.local:5000/x@sha256:..` stays as it is.
pub fn normalize_image_name(name: &str) -> Result<String, ImageError> {
    let invalid = |reason: &str| ImageError::InvalidReference {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("empty name"));
    }
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    if let Some(d) = digest {
        let (algo, hexpart) = d
            .split_once(':')
            .ok_or_else(|| invalid("digest lacks an algorithm"))?;
        if algo.is_empty() || hexpart.len() < 32 || !hexpart.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(invalid("malformed digest"));
        }
    }
    // A tag is a ':' after the last '/'.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let valid = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            && !t.starts_with(['.', '-']);
        if !valid {
            return Err(invalid("malformed tag"));
        }
    }
    let (domain, path) = match repo.split_once('/') {
        Some((first, remainder))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, remainder.to_string())
        }
        _ => (DEFAULT_DOMAIN, repo.to_string()),
    };
    let domain = if domain == LEGACY_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path
    };
    for component in path.split('/') {
        let ok = !component.is_empty()
            && component.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
            })
            && component
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && component
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(invalid(
                "repository path must be lowercase letters, digits and separators",
            ));
        }
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_short_name_with_tag_gets_docker_library() {
        assert_eq!(
            normalize_image_name("busybox:1.0").unwrap(),
            "docker.io/library/busybox:1.0"
        );
    }

    #[test]
    fn normalize_name_without_tag_gets_latest() {
        assert_eq!(
            normalize_image_name("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_image_name("foo/bar").unwrap(),
            "docker.io/foo/bar:latest"
        );
    }

    #[test]
    fn normalize_registry_with_port_kept() {
        assert_eq!(
            normalize_image_name("registry.local:5000/team/app:v2").unwrap(),
            "registry.local:5000/team/app:v2"
        );
        assert_eq!(
            normalize_image_name("localhost/app").unwrap(),
            "localhost/app:latest"
        );
        assert_eq!(
            normalize_image_name("mini.local/pause:3.10").unwrap(),
            "mini.local/pause:3.10"
        );
    }

    #[test]
    fn normalize_docker_io_short_and_legacy_domain_gets_library() {
        assert_eq!(
            normalize_image_name("docker.io/busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_image_name("index.docker.io/library/busybox:1").unwrap(),
            "docker.io/library/busybox:1"
        );
    }

    #[test]
    fn normalize_digest_reference_has_no_latest() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize_image_name(&format!("busybox@{d}")).unwrap(),
            format!("docker.io/library/busybox@{d}")
        );
    }

    #[test]
    fn normalize_invalid_names_rejected() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "busybox@sha256:zz",
        ] {
            assert!(
                normalize_image_name(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn normalize_is_idempotent() {
        for n in [
            "busybox",
            "foo/bar:1",
            "registry.local:5000/x:y",
            "ghcr.io/a/b/c:d",
        ] {
            let once = normalize_image_name(n).unwrap();
            assert_eq!(normalize_image_name(&once).unwrap(), once);
        }
    }
}

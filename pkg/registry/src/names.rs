//! Repository names, tags and digests: the distribution spec's grammar, scopes, and image references.

use std::fmt;

/// Longest repository name the spec allows.
pub const MAX_NAME_LEN: usize = 255;

/// Whether `name` follows the spec's repository name grammar
/// (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` components joined by `/`, at most 255 bytes).
/// A first component holding a port (`localhost:5000/x`, `host:443/x`) is accepted for mirrored hosts.
pub fn valid_repository(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let mut components = name.split('/');
    let first = components.next().unwrap_or_default();
    let first_ok = match first.split_once(':') {
        Some((host, port)) => {
            name.contains('/')
                && valid_component(host)
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => valid_component(first),
    };
    first_ok && components.all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__` or a run of `-`, always between alphanumerics.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Whether `tag` follows `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A mirrored upstream repository's first component has a `.` or `:` or is `localhost`.
pub fn is_mirrored(repository: &str) -> bool {
    let first = repository.split('/').next().unwrap_or_default();
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// The Kubernetes namespace a repository belongs to (`None` = cluster scope: mirrored repositories).
pub fn namespace_of(repository: &str) -> Option<&str> {
    if is_mirrored(repository) {
        None
    } else {
        repository.split('/').next()
    }
}

/// The digest algorithms the registry verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
}

/// A parsed content digest `sha256:<64 hex>` or `sha512:<128 hex>` (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    pub algorithm: Algorithm,
    pub hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Option<Digest> {
        let (algo, hex) = s.split_once(':')?;
        let (algorithm, len) = match algo {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            _ => return None,
        };
        let ok = hex.len() == len
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(sha2::Sha256::digest(data)),
        }
    }

    /// The digest of `data` with this digest's algorithm.
    pub fn matches(&self, data: &[u8]) -> bool {
        use sha2::Digest as _;
        let hex = match self.algorithm {
            Algorithm::Sha256 => hex::encode(sha2::Sha256::digest(data)),
            Algorithm::Sha512 => hex::encode(sha2::Sha512::digest(data)),
        };
        hex == self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// What an image reference points at inside a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Tag(String),
    Digest(String),
}

/// Maps an image reference to a repository of this registry and its tag or digest, the way
/// containerd normalises it (`busybox` → `docker.io/library/busybox:latest`): a reference to one of
/// `own_hosts` names the repository by its path, any other host gives the mirror repository
/// `<host>/<path>`. `None` when the reference cannot be parsed.
pub fn repository_for(reference: &str, own_hosts: &[String]) -> Option<(String, Target)> {
    let parsed = mini_regclient::ImageReference::parse(reference).ok()?;
    let repository = own_hosts
        .iter()
        .map(|host| parsed.repository(host))
        .min_by_key(String::len)
        .unwrap_or_else(|| parsed.repository(""));
    let target = match &parsed.digest {
        Some(digest) => Target::Digest(digest.clone()),
        None => Target::Tag(parsed.tag_or_digest()),
    };
    valid_repository(&repository).then_some((repository, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_repository_spec_examples_accepted() {
        for n in [
            "default/app",
            "team-a/web/api",
            "docker.io/library/busybox",
            "a__b/c.d/e--f",
            "localhost:5000/x",
        ] {
            assert!(valid_repository(n), "{n}");
        }
    }

    #[test]
    fn valid_repository_bad_names_rejected() {
        for n in [
            "",
            "Default/app",
            "a/../b",
            "a//b",
            "a/",
            "/a",
            "a/.b",
            "a/b_",
            "a/b___c",
            "..",
            &"a".repeat(256),
        ] {
            assert!(!valid_repository(n), "{n}");
        }
    }

    #[test]
    fn valid_tag_grammar_enforced() {
        assert!(valid_tag("v1.0_rc-1"));
        assert!(valid_tag("_x"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag(""));
        assert!(!valid_tag(&"a".repeat(129)));
    }

    #[test]
    fn namespace_of_mirrored_is_cluster_scope() {
        assert_eq!(namespace_of("default/app"), Some("default"));
        assert_eq!(namespace_of("docker.io/library/busybox"), None);
        assert_eq!(namespace_of("localhost/x"), None);
        assert_eq!(namespace_of("host:5000/x"), None);
    }

    #[test]
    fn digest_parse_rejects_uppercase_and_short() {
        let hex = "a".repeat(64);
        assert!(Digest::parse(&format!("sha256:{hex}")).is_some());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(Digest::parse("sha256:abc").is_none());
        assert!(Digest::parse(&format!("md5:{hex}")).is_none());
        assert!(Digest::parse(&format!("sha512:{}", "b".repeat(128))).is_some());
    }

    #[test]
    fn digest_matches_data_verified() {
        let d = Digest::sha256_of(b"hello");
        assert!(d.matches(b"hello"));
        assert!(!d.matches(b"hellO"));
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn repository_for_docker_hub_short_name_maps_to_mirror() {
        let hosts = vec!["10.0.0.1:6443".to_string()];
        assert_eq!(
            repository_for("busybox", &hosts),
            Some((
                "docker.io/library/busybox".to_string(),
                Target::Tag("latest".to_string())
            ))
        );
        assert_eq!(
            repository_for("10.0.0.1:6443/default/app:v1", &hosts),
            Some(("default/app".to_string(), Target::Tag("v1".to_string())))
        );
        let digest = format!("sha256:{}", "c".repeat(64));
        assert_eq!(
            repository_for(&format!("registry.k8s.io/pause:3.9@{digest}"), &hosts),
            Some(("registry.k8s.io/pause".to_string(), Target::Digest(digest)))
        );
    }
}

//! The keyring file: upstream's `EncryptionConfiguration` (`apiserver.config.k8s.io/v1`) as
//! JSON, its checks, a fresh one for a new cluster, new keys for rotation, and the atomic,
//! owner-only write.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::EncryptionError;

pub const KIND: &str = "EncryptionConfiguration";
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// Provider names as they appear in the file and in the stored prefix.
pub const AESGCM: &str = "aesgcm";
pub const SECRETBOX: &str = "secretbox";
pub const IDENTITY: &str = "identity";
/// Bytes of a generated key (AES-256 for aesgcm; secretbox keys are always 32).
const GENERATED_KEY_BYTES: usize = 32;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub api_version: String,
    pub resources: Vec<ResourceConfiguration>,
}

/// Resources and the providers that seal them, the first provider writing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceConfiguration {
    pub resources: Vec<String>,
    pub providers: Vec<ProviderConfiguration>,
}

/// Exactly one field set. `aescbc` and `kms` are read only to be refused with a clear message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aesgcm: Option<KeysConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secretbox: Option<KeysConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aescbc: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityConfiguration {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysConfiguration {
    pub keys: Vec<Key>,
}

/// A named key; `secret` is base64.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub name: String,
    pub secret: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ProviderConfiguration {
    /// The provider's name and, for key providers, its keys. `Err` names what is wrong.
    pub fn kind(&self) -> Result<(&'static str, Option<&KeysConfiguration>), String> {
        let mut set = Vec::new();
        if let Some(keys) = &self.aesgcm {
            set.push((AESGCM, Some(keys)));
        }
        if let Some(keys) = &self.secretbox {
            set.push((SECRETBOX, Some(keys)));
        }
        if self.identity.is_some() {
            set.push((IDENTITY, None));
        }
        if self.aescbc.is_some() {
            return Err("provider aescbc is not supported by mini: use aesgcm or secretbox".into());
        }
        if self.kms.is_some() {
            return Err("provider kms is not supported by mini: use aesgcm or secretbox".into());
        }
        match set.len() {
            1 => Ok(set[0]),
            0 => Err("a provider names none of aesgcm, secretbox, identity".into()),
            _ => Err("a provider sets more than one of aesgcm, secretbox, identity".into()),
        }
    }

    /// The keys of a key provider, mutable.
    pub fn keys_mut(&mut self) -> Option<&mut KeysConfiguration> {
        self.aesgcm.as_mut().or(self.secretbox.as_mut())
    }
}

impl Key {
    /// The key bytes, checked for the provider's sizes.
    pub fn bytes(&self, provider: &str) -> Result<Vec<u8>, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.secret.trim())
            .map_err(|_| format!("key {:?}: the secret is not base64", self.name))?;
        let ok = match provider {
            AESGCM => matches!(bytes.len(), 16 | 24 | 32),
            _ => bytes.len() == 32,
        };
        if !ok {
            let sizes = if provider == AESGCM {
                "16, 24 or 32"
            } else {
                "32"
            };
            return Err(format!(
                "key {:?}: {provider} keys are {sizes} bytes, this one is {}",
                self.name,
                bytes.len()
            ));
        }
        Ok(bytes)
    }
}

/// Checks a resource name as upstream writes them: `secrets`, `deployments.apps`, `*.apps`,
/// `*.` (the core group) or `*.*`.
fn check_resource(name: &str) -> Result<(), String> {
    let valid_part = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    let ok = match name.split_once('.') {
        _ if name == "*.*" || name == "*." => true,
        Some(("*", group)) => valid_part(group),
        Some((plural, group)) => valid_part(plural) && valid_part(group),
        None => valid_part(name),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "resource {name:?}: expected a plural resource name such as secrets or deployments.apps, or *.group, *. or *.*"
        ))
    }
}

impl EncryptionConfiguration {
    /// Parses and checks `text` (`what` names it in errors).
    pub fn parse(text: &str, what: &str) -> Result<Self, EncryptionError> {
        let config: EncryptionConfiguration =
            serde_json::from_str(text).map_err(|e| EncryptionError::Config {
                path: what.to_string(),
                message: format!("not an EncryptionConfiguration in JSON: {e}"),
            })?;
        config.check().map_err(|message| EncryptionError::Config {
            path: what.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// The file's rules: kind and version, at least one resource and provider per entry,
    /// one field per provider, key names unique per provider and free of `:`, sizes right.
    pub fn check(&self) -> Result<(), String> {
        if !self.kind.is_empty() && self.kind != KIND {
            return Err(format!("kind is {:?}, expected {KIND}", self.kind));
        }
        if !self.api_version.is_empty() && self.api_version != API_VERSION {
            return Err(format!(
                "apiVersion is {:?}, expected {API_VERSION}",
                self.api_version
            ));
        }
        for (i, entry) in self.resources.iter().enumerate() {
            if entry.resources.is_empty() {
                return Err(format!("resources[{i}] lists no resources"));
            }
            if entry.providers.is_empty() {
                return Err(format!("resources[{i}] lists no providers"));
            }
            for name in &entry.resources {
                check_resource(name).map_err(|e| format!("resources[{i}]: {e}"))?;
            }
            for provider in &entry.providers {
                let (kind, keys) = provider
                    .kind()
                    .map_err(|e| format!("resources[{i}]: {e}"))?;
                let Some(keys) = keys else { continue };
                if keys.keys.is_empty() {
                    return Err(format!("resources[{i}]: the {kind} provider has no keys"));
                }
                let mut seen = std::collections::HashSet::new();
                for key in &keys.keys {
                    if key.name.is_empty() || key.name.contains(':') {
                        return Err(format!(
                            "resources[{i}]: key name {:?} must be non-empty and without ':'",
                            key.name
                        ));
                    }
                    if !seen.insert(key.name.as_str()) {
                        return Err(format!(
                            "resources[{i}]: the {kind} provider names key {:?} twice",
                            key.name
                        ));
                    }
                    key.bytes(kind)
                        .map_err(|e| format!("resources[{i}]: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// A new cluster's configuration: Secrets sealed with one fresh AES-GCM key, plain values
    /// still readable (the `identity` provider last, as upstream needs it to read them).
    pub fn generate(now: chrono::DateTime<chrono::Utc>) -> Result<Self, EncryptionError> {
        Ok(EncryptionConfiguration {
            kind: KIND.to_string(),
            api_version: API_VERSION.to_string(),
            resources: vec![ResourceConfiguration {
                resources: vec!["secrets".to_string()],
                providers: vec![
                    ProviderConfiguration {
                        aesgcm: Some(KeysConfiguration {
                            keys: vec![new_key(&key_name(now), &[])?],
                        }),
                        ..Default::default()
                    },
                    ProviderConfiguration {
                        identity: Some(IdentityConfiguration {}),
                        ..Default::default()
                    },
                ],
            }],
        })
    }

    /// The configuration with a new key first in every entry whose first provider holds keys
    /// (it becomes the write key; the others stay for reading). `Err` when no entry writes
    /// with a key (encryption is off in the file).
    pub fn rotated(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Self, Vec<String>), EncryptionError> {
        let mut out = self.clone();
        let mut added = Vec::new();
        for entry in &mut out.resources {
            let Some(keys) = entry.providers.first_mut().and_then(|p| p.keys_mut()) else {
                continue;
            };
            let taken: Vec<&str> = keys.keys.iter().map(|k| k.name.as_str()).collect();
            let key = new_key(&key_name(now), &taken)?;
            added.push(key.name.clone());
            keys.keys.insert(0, key);
        }
        if added.is_empty() {
            return Err(EncryptionError::NothingToRotate);
        }
        Ok((out, added))
    }
}

/// `key-<UTC time>`, the time of its creation.
fn key_name(now: chrono::DateTime<chrono::Utc>) -> String {
    format!("key-{}", now.format("%Y%m%dT%H%M%SZ"))
}

/// A fresh random 32-byte key named `base` (with `-2`, `-3`, … when `taken`).
fn new_key(base: &str, taken: &[&str]) -> Result<Key, EncryptionError> {
    let mut name = base.to_string();
    let mut n = 2;
    while taken.contains(&name.as_str()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    let mut bytes = [0u8; GENERATED_KEY_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| EncryptionError::Random(format!("generating a key: {e}")))?;
    Ok(Key {
        name,
        secret: base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// Writes `bytes` to `path` readable by its owner only, atomically: a temporary file beside
/// it, flushed, renamed over it, and the directory flushed.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), EncryptionError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| EncryptionError::Io { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// Writes the configuration as indented JSON (see [`write_private_atomic`]).
pub fn write(path: &Path, config: &EncryptionConfiguration) -> Result<(), EncryptionError> {
    let mut bytes = serde_json::to_vec_pretty(config).map_err(|e| EncryptionError::Config {
        path: path.display().to_string(),
        message: format!("encoding: {e}"),
    })?;
    bytes.push(b'\n');
    write_private_atomic(path, &bytes)
}

/// Reads and checks the configuration at `path`; `Ok(None)` when there is no file.
pub fn read(path: &Path) -> Result<Option<EncryptionConfiguration>, EncryptionError> {
    match std::fs::read_to_string(path) {
        Ok(text) => EncryptionConfiguration::parse(&text, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EncryptionError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-12-05T12:30:00Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn generate_new_cluster_seals_secrets_with_one_aesgcm_key_then_identity() {
        let config = EncryptionConfiguration::generate(now()).unwrap();
        config.check().unwrap();
        assert_eq!(config.resources.len(), 1);
        assert_eq!(config.resources[0].resources, vec!["secrets"]);
        let (kind, keys) = config.resources[0].providers[0].kind().unwrap();
        assert_eq!(kind, AESGCM);
        let keys = &keys.unwrap().keys;
        assert_eq!(keys[0].name, "key-20261205T123000Z");
        assert_eq!(keys[0].bytes(AESGCM).unwrap().len(), 32);
        assert_eq!(config.resources[0].providers[1].kind().unwrap().0, IDENTITY);
    }

    #[test]
    fn parse_upstream_file_reads_every_provider_kind() {
        let text = r#"{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1",
          "resources":[{"resources":["secrets","configmaps","*.apps"],"providers":[
            {"secretbox":{"keys":[{"name":"k1","secret":"YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="}]}},
            {"aesgcm":{"keys":[{"name":"k0","secret":"MDEyMzQ1Njc4OWFiY2RlZg=="}]}},
            {"identity":{}}]}]}"#;
        let config = EncryptionConfiguration::parse(text, "test").unwrap();
        let kinds: Vec<&str> = config.resources[0]
            .providers
            .iter()
            .map(|p| p.kind().unwrap().0)
            .collect();
        assert_eq!(kinds, vec![SECRETBOX, AESGCM, IDENTITY]);
    }

    #[test]
    fn parse_bad_files_name_the_problem() {
        let cases = [
            (
                r#"{"resources":[{"resources":["secrets"],"providers":[{"aescbc":{"keys":[]}}]}]}"#,
                "aescbc is not supported",
            ),
            (
                r#"{"resources":[{"resources":["secrets"],"providers":[{"secretbox":{"keys":[{"name":"a","secret":"c2hvcnQ="}]}}]}]}"#,
                "32 bytes, this one is 5",
            ),
            (
                r#"{"resources":[{"resources":["secrets"],"providers":[{"aesgcm":{"keys":[{"name":"a:b","secret":"MDEyMzQ1Njc4OWFiY2RlZg=="}]}}]}]}"#,
                "without ':'",
            ),
            (
                r#"{"resources":[{"resources":["secrets"],"providers":[{"aesgcm":{"keys":[{"name":"a","secret":"MDEyMzQ1Njc4OWFiY2RlZg=="},{"name":"a","secret":"MDEyMzQ1Njc4OWFiY2RlZg=="}]}}]}]}"#,
                "twice",
            ),
            (
                r#"{"resources":[{"resources":["Secrets!"],"providers":[{"identity":{}}]}]}"#,
                "plural resource name",
            ),
            (
                r#"{"resources":[{"resources":["secrets"],"providers":[{}]}]}"#,
                "names none",
            ),
            (
                r#"{"kind":"Other","resources":[]}"#,
                "expected EncryptionConfiguration",
            ),
            ("not json", "not an EncryptionConfiguration"),
        ];
        for (text, want) in cases {
            let err = EncryptionConfiguration::parse(text, "f")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn rotated_puts_a_new_key_first_and_keeps_the_old_ones() {
        let config = EncryptionConfiguration::generate(now()).unwrap();
        let (rotated, added) = config.rotated(now()).unwrap();
        assert_eq!(added, vec!["key-20261205T123000Z-2"]);
        let keys = &rotated.resources[0].providers[0]
            .aesgcm
            .as_ref()
            .unwrap()
            .keys;
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].name, "key-20261205T123000Z-2");
        assert_eq!(
            keys[1],
            config.resources[0].providers[0]
                .aesgcm
                .as_ref()
                .unwrap()
                .keys[0]
        );
        assert_ne!(keys[0].secret, keys[1].secret);
    }

    #[test]
    fn rotated_identity_first_has_nothing_to_rotate() {
        let text = r#"{"resources":[{"resources":["secrets"],"providers":[{"identity":{}}]}]}"#;
        let config = EncryptionConfiguration::parse(text, "f").unwrap();
        assert!(matches!(
            config.rotated(now()),
            Err(EncryptionError::NothingToRotate)
        ));
    }

    #[test]
    fn write_then_read_round_trips_with_owner_only_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cred").join("encryption-config.json");
        assert_eq!(read(&path).unwrap(), None);
        let config = EncryptionConfiguration::generate(now()).unwrap();
        write(&path, &config).unwrap();
        assert_eq!(read(&path).unwrap(), Some(config.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (rotated, _) = config.rotated(now()).unwrap();
        write(&path, &rotated).unwrap();
        assert_eq!(read(&path).unwrap(), Some(rotated));
    }

    #[test]
    fn key_debug_hides_the_secret() {
        let key = new_key("k", &[]).unwrap();
        assert!(!format!("{key:?}").contains(&key.secret));
    }
}

//! The keyring compiled from the configuration: which stored keys are sealed, with which key,
//! and the value format of upstream's providers:
//! `k8s:enc:aesgcm:v1:<key>:` + 12-byte nonce + ciphertext and tag (the storage key is the
//! additional authenticated data, so a value copied under another key does not open), and
//! `k8s:enc:secretbox:v1:<key>:` + 24-byte nonce + tag and ciphertext (NaCl's box, which has
//! no additional data). Values without the `k8s:enc:` prefix are plain and read as they are.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use crypto_secretbox::XSalsa20Poly1305;

use crate::config::{EncryptionConfiguration, AESGCM, IDENTITY, SECRETBOX};
use crate::EncryptionError;

/// Every sealed value starts with this.
pub const PREFIX: &[u8] = b"k8s:enc:";
const GCM_NONCE: usize = 12;
const SECRETBOX_NONCE: usize = 24;
const TAG: usize = 16;

type Aes192Gcm = AesGcm<aes_gcm::aes::Aes192, aes_gcm::aead::consts::U12>;

enum Cipher {
    Gcm(Gcm),
    SecretBox(Box<XSalsa20Poly1305>),
}

/// AES-GCM by key size (16, 24 or 32 bytes).
enum Gcm {
    Aes128(Box<Aes128Gcm>),
    Aes192(Box<Aes192Gcm>),
    Aes256(Box<Aes256Gcm>),
}

impl Gcm {
    fn encrypt(&self, nonce: &[u8; GCM_NONCE], payload: Payload) -> aes_gcm::aead::Result<Vec<u8>> {
        match self {
            Gcm::Aes128(c) => c.encrypt(nonce.into(), payload),
            Gcm::Aes192(c) => c.encrypt(nonce.into(), payload),
            Gcm::Aes256(c) => c.encrypt(nonce.into(), payload),
        }
    }

    fn decrypt(&self, nonce: &[u8; GCM_NONCE], payload: Payload) -> aes_gcm::aead::Result<Vec<u8>> {
        match self {
            Gcm::Aes128(c) => c.decrypt(nonce.into(), payload),
            Gcm::Aes192(c) => c.decrypt(nonce.into(), payload),
            Gcm::Aes256(c) => c.decrypt(nonce.into(), payload),
        }
    }
}

/// A key of the configuration, ready to seal and open.
struct NamedKey {
    provider: &'static str,
    name: String,
    cipher: Cipher,
}

/// Which resources an entry covers, as upstream names them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `secrets` (core) or `deployments.apps`: group `""` is core.
    Resource { group: String, plural: String },
    /// `*.apps`, `*.` (core).
    Group(String),
    /// `*.*`
    All,
}

impl Pattern {
    fn parse(name: &str) -> Pattern {
        if name == "*.*" {
            return Pattern::All;
        }
        match name.split_once('.') {
            Some(("*", group)) => Pattern::Group(group.to_string()),
            Some((plural, group)) => Pattern::Resource {
                group: group.to_string(),
                plural: plural.to_string(),
            },
            None => Pattern::Resource {
                group: String::new(),
                plural: name.to_string(),
            },
        }
    }

    fn matches(&self, group: &str, plural: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Group(g) => g == group,
            Pattern::Resource {
                group: g,
                plural: p,
            } => g == group && p == plural,
        }
    }

    /// The store prefix holding everything this pattern covers.
    fn prefix(&self) -> String {
        let dir = |g: &str| {
            if g.is_empty() {
                "core".to_string()
            } else {
                g.to_string()
            }
        };
        match self {
            Pattern::All => "/registry/".to_string(),
            Pattern::Group(g) => format!("/registry/{}/", dir(g)),
            Pattern::Resource { group, plural } => format!("/registry/{}/{plural}/", dir(group)),
        }
    }
}

/// `(group, plural)` of a storage key `/registry/<group|core>/<plural>/...`.
fn resource_of(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("/registry/")?;
    let mut parts = rest.splitn(3, '/');
    let group = parts.next()?;
    let plural = parts.next()?;
    parts.next()?;
    Some((if group == "core" { "" } else { group }, plural))
}

/// One entry of the configuration: its resources, its keys in order, and the write key.
struct Entry {
    resources: Vec<String>,
    patterns: Vec<Pattern>,
    keys: Vec<NamedKey>,
    /// Index into `keys`; `None` writes plain (identity first, or encryption turned off).
    write: Option<usize>,
}

/// How a stored value is sealed, read from its prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sealing {
    Plain,
    /// Provider and key name.
    Key(String, String),
}

impl Sealing {
    /// Reads the prefix of a stored value (no decryption).
    pub fn of(value: &[u8]) -> Sealing {
        let Some(rest) = value.strip_prefix(PREFIX) else {
            return Sealing::Plain;
        };
        let mut parts = rest.splitn(4, |b| *b == b':');
        let provider = parts.next().unwrap_or_default();
        let _version = parts.next();
        let name = parts.next().unwrap_or_default();
        Sealing::Key(
            String::from_utf8_lossy(provider).into_owned(),
            String::from_utf8_lossy(name).into_owned(),
        )
    }
}

impl std::fmt::Display for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sealing::Plain => f.write_str(IDENTITY),
            Sealing::Key(provider, name) => write!(f, "{provider}:{name}"),
        }
    }
}

/// The compiled configuration. Immutable: rotation builds a new one.
pub struct Keyring {
    config: EncryptionConfiguration,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

fn cipher_for(provider: &'static str, bytes: &[u8]) -> Result<Cipher, String> {
    let bad = |_| format!("{provider} rejected a key of {} bytes", bytes.len());
    Ok(match (provider, bytes.len()) {
        (SECRETBOX, _) => Cipher::SecretBox(Box::new(
            XSalsa20Poly1305::new_from_slice(bytes).map_err(bad)?,
        )),
        (_, 16) => Cipher::Gcm(Gcm::Aes128(Box::new(
            Aes128Gcm::new_from_slice(bytes).map_err(bad)?,
        ))),
        (_, 24) => Cipher::Gcm(Gcm::Aes192(Box::new(
            Aes192Gcm::new_from_slice(bytes).map_err(bad)?,
        ))),
        _ => Cipher::Gcm(Gcm::Aes256(Box::new(
            Aes256Gcm::new_from_slice(bytes).map_err(bad)?,
        ))),
    })
}

fn random<const N: usize>() -> Result<[u8; N], EncryptionError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| EncryptionError::Random(format!("generating a nonce: {e}")))?;
    Ok(bytes)
}

impl NamedKey {
    fn header(&self) -> Vec<u8> {
        let mut out = PREFIX.to_vec();
        out.extend_from_slice(self.provider.as_bytes());
        out.extend_from_slice(b":v1:");
        out.extend_from_slice(self.name.as_bytes());
        out.push(b':');
        out
    }

    fn seal(&self, storage_key: &str, plain: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let mut out = self.header();
        let failed = |_| EncryptionError::Seal(format!("{}: sealing failed", self.name));
        match &self.cipher {
            Cipher::SecretBox(c) => {
                let nonce = random::<SECRETBOX_NONCE>()?;
                let sealed = c.encrypt(&nonce.into(), plain).map_err(failed)?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
            }
            Cipher::Gcm(gcm) => {
                let nonce = random::<GCM_NONCE>()?;
                let payload = Payload {
                    msg: plain,
                    aad: storage_key.as_bytes(),
                };
                let sealed = gcm.encrypt(&nonce, payload).map_err(failed)?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
            }
        }
        Ok(out)
    }

    /// Opens `body` (the value after the header).
    fn open(&self, storage_key: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        let tampered = || {
            format!(
                "the value sealed with key {:?} ({}) does not authenticate: it was altered, or copied from another key",
                self.name, self.provider
            )
        };
        match &self.cipher {
            Cipher::SecretBox(c) => {
                if body.len() < SECRETBOX_NONCE + TAG {
                    return Err(tampered());
                }
                let (nonce, sealed) = body.split_at(SECRETBOX_NONCE);
                let nonce: [u8; SECRETBOX_NONCE] = nonce.try_into().map_err(|_| tampered())?;
                c.decrypt(&nonce.into(), sealed).map_err(|_| tampered())
            }
            Cipher::Gcm(gcm) => {
                if body.len() < GCM_NONCE + TAG {
                    return Err(tampered());
                }
                let (nonce, sealed) = body.split_at(GCM_NONCE);
                let nonce: [u8; GCM_NONCE] = nonce.try_into().map_err(|_| tampered())?;
                let payload = Payload {
                    msg: sealed,
                    aad: storage_key.as_bytes(),
                };
                gcm.decrypt(&nonce, payload).map_err(|_| tampered())
            }
        }
    }
}

impl Keyring {
    /// Compiles a checked configuration; with `write` false every entry writes plain (the
    /// keys stay for reading).
    pub fn new(config: EncryptionConfiguration, write: bool) -> Result<Keyring, EncryptionError> {
        config.check().map_err(|message| EncryptionError::Config {
            path: "encryption configuration".into(),
            message,
        })?;
        let mut entries = Vec::new();
        for entry in &config.resources {
            let mut keys = Vec::new();
            let mut write_index = None;
            for (i, provider) in entry.providers.iter().enumerate() {
                let (kind, Some(list)) = provider.kind().map_err(EncryptionError::Seal)? else {
                    continue;
                };
                if i == 0 && write {
                    write_index = Some(keys.len());
                }
                for key in &list.keys {
                    let bytes = key.bytes(kind).map_err(EncryptionError::Seal)?;
                    keys.push(NamedKey {
                        provider: kind,
                        name: key.name.clone(),
                        cipher: cipher_for(kind, &bytes).map_err(EncryptionError::Seal)?,
                    });
                }
            }
            entries.push(Entry {
                resources: entry.resources.clone(),
                patterns: entry.resources.iter().map(|r| Pattern::parse(r)).collect(),
                keys,
                write: write_index,
            });
        }
        Ok(Keyring { config, entries })
    }

    /// A keyring that seals nothing and opens nothing (no configuration file).
    pub fn empty() -> Keyring {
        Keyring {
            config: EncryptionConfiguration {
                kind: crate::config::KIND.into(),
                api_version: crate::config::API_VERSION.into(),
                resources: Vec::new(),
            },
            entries: Vec::new(),
        }
    }

    pub fn config(&self) -> &EncryptionConfiguration {
        &self.config
    }

    /// The entry covering `storage_key` (the first that matches, as upstream).
    pub fn entry_for(&self, storage_key: &str) -> Option<usize> {
        let (group, plural) = resource_of(storage_key)?;
        self.entries
            .iter()
            .position(|e| e.patterns.iter().any(|p| p.matches(group, plural)))
    }

    /// Whether values under `prefix` may belong to a configured resource (a watch of it
    /// needs decrypting).
    pub fn covers_prefix(&self, prefix: &str) -> bool {
        self.entries.iter().any(|e| {
            e.patterns.iter().any(|p| {
                let own = p.prefix();
                own.starts_with(prefix) || prefix.starts_with(&own)
            })
        })
    }

    /// The store prefixes to walk to see every value of every entry, none inside another.
    pub fn prefixes(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .entries
            .iter()
            .flat_map(|e| e.patterns.iter().map(Pattern::prefix))
            .collect();
        all.sort();
        all.dedup();
        let mut out: Vec<String> = Vec::new();
        for p in all {
            if !out.iter().any(|o| p.starts_with(o.as_str())) {
                out.push(p);
            }
        }
        out
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The resources of entry `entry`.
    pub fn resources(&self, entry: usize) -> &[String] {
        &self.entries[entry].resources
    }

    /// The write sealing of an entry.
    pub fn write_sealing(&self, entry: usize) -> Sealing {
        let e = &self.entries[entry];
        match e.write {
            Some(i) => Sealing::Key(e.keys[i].provider.to_string(), e.keys[i].name.clone()),
            None => Sealing::Plain,
        }
    }

    /// The keys of an entry, in order, as sealings.
    pub fn key_sealings(&self, entry: usize) -> Vec<Sealing> {
        self.entries[entry]
            .keys
            .iter()
            .map(|k| Sealing::Key(k.provider.to_string(), k.name.clone()))
            .collect()
    }

    /// The stored form of `plain` under `storage_key`: sealed with the write key of its entry,
    /// or `plain` as it is for keys no entry covers and entries that write plain.
    pub fn seal(&self, storage_key: &str, plain: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let Some(entry) = self.entry_for(storage_key) else {
            return Ok(plain.to_vec());
        };
        self.seal_in(entry, storage_key, plain)
    }

    /// Seals with entry `entry`'s write key.
    pub fn seal_in(
        &self,
        entry: usize,
        storage_key: &str,
        plain: &[u8],
    ) -> Result<Vec<u8>, EncryptionError> {
        let e = &self.entries[entry];
        match e.write {
            Some(i) => e.keys[i].seal(storage_key, plain),
            None => Ok(plain.to_vec()),
        }
    }

    /// The plain form of a stored value. Plain values come back as they are; a sealed one
    /// opens with its named key (looked up in its entry first, then in every entry) or fails
    /// with an error saying why.
    pub fn open(&self, storage_key: &str, stored: Vec<u8>) -> Result<Vec<u8>, EncryptionError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored);
        };
        let error = |message: String| EncryptionError::Decrypt {
            key: storage_key.to_string(),
            message,
        };
        let mut parts = rest.splitn(4, |b| *b == b':');
        let (Some(provider), Some(version), Some(name), Some(body)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(error("the k8s:enc: prefix is cut short".into()));
        };
        let provider = String::from_utf8_lossy(provider);
        let name = String::from_utf8_lossy(name);
        if provider != AESGCM && provider != SECRETBOX {
            return Err(error(format!(
                "it is sealed by provider {provider:?}, which mini cannot read (it reads aesgcm and secretbox)"
            )));
        }
        if version != b"v1" {
            return Err(error(format!(
                "unknown {provider} format version {:?}",
                String::from_utf8_lossy(version)
            )));
        }
        let own = self.entry_for(storage_key);
        let key = own
            .into_iter()
            .chain(0..self.entries.len())
            .flat_map(|i| self.entries[i].keys.iter())
            .find(|k| k.provider == provider && k.name == name);
        match key {
            Some(key) => key.open(storage_key, body).map_err(error),
            None => Err(error(format!(
                "it is sealed with {provider} key {name:?}, which the encryption configuration does not hold; put that key back into the configuration's {provider} provider"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_KEY: &str = "/registry/core/secrets/default/db";

    fn keyring(json: &str) -> Keyring {
        Keyring::new(EncryptionConfiguration::parse(json, "test").unwrap(), true).unwrap()
    }

    fn gcm_ring() -> Keyring {
        keyring(
            r#"{"resources":[{"resources":["secrets"],"providers":[
            {"aesgcm":{"keys":[{"name":"new","secret":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="},
                               {"name":"old","secret":"MDEyMzQ1Njc4OWFiY2RlZg=="}]}},
            {"secretbox":{"keys":[{"name":"box","secret":"YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="}]}},
            {"identity":{}}]}]}"#,
        )
    }

    fn box_ring() -> Keyring {
        keyring(
            r#"{"resources":[{"resources":["secrets"],"providers":[
            {"secretbox":{"keys":[{"name":"box","secret":"YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY="}]}},
            {"aesgcm":{"keys":[{"name":"new","secret":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}]}}]}]}"#,
        )
    }

    #[test]
    fn seal_aesgcm_writes_upstream_prefix_nonce_and_tag_and_opens() {
        let ring = gcm_ring();
        let plain = br#"{"data":{"password":"aHVudGVyMg=="}}"#.to_vec();
        let sealed = ring.seal(SECRET_KEY, &plain).unwrap();
        let header = b"k8s:enc:aesgcm:v1:new:";
        assert!(sealed.starts_with(header));
        assert_eq!(sealed.len(), header.len() + GCM_NONCE + plain.len() + TAG);
        assert!(!sealed.windows(8).any(|w| w == b"password"));
        assert_eq!(
            Sealing::of(&sealed),
            Sealing::Key("aesgcm".into(), "new".into())
        );
        assert_eq!(ring.open(SECRET_KEY, sealed).unwrap(), plain);
    }

    #[test]
    fn seal_secretbox_writes_upstream_prefix_nonce_and_box_and_opens() {
        let ring = box_ring();
        let plain = b"{\"kind\":\"Secret\"}".to_vec();
        let sealed = ring.seal(SECRET_KEY, &plain).unwrap();
        let header = b"k8s:enc:secretbox:v1:box:";
        assert!(sealed.starts_with(header));
        assert_eq!(
            sealed.len(),
            header.len() + SECRETBOX_NONCE + TAG + plain.len()
        );
        assert_eq!(ring.open(SECRET_KEY, sealed.clone()).unwrap(), plain);
        // the other ring holds the same secretbox key (not first): it reads it too
        assert_eq!(gcm_ring().open(SECRET_KEY, sealed).unwrap(), plain);
    }

    #[test]
    fn seal_twice_uses_fresh_nonces() {
        let ring = gcm_ring();
        let a = ring.seal(SECRET_KEY, b"same").unwrap();
        let b = ring.seal(SECRET_KEY, b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn seal_uncovered_resource_stays_plain() {
        let ring = gcm_ring();
        let key = "/registry/core/configmaps/default/c";
        assert_eq!(ring.seal(key, b"{}").unwrap(), b"{}");
    }

    #[test]
    fn open_plain_value_returns_it_unchanged() {
        let ring = gcm_ring();
        assert_eq!(
            ring.open(SECRET_KEY, b"{\"a\":1}".to_vec()).unwrap(),
            b"{\"a\":1}"
        );
        assert_eq!(
            Keyring::empty().open(SECRET_KEY, b"{}".to_vec()).unwrap(),
            b"{}"
        );
    }

    #[test]
    fn open_older_key_of_the_ring_still_reads() {
        let old_only = keyring(
            r#"{"resources":[{"resources":["secrets"],"providers":[
            {"aesgcm":{"keys":[{"name":"old","secret":"MDEyMzQ1Njc4OWFiY2RlZg=="}]}}]}]}"#,
        );
        let sealed = old_only.seal(SECRET_KEY, b"v").unwrap();
        assert_eq!(gcm_ring().open(SECRET_KEY, sealed).unwrap(), b"v");
    }

    #[test]
    fn open_unknown_key_is_a_clear_error() {
        let foreign = keyring(
            r#"{"resources":[{"resources":["secrets"],"providers":[
            {"aesgcm":{"keys":[{"name":"gone","secret":"MDEyMzQ1Njc4OWFiY2RlZg=="}]}}]}]}"#,
        );
        let sealed = foreign.seal(SECRET_KEY, b"v").unwrap();
        let err = gcm_ring().open(SECRET_KEY, sealed).unwrap_err().to_string();
        assert!(err.contains("key \"gone\""), "{err}");
        assert!(err.contains(SECRET_KEY), "{err}");
        let err = Keyring::empty()
            .open(
                SECRET_KEY,
                b"k8s:enc:aesgcm:v1:x:0123456789abcdefghijklmnopqrstuv".to_vec(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("does not hold"), "{err}");
    }

    #[test]
    fn open_tampered_value_fails_authentication() {
        for ring in [gcm_ring(), box_ring()] {
            let mut sealed = ring.seal(SECRET_KEY, b"{\"x\":\"secret\"}").unwrap();
            let last = sealed.len() - 1;
            sealed[last] ^= 1;
            let err = ring.open(SECRET_KEY, sealed).unwrap_err().to_string();
            assert!(err.contains("does not authenticate"), "{err}");
            let short = ring.seal(SECRET_KEY, b"v").unwrap();
            let cut = short[..short.len() - 20].to_vec();
            assert!(ring.open(SECRET_KEY, cut).is_err());
        }
    }

    #[test]
    fn open_aesgcm_value_under_another_storage_key_fails() {
        let ring = gcm_ring();
        let sealed = ring.seal(SECRET_KEY, b"v").unwrap();
        let err = ring
            .open("/registry/core/secrets/default/other", sealed)
            .unwrap_err();
        assert!(err.to_string().contains("copied from another key"), "{err}");
    }

    #[test]
    fn open_unsupported_provider_names_it() {
        let err = gcm_ring()
            .open(SECRET_KEY, b"k8s:enc:kms:v2:k:abc".to_vec())
            .unwrap_err()
            .to_string();
        assert!(err.contains("provider \"kms\""), "{err}");
    }

    #[test]
    fn write_off_keeps_reading_but_writes_plain() {
        let config = gcm_ring().config().clone();
        let sealed = gcm_ring().seal(SECRET_KEY, b"v").unwrap();
        let off = Keyring::new(config, false).unwrap();
        assert_eq!(off.seal(SECRET_KEY, b"v").unwrap(), b"v");
        assert_eq!(off.open(SECRET_KEY, sealed).unwrap(), b"v");
        assert_eq!(off.write_sealing(0), Sealing::Plain);
    }

    #[test]
    fn patterns_match_resources_groups_and_all() {
        let ring = keyring(
            r#"{"resources":[
            {"resources":["events"],"providers":[{"identity":{}}]},
            {"resources":["secrets","deployments.apps"],"providers":[{"aesgcm":{"keys":[{"name":"a","secret":"MDEyMzQ1Njc4OWFiY2RlZg=="}]}}]},
            {"resources":["*.batch"],"providers":[{"aesgcm":{"keys":[{"name":"b","secret":"MDEyMzQ1Njc4OWFiY2RlZg=="}]}}]},
            {"resources":["*.*"],"providers":[{"aesgcm":{"keys":[{"name":"c","secret":"MDEyMzQ1Njc4OWFiY2RlZg=="}]}}]}]}"#,
        );
        assert_eq!(ring.entry_for("/registry/core/events/d/e"), Some(0));
        assert_eq!(ring.entry_for(SECRET_KEY), Some(1));
        assert_eq!(ring.entry_for("/registry/apps/deployments/d/x"), Some(1));
        assert_eq!(ring.entry_for("/registry/batch/jobs/d/x"), Some(2));
        assert_eq!(ring.entry_for("/registry/core/configmaps/d/x"), Some(3));
        assert_eq!(ring.entry_for("/other/key"), None);
        assert_eq!(ring.prefixes(), vec!["/registry/".to_string()]);
        assert!(ring.covers_prefix("/registry/core/pods/"));
    }

    #[test]
    fn prefixes_and_covers_for_secrets_only() {
        let ring = gcm_ring();
        assert_eq!(ring.prefixes(), vec!["/registry/core/secrets/".to_string()]);
        assert!(ring.covers_prefix("/registry/core/secrets/default/"));
        assert!(ring.covers_prefix("/registry/"));
        assert!(!ring.covers_prefix("/registry/core/pods/"));
        assert!(!ring.covers_prefix("/registry/core/secretsx/"));
    }
}

//! The snapshot file: a magic, a JSON header naming format, backend and revision, the
//! encryption keyring, every key-value at that revision, and a SHA-256 over all of it.
//!
//! Layout: `MINISNAP` · u32 header length · header JSON · u32 keyring length · keyring bytes
//! (empty when the cluster has none) · u64 record count · records (u32 key length · key · u64
//! create revision · u64 mod revision · u32 value length · value) · 32-byte SHA-256 of
//! everything before it. All integers are big-endian.

use mini_store::{KeyValue, Revision};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::SnapshotError;

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"MINISNAP";
/// The `format` every header carries.
pub const FORMAT: &str = "mini-snapshot";
/// The layout version this build writes and reads.
pub const VERSION: u32 = 1;
const CHECKSUM_LEN: usize = 32;

/// What a snapshot holds, readable without checking the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The store it was taken from: `sled` or `etcd`.
    pub backend: String,
    /// The store revision every key was read at.
    pub revision: Revision,
    /// When it was taken (RFC 3339, UTC).
    pub created: String,
    /// Its name without the timestamp (`on-demand`, `scheduled` or `--name`).
    pub name: String,
    pub keys: u64,
    /// The encryption keyring (`encryption-config.json`) is included.
    pub keyring: bool,
}

/// A whole snapshot in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub header: Header,
    /// The encryption keyring file's bytes, if the cluster had one.
    pub keyring: Option<Vec<u8>>,
    pub items: Vec<KeyValue>,
}

impl Snapshot {
    /// A snapshot of `items` read at `revision` from `backend`, taken now.
    pub fn new(
        backend: &str,
        name: &str,
        revision: Revision,
        keyring: Option<Vec<u8>>,
        items: Vec<KeyValue>,
    ) -> Snapshot {
        Snapshot {
            header: Header {
                format: FORMAT.to_string(),
                version: VERSION,
                backend: backend.to_string(),
                revision,
                created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                name: name.to_string(),
                keys: items.len() as u64,
                keyring: keyring.is_some(),
            },
            keyring,
            items,
        }
    }

    /// The file's bytes, checksum included.
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        let header = serde_json::to_vec(&self.header)
            .map_err(|e| SnapshotError::Format(format!("encoding the header: {e}")))?;
        let values: usize = self
            .items
            .iter()
            .map(|kv| kv.key.len() + kv.value.len() + 24)
            .sum();
        let mut out = Vec::with_capacity(64 + header.len() + values);
        out.extend_from_slice(MAGIC);
        put_bytes(&mut out, &header)?;
        put_bytes(&mut out, self.keyring.as_deref().unwrap_or_default())?;
        out.extend_from_slice(&(self.items.len() as u64).to_be_bytes());
        for kv in &self.items {
            put_bytes(&mut out, kv.key.as_bytes())?;
            out.extend_from_slice(&kv.create_revision.to_be_bytes());
            out.extend_from_slice(&kv.mod_revision.to_be_bytes());
            put_bytes(&mut out, &kv.value)?;
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    /// Checks and parses a whole file: refused unless it is a mini snapshot of a known version
    /// whose checksum matches and whose records fill it exactly.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        if !bytes.starts_with(MAGIC) {
            return Err(SnapshotError::Foreign);
        }
        if bytes.len() < MAGIC.len() + CHECKSUM_LEN {
            return Err(SnapshotError::Corrupt("the file is truncated".to_string()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != sum {
            return Err(SnapshotError::Corrupt(
                "its checksum does not match its contents".to_string(),
            ));
        }
        let mut reader = Reader {
            bytes: body,
            at: MAGIC.len(),
        };
        let header = parse_header(reader.bytes()?)?;
        let keyring = reader.bytes()?;
        let keyring = (!keyring.is_empty()).then(|| keyring.to_vec());
        if keyring.is_some() != header.keyring {
            return Err(SnapshotError::Corrupt(
                "the header and the keyring disagree".to_string(),
            ));
        }
        let count = reader.u64()?;
        if count != header.keys {
            return Err(SnapshotError::Corrupt(format!(
                "the header says {} keys, the file holds {count}",
                header.keys
            )));
        }
        let mut items = Vec::new();
        for _ in 0..count {
            let key = std::str::from_utf8(reader.bytes()?)
                .map_err(|_| SnapshotError::Corrupt("a key is not utf-8".to_string()))?
                .to_string();
            let create_revision = reader.u64()?;
            let mod_revision = reader.u64()?;
            let value = reader.bytes()?.to_vec();
            items.push(KeyValue {
                key,
                value,
                create_revision,
                mod_revision,
            });
        }
        if reader.at != body.len() {
            return Err(SnapshotError::Corrupt(
                "bytes follow the last record".to_string(),
            ));
        }
        Ok(Snapshot {
            header,
            keyring,
            items,
        })
    }
}

/// The header of a snapshot file from its first bytes, without checking the rest (for
/// listing); [`Snapshot::decode`] checks everything.
pub fn read_header(start: &[u8]) -> Result<Header, SnapshotError> {
    if !start.starts_with(MAGIC) {
        return Err(SnapshotError::Foreign);
    }
    let mut reader = Reader {
        bytes: start,
        at: MAGIC.len(),
    };
    parse_header(reader.bytes()?)
}

fn parse_header(bytes: &[u8]) -> Result<Header, SnapshotError> {
    let header: Header = serde_json::from_slice(bytes)
        .map_err(|e| SnapshotError::Corrupt(format!("the header is not readable: {e}")))?;
    if header.format != FORMAT {
        return Err(SnapshotError::Foreign);
    }
    if header.version != VERSION {
        return Err(SnapshotError::Format(format!(
            "snapshot format version {} is not supported (this build reads version {VERSION}); restore it with the mini release that took it",
            header.version
        )));
    }
    Ok(header)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), SnapshotError> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| SnapshotError::Format("a value larger than 4 GiB".to_string()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| SnapshotError::Corrupt("the file is truncated".to_string()))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let raw = self.take(8)?;
        Ok(u64::from_be_bytes(raw.try_into().unwrap_or([0; 8])))
    }

    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let raw = self.take(4)?;
        let len = u32::from_be_bytes(raw.try_into().unwrap_or([0; 4]));
        self.take(len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot::new(
            "sled",
            "on-demand",
            42,
            Some(b"{\"kind\":\"EncryptionConfiguration\"}".to_vec()),
            vec![
                KeyValue {
                    key: "/registry/configmaps/default/a".to_string(),
                    value: b"one".to_vec(),
                    create_revision: 3,
                    mod_revision: 7,
                },
                KeyValue {
                    key: "/registry/secrets/default/s".to_string(),
                    value: b"k8s:enc:aesgcm:v1:key1:sealed".to_vec(),
                    create_revision: 40,
                    mod_revision: 42,
                },
            ],
        )
    }

    #[test]
    fn encode_decode_round_trip_keeps_everything() {
        let snapshot = sample();
        let bytes = snapshot.encode().unwrap();
        assert_eq!(Snapshot::decode(&bytes).unwrap(), snapshot);
        assert_eq!(read_header(&bytes).unwrap(), snapshot.header);
    }

    #[test]
    fn decode_without_keyring_round_trips() {
        let mut snapshot = sample();
        snapshot.keyring = None;
        snapshot.header.keyring = false;
        let bytes = snapshot.encode().unwrap();
        assert_eq!(Snapshot::decode(&bytes).unwrap().keyring, None);
    }

    #[test]
    fn decode_flipped_byte_is_refused_as_corrupt() {
        let mut bytes = sample().encode().unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        let err = Snapshot::decode(&bytes).unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt(_)), "{err}");
    }

    #[test]
    fn decode_truncated_file_is_refused_as_corrupt() {
        let bytes = sample().encode().unwrap();
        for len in [9, 40, bytes.len() - 1] {
            let err = Snapshot::decode(&bytes[..len]).unwrap_err();
            assert!(matches!(err, SnapshotError::Corrupt(_)), "{len}: {err}");
        }
    }

    #[test]
    fn decode_foreign_file_is_refused_as_foreign() {
        let err =
            Snapshot::decode(b"SQLite format 3\0 and more bytes than a checksum").unwrap_err();
        assert!(matches!(err, SnapshotError::Foreign), "{err}");
        let err = read_header(b"{\"kind\":\"List\"}").unwrap_err();
        assert!(matches!(err, SnapshotError::Foreign), "{err}");
    }

    #[test]
    fn decode_other_format_in_header_is_refused_as_foreign() {
        let mut snapshot = sample();
        snapshot.header.format = "other-tool".to_string();
        let bytes = snapshot.encode().unwrap();
        assert!(matches!(
            Snapshot::decode(&bytes).unwrap_err(),
            SnapshotError::Foreign
        ));
    }

    #[test]
    fn decode_newer_version_is_refused_naming_it() {
        let mut snapshot = sample();
        snapshot.header.version = 2;
        let err = Snapshot::decode(&snapshot.encode().unwrap()).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn decode_wrong_key_count_is_refused_as_corrupt() {
        let mut snapshot = sample();
        snapshot.header.keys = 3;
        let err = Snapshot::decode(&snapshot.encode().unwrap()).unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt(_)), "{err}");
    }
}

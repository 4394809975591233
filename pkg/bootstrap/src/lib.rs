//! What every server of one cluster must hold identically — the cluster CA and its key, the
//! service-account signing key, the secrets-encryption keyring — shared through the datastore the
//! way k3s shares its bootstrap data: one record at [`KEY`], sealed with AES-256-GCM under a key
//! derived from the join token's secret by argon2id. A server loads it before it makes its PKI
//! ([`load`]: missing files are written, a newer copy replaces an older one, a different CA is
//! refused) and saves what it has once its files exist ([`save`]: the first server creates the
//! record, a newer local file — a rotated keyring — updates it). Nothing is copied by hand and
//! the datastore never holds these keys in the clear.

mod seal;
mod shared;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use mini_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

pub use seal::{open, seal, Sealed};
pub use shared::{Shared, WriterWait, WRITERS_PREFIX};

/// The datastore key of the sealed record (outside `/registry/`: not an API object).
pub const KEY: &str = "/mini/bootstrap/data";

/// A file every server must hold identically, relative to `<data-dir>/server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFile {
    pub path: &'static str,
    pub mode: u32,
    /// Part of the cluster's identity: a server holding a different one belongs to another
    /// cluster and is refused, never overwritten.
    pub identity: bool,
}

/// The files servers share.
pub const SHARED_FILES: &[SharedFile] = &[
    SharedFile {
        path: "tls/ca.crt",
        mode: 0o644,
        identity: true,
    },
    SharedFile {
        path: "tls/ca.key",
        mode: 0o600,
        identity: true,
    },
    SharedFile {
        path: "tls/service-account.key",
        mode: 0o600,
        identity: false,
    },
    SharedFile {
        path: "cred/encryption-config.json",
        mode: 0o600,
        identity: false,
    },
    // a CA rotation: the old CA still trusted, the new one cross-signed by it, the overlap's end
    SharedFile {
        path: CA_PREVIOUS,
        mode: 0o644,
        identity: false,
    },
    SharedFile {
        path: "tls/ca-cross.crt",
        mode: 0o644,
        identity: false,
    },
    SharedFile {
        path: "tls/rotation.json",
        mode: 0o644,
        identity: false,
    },
];

const CA_CERT: &str = "tls/ca.crt";
const CA_PREVIOUS: &str = "tls/ca-previous.crt";

/// How the datastore's CA stands to this server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CaRelation {
    /// The same CA (or one side has none yet).
    Same,
    /// The datastore's CA is a rotation of ours (its previous CA is our CA).
    StoredNewer,
    /// Ours is a rotation of the datastore's (our previous CA is its CA).
    LocalNewer,
    /// Unrelated: another cluster.
    Foreign,
}

fn ca_relation(plain: &Plain, server_dir: &Path) -> Result<CaRelation, BootstrapError> {
    let stored = |path: &str| -> Result<Option<Vec<u8>>, BootstrapError> {
        plain.files.get(path).map(|f| decode(path, f)).transpose()
    };
    let local = |path: &str| -> Result<Option<Vec<u8>>, BootstrapError> {
        Ok(read_local(&server_dir.join(path))?.map(|(b, _)| b))
    };
    let (Some(stored_ca), Some(local_ca)) = (stored(CA_CERT)?, local(CA_CERT)?) else {
        return Ok(CaRelation::Same);
    };
    if stored_ca == local_ca {
        return Ok(CaRelation::Same);
    }
    if stored(CA_PREVIOUS)?.as_deref() == Some(local_ca.as_slice()) {
        return Ok(CaRelation::StoredNewer);
    }
    if local(CA_PREVIOUS)?.as_deref() == Some(stored_ca.as_slice()) {
        return Ok(CaRelation::LocalNewer);
    }
    Ok(CaRelation::Foreign)
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("the token does not open the cluster's bootstrap data in the datastore: use the token of the first server (<data-dir>/server/token on it)")]
    WrongToken,
    #[error("the datastore holds no cluster yet: start the first server without --server, then join the others to it")]
    NoCluster,
    #[error("{path} differs from the cluster's copy in the datastore: this data directory belongs to another cluster; start with an empty --data-dir to join this one")]
    ForeignCluster { path: String },
    #[error("the bootstrap data in the datastore is not understood ({0}); it was written by a newer mini or is damaged")]
    Corrupt(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading or writing the bootstrap data in the datastore failed: {0}")]
    Store(#[from] StoreError),
    #[error("sealing the bootstrap data failed: {0}")]
    Seal(String),
    #[error("servers {0} still write with other keys: they did not pick up the keyring; check that they reach the datastore")]
    Lagging(String),
}

/// One shared file as stored: its bytes and when it last changed (unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredFile {
    content: String,
    updated: i64,
}

/// The sealed plaintext.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Plain {
    files: BTreeMap<String, StoredFile>,
}

/// What [`load`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The datastore held a cluster's bootstrap data.
    pub found: bool,
    /// The files written from it (relative paths).
    pub written: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError + '_ {
    move |source| BootstrapError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A local file: its bytes and modification time (unix milliseconds).
fn read_local(path: &Path) -> Result<Option<(Vec<u8>, i64)>, BootstrapError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let modified = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .map_err(io_err(path))?;
            let millis = modified
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            Ok(Some((bytes, millis)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Sets `path`'s modification time to `millis` (unix milliseconds).
fn set_modified(path: &Path, millis: i64) -> Result<(), BootstrapError> {
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(0));
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(at))
        .map_err(io_err(path))
}

/// Writes `bytes` to `path` through a temporary file and a rename, with `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BootstrapError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent() {
        // like the PKI's own directories: private to the server
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err(parent))?;
    }
    let tmp = path.with_extension("bootstrap-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// The stored record, opened with `secret`; `None` when the datastore holds none.
async fn fetch(
    store: &dyn Store,
    secret: &str,
) -> Result<Option<(Plain, mini_store::Revision)>, BootstrapError> {
    let Some(kv) = store.get(KEY).await? else {
        return Ok(None);
    };
    let sealed: Sealed =
        serde_json::from_slice(&kv.value).map_err(|e| BootstrapError::Corrupt(e.to_string()))?;
    let plain = open(&sealed, secret)?;
    let plain: Plain =
        serde_json::from_slice(&plain).map_err(|e| BootstrapError::Corrupt(e.to_string()))?;
    Ok(Some((plain, kv.mod_revision)))
}

fn decode(path: &str, file: &StoredFile) -> Result<Vec<u8>, BootstrapError> {
    b64()
        .decode(&file.content)
        .map_err(|e| BootstrapError::Corrupt(format!("{path}: {e}")))
}

/// Brings the shared files of `server_dir` in line with the datastore's record before the
/// server makes its PKI and keyring: a missing file is written, a newer stored copy replaces
/// the local one, a different CA is refused. `joining` (`--server` given): a datastore without
/// a record is an error rather than a new cluster.
pub async fn load(
    store: &dyn Store,
    server_dir: &Path,
    secret: &str,
    joining: bool,
) -> Result<Loaded, BootstrapError> {
    let Some((plain, _)) = fetch(store, secret).await? else {
        if joining {
            return Err(BootstrapError::NoCluster);
        }
        return Ok(Loaded::default());
    };
    apply(&plain, server_dir)
}

/// Writes the stored files of `plain` that are newer than this server's copies.
fn apply(plain: &Plain, server_dir: &Path) -> Result<Loaded, BootstrapError> {
    let mut loaded = Loaded {
        found: true,
        written: Vec::new(),
    };
    let relation = ca_relation(plain, server_dir)?;
    for shared in SHARED_FILES {
        let Some(stored) = plain.files.get(shared.path) else {
            continue;
        };
        let bytes = decode(shared.path, stored)?;
        let path: PathBuf = server_dir.join(shared.path);
        match read_local(&path)? {
            Some((local, _)) if local == bytes => {}
            Some(_) if shared.identity && relation == CaRelation::LocalNewer => {}
            Some(_) if shared.identity && relation != CaRelation::StoredNewer => {
                return Err(BootstrapError::ForeignCluster {
                    path: path.display().to_string(),
                })
            }
            Some((_, modified)) if !shared.identity && modified >= stored.updated => {
                tracing::info!(path = %path.display(), "this server's copy is newer than the datastore's; it will be shared");
            }
            _ => {
                write_atomic(&path, &bytes, shared.mode)?;
                // the copy carries the record's time, not this machine's: a later change on any
                // server stays newer whatever the clocks say
                set_modified(&path, stored.updated)?;
                tracing::info!(path = %path.display(), "written from the cluster's bootstrap data");
                loaded.written.push(shared.path.to_string());
            }
        }
    }
    Ok(loaded)
}

/// Shares this server's files: creates the record when the datastore has none, or updates the
/// entries whose local copy changed after the stored one. Returns whether it wrote.
pub async fn save(
    store: &dyn Store,
    server_dir: &Path,
    secret: &str,
) -> Result<bool, BootstrapError> {
    // a concurrent writer (another server saving at the same moment) means: read again, merge
    for _ in 0..5 {
        let current = fetch(store, secret).await?;
        let mut plain = current.as_ref().map(|(p, _)| p.clone()).unwrap_or_default();
        let relation = ca_relation(&plain, server_dir)?;
        let mut changed = false;
        for shared in SHARED_FILES {
            let path = server_dir.join(shared.path);
            let Some((bytes, modified)) = read_local(&path)? else {
                continue;
            };
            let newer = match plain.files.get(shared.path) {
                None => true,
                Some(stored) => {
                    let same = decode(shared.path, stored)? == bytes;
                    if !same && shared.identity {
                        match relation {
                            // a CA rotated here: shared, whatever the clocks say
                            CaRelation::LocalNewer => true,
                            CaRelation::StoredNewer | CaRelation::Same => false,
                            CaRelation::Foreign => {
                                return Err(BootstrapError::ForeignCluster {
                                    path: path.display().to_string(),
                                })
                            }
                        }
                    } else {
                        !same && modified > stored.updated
                    }
                }
            };
            if newer {
                plain.files.insert(
                    shared.path.to_string(),
                    StoredFile {
                        content: b64().encode(&bytes),
                        updated: modified,
                    },
                );
                changed = true;
            }
        }
        if !changed {
            return Ok(false);
        }
        let bytes = serde_json::to_vec(&plain).map_err(|e| BootstrapError::Seal(e.to_string()))?;
        let sealed = serde_json::to_vec(&seal(&bytes, secret)?)
            .map_err(|e| BootstrapError::Seal(e.to_string()))?;
        let written = match current {
            None => store.create(KEY, sealed).await.map(|_| ()),
            Some((_, revision)) => store.update(KEY, sealed, Some(revision)).await.map(|_| ()),
        };
        match written {
            Ok(()) => {
                tracing::info!("the cluster's bootstrap data in the datastore is up to date");
                return Ok(true);
            }
            Err(StoreError::AlreadyExists { .. } | StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(BootstrapError::Store(StoreError::Backend(
        "the bootstrap record kept changing under five tries; start the server again".into(),
    )))
}

#[cfg(test)]
mod tests;

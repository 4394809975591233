//! Blob bytes on disk: content-addressed files under `blobs/`, upload files under `uploads/`, written
//! through temp file + fsync + rename so a blob is visible only once complete and verified.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::names::{Algorithm, Digest};
use crate::RegistryError;

/// Write buffer for streamed bodies.
const WRITE_BUFFER: usize = 1 << 20;

/// The directory layout under the registry root.
#[derive(Debug, Clone)]
pub struct Disk {
    pub root: PathBuf,
}

impl Disk {
    pub async fn init(root: &Path) -> Result<Disk, RegistryError> {
        for dir in ["blobs/sha256", "blobs/sha512", "uploads"] {
            let p = root.join(dir);
            tokio::fs::create_dir_all(&p)
                .await
                .map_err(|e| RegistryError::io(format!("creating {}", p.display()), e))?;
        }
        Ok(Disk {
            root: root.to_path_buf(),
        })
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm.name())
            .join(&d.hex[..2])
            .join(&d.hex)
    }

    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    /// The blob's size when it is stored.
    pub async fn blob_size(&self, d: &Digest) -> Option<u64> {
        tokio::fs::metadata(self.blob_path(d))
            .await
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    pub async fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, RegistryError> {
        let p = self.blob_path(d);
        tokio::fs::read(&p)
            .await
            .map_err(|e| RegistryError::io(format!("reading {}", p.display()), e))
    }

    /// Moves a complete, verified file into the blob store (fsync file, rename, fsync dir).
    /// When the blob already exists the file is dropped and the stored blob's mtime refreshed
    /// (so GC's grace period counts from this push).
    pub async fn commit_file(&self, file: &Path, d: &Digest) -> Result<(), RegistryError> {
        let dest = self.blob_path(d);
        let file = file.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<(), RegistryError> {
            let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
            if dest.is_file() {
                let _ = std::fs::remove_file(&file);
                let f = std::fs::File::options()
                    .write(true)
                    .open(&dest)
                    .map_err(|e| RegistryError::io(ctx("opening", &dest), e))?;
                f.set_modified(std::time::SystemTime::now())
                    .map_err(|e| RegistryError::io(ctx("touching", &dest), e))?;
                return Ok(());
            }
            let f = std::fs::File::open(&file)
                .map_err(|e| RegistryError::io(ctx("opening", &file), e))?;
            f.sync_all()
                .map_err(|e| RegistryError::io(ctx("syncing", &file), e))?;
            let dir = dest.parent().unwrap_or(Path::new("/")).to_path_buf();
            std::fs::create_dir_all(&dir)
                .map_err(|e| RegistryError::io(ctx("creating", &dir), e))?;
            std::fs::rename(&file, &dest)
                .map_err(|e| RegistryError::io(ctx("renaming into", &dest), e))?;
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })
        .await
        .map_err(|e| RegistryError::io("blob commit task", io::Error::other(e)))?
    }

    /// Stores small in-memory content (manifests, configs) under its digest.
    pub async fn write_blob(&self, d: &Digest, data: &[u8]) -> Result<(), RegistryError> {
        if self.blob_size(d).await == Some(data.len() as u64) {
            return self.commit_file(&self.upload_path("unused"), d).await;
        }
        let tmp = self.upload_path(&format!("tmp-{}", uuid::Uuid::new_v4()));
        if let Err(e) = tokio::fs::write(&tmp, data).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(RegistryError::io(format!("writing {}", tmp.display()), e));
        }
        let r = self.commit_file(&tmp, d).await;
        if r.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        r
    }
}

/// A running digest over an upload file.
#[derive(Clone)]
pub struct RunningHash {
    pub sha256: sha2::Sha256,
    pub offset: u64,
}

impl RunningHash {
    pub fn new() -> Self {
        RunningHash {
            sha256: sha2::Sha256::new(),
            offset: 0,
        }
    }

    /// Recomputes the hash from the upload file (after a restart); offset = file size.
    pub async fn from_file(path: &Path) -> io::Result<RunningHash> {
        let mut f = tokio::fs::File::open(path).await?;
        let mut h = RunningHash::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                return Ok(h);
            }
            h.sha256.update(&buf[..n]);
            h.offset += n as u64;
        }
    }

    pub fn digest(&self) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(self.sha256.clone().finalize()),
        }
    }
}

impl Default for RunningHash {
    fn default() -> Self {
        Self::new()
    }
}

/// Why appending a body to an upload failed.
#[derive(Debug)]
pub enum AppendError {
    /// Writing to disk failed (the file was truncated back to where it was).
    Disk(io::Error),
    /// Reading the request body failed (the client went away); the file was truncated back.
    Body(io::Error),
}

/// Appends a streamed body to the upload file at `hash.offset`, hashing while writing. On any error
/// the file is truncated back to the previous offset so the session stays consistent.
pub async fn append_body<B>(
    path: &Path,
    hash: &mut RunningHash,
    mut body: B,
) -> Result<u64, AppendError>
where
    B: http_body::Body<Data = Bytes, Error = io::Error> + Unpin,
{
    let start = hash.offset;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .await
        .map_err(AppendError::Disk)?;
    file.seek(io::SeekFrom::Start(start))
        .await
        .map_err(AppendError::Disk)?;
    let mut writer = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut next = hash.clone();
    let result: Result<(), AppendError> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(AppendError::Body)?;
            if let Ok(data) = frame.into_data() {
                writer.write_all(&data).await.map_err(AppendError::Disk)?;
                next.sha256.update(&data);
                next.offset += data.len() as u64;
            }
        }
        writer.flush().await.map_err(AppendError::Disk)?;
        Ok(())
    }
    .await;
    let mut file = writer.into_inner();
    match result {
        Ok(()) => {
            *hash = next;
            Ok(hash.offset - start)
        }
        Err(e) => {
            let _ = file.set_len(start).await;
            let _ = file.flush().await;
            Err(e)
        }
    }
}

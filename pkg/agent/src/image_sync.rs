//! Air-gap image sync: after joining, the agent fetches the image tarballs the server re-serves
//! at `/v1-mini/images` that it does not have yet into its own `<data-dir>/agent/images`, where
//! the image importer's directory watcher imports them. So only one machine of an air-gapped
//! cluster ever needs the bundle.
//!
//! A download goes to a hidden `.<name>.part` file (the importer skips hidden files), is
//! checked against the listed size and sha256, synced and then renamed into place.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::join::{send_request, status_message};
use crate::AgentError;

/// Where the server lists its image tarballs.
pub const IMAGES_PATH: &str = "/v1-mini/images";
/// How often the list is fetched again (images dropped on the server later still arrive).
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// A download stalling this long between two chunks is abandoned (and retried next round).
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// One tarball the server offers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RemoteImage {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Deserialize)]
struct ImageList {
    images: Vec<RemoteImage>,
}

/// Fetches the server's image tarballs into `dir`.
pub struct ImageSync {
    pub server_url: String,
    /// The whole join token string: the server accepts it as the bearer.
    pub token: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub dir: PathBuf,
    /// sha256 of local files already checked, by name, with the size and mtime then.
    checked: HashMap<String, (u64, i128, String)>,
}

impl std::fmt::Debug for ImageSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageSync")
            .field("server_url", &self.server_url)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A name the agent writes: one path component, not hidden.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.contains('\0')
}

fn io_err(path: &Path, e: std::io::Error) -> AgentError {
    crate::fsutil::io_err(path, e)
}

fn sha256_file(path: &Path) -> Result<String, AgentError> {
    let mut file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| io_err(path, e))?;
    Ok(hex::encode(hasher.finalize()))
}

impl ImageSync {
    pub fn new(
        server_url: String,
        token: String,
        tls: Arc<rustls::ClientConfig>,
        dir: PathBuf,
    ) -> Self {
        ImageSync {
            server_url,
            token,
            tls,
            dir,
            checked: HashMap::new(),
        }
    }

    /// Syncs now, then every [`RESYNC_INTERVAL`] until `shutdown`; failures are logged and
    /// retried next round.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            match self.sync_once().await {
                Ok(fetched) => {
                    for name in fetched {
                        tracing::info!(
                            image_tarball = name,
                            "fetched an air-gap image tarball from the server"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "syncing the server's air-gap images failed; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RESYNC_INTERVAL) => {}
            }
        }
    }

    /// Fetches the list and downloads what is missing here; returns the names downloaded.
    pub async fn sync_once(&mut self) -> Result<Vec<String>, AgentError> {
        let response = send_request(
            self.tls.clone(),
            &self.server_url,
            Method::GET,
            IMAGES_PATH,
            Some(&self.token),
            Bytes::new(),
        )
        .await?;
        let status = response.status();
        let body = tokio::time::timeout(CHUNK_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| AgentError::Join(format!("reading {IMAGES_PATH}: timed out")))?
            .map_err(|e| AgentError::Join(format!("reading {IMAGES_PATH}: {e}")))?
            .to_bytes();
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(AgentError::Join(format!(
                "GET {IMAGES_PATH} answered {status}: {}",
                status_message(&body)
            )));
        }
        let list: ImageList = serde_json::from_slice(&body)
            .map_err(|e| AgentError::Join(format!("decoding {IMAGES_PATH}: {e}")))?;
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let mut fetched = Vec::new();
        for image in list.images {
            if !valid_name(&image.name) {
                tracing::warn!(
                    name = image.name,
                    "the server lists an image tarball with an unusable name; skipped"
                );
                continue;
            }
            if self.have(&image)? {
                continue;
            }
            self.download(&image).await?;
            fetched.push(image.name);
        }
        Ok(fetched)
    }

    /// Whether `dir/<name>` already holds exactly this tarball.
    fn have(&mut self, image: &RemoteImage) -> Result<bool, AgentError> {
        let path = self.dir.join(&image.name);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&path, e)),
        };
        let (size, mtime) = mini_images::state::stat_fingerprint(&meta);
        if size != image.size {
            return Ok(false);
        }
        let sha = match self.checked.get(&image.name) {
            Some((s, m, sha)) if *s == size && *m == mtime => sha.clone(),
            _ => {
                let sha = sha256_file(&path)?;
                self.checked
                    .insert(image.name.clone(), (size, mtime, sha.clone()));
                sha
            }
        };
        Ok(sha.eq_ignore_ascii_case(&image.sha256))
    }

    /// Streams `GET /v1-mini/images/<name>` into a hidden part file, verifies, renames.
    async fn download(&mut self, image: &RemoteImage) -> Result<(), AgentError> {
        let path = format!("{IMAGES_PATH}/{}", image.name);
        let response = send_request(
            self.tls.clone(),
            &self.server_url,
            Method::GET,
            &path,
            Some(&self.token),
            Bytes::new(),
        )
        .await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let text = tokio::time::timeout(CHUNK_TIMEOUT, body.collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| status_message(&b.to_bytes()))
                .unwrap_or_default();
            return Err(AgentError::Join(format!(
                "GET {path} answered {status}: {text}"
            )));
        }
        let mut part = PartFile::create(&self.dir, &image.name)?;
        loop {
            let frame = tokio::time::timeout(CHUNK_TIMEOUT, body.frame())
                .await
                .map_err(|_| AgentError::Join(format!("GET {path}: stalled")))?;
            match frame {
                None => break,
                Some(Err(e)) => return Err(AgentError::Join(format!("GET {path}: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        part.write(&data)?;
                    }
                }
            }
        }
        let done = part.finish(image)?;
        self.checked.insert(image.name.clone(), done);
        Ok(())
    }
}

/// A download in progress: `.<name>.part`, removed unless [`PartFile::finish`] renamed it.
struct PartFile {
    tmp: PathBuf,
    target: PathBuf,
    file: Option<std::fs::File>,
    hasher: Sha256,
    size: u64,
}

impl PartFile {
    fn create(dir: &Path, name: &str) -> Result<Self, AgentError> {
        let tmp = dir.join(format!(".{name}.part"));
        let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        Ok(PartFile {
            target: dir.join(name),
            tmp,
            file: Some(file),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), AgentError> {
        if let Some(f) = self.file.as_mut() {
            f.write_all(data).map_err(|e| io_err(&self.tmp, e))?;
        }
        self.hasher.update(data);
        self.size += data.len() as u64;
        Ok(())
    }

    /// Checks size and sha256 against `want`, syncs and renames into place; returns the
    /// fingerprint and sha256 of the file in place.
    fn finish(mut self, want: &RemoteImage) -> Result<(u64, i128, String), AgentError> {
        let sha = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if self.size != want.size || !sha.eq_ignore_ascii_case(&want.sha256) {
            return Err(AgentError::Join(format!(
                "image tarball {} from the server is corrupt: got {} bytes with sha256 {sha}, the list says {} bytes with sha256 {}",
                want.name, self.size, want.size, want.sha256
            )));
        }
        let file = self.file.take().expect("file open until finish");
        file.sync_all().map_err(|e| io_err(&self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.target).map_err(|e| io_err(&self.target, e))?;
        let meta = std::fs::metadata(&self.target).map_err(|e| io_err(&self.target, e))?;
        let (size, mtime) = mini_images::state::stat_fingerprint(&meta);
        Ok((size, mtime, sha))
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(name: &str, data: &[u8]) -> RemoteImage {
        RemoteImage {
            name: name.into(),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        }
    }

    #[test]
    fn part_file_matching_content_is_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut part = PartFile::create(dir.path(), "a.tar").unwrap();
        part.write(b"hello ").unwrap();
        part.write(b"world").unwrap();
        part.finish(&remote("a.tar", b"hello world")).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a.tar")).unwrap(),
            b"hello world"
        );
        assert!(!dir.path().join(".a.tar.part").exists());
    }

    #[test]
    fn part_file_corrupt_content_is_refused_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut part = PartFile::create(dir.path(), "a.tar").unwrap();
        part.write(b"hello").unwrap();
        let err = part.finish(&remote("a.tar", b"hellO")).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert!(!dir.path().join("a.tar").exists());
        assert!(!dir.path().join(".a.tar.part").exists());
    }

    #[test]
    fn have_checks_size_and_sha256_of_the_local_file() {
        let dir = tempfile::tempdir().unwrap();
        let tls =
            crate::join::verified_tls(mini_certs::CertAuthority::generate("t").unwrap().cert_pem())
                .unwrap();
        let mut sync = ImageSync::new(
            "https://127.0.0.1:1".into(),
            "t".into(),
            tls,
            dir.path().to_path_buf(),
        );
        let img = remote("x.tar", b"content");
        assert!(!sync.have(&img).unwrap());
        std::fs::write(dir.path().join("x.tar"), b"content").unwrap();
        assert!(sync.have(&img).unwrap());
        std::fs::write(dir.path().join("x.tar"), b"CONTENT").unwrap();
        let mut fresh = ImageSync::new(
            sync.server_url.clone(),
            "t".into(),
            sync.tls.clone(),
            dir.path().to_path_buf(),
        );
        assert!(!fresh.have(&img).unwrap());
    }

    #[test]
    fn valid_name_rejects_hidden_and_nested_names() {
        assert!(valid_name("app.tar"));
        for bad in ["", ".x", "a/b"] {
            assert!(!valid_name(bad));
        }
    }
}

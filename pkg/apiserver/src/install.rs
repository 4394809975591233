//! The install endpoints on the API port: `GET /install.sh` (no authentication), the running
//! binary at `GET /v1-mini/binary` (+ `.sha256`), and the air-gap image tarballs the server
//! has at `GET /v1-mini/images` (a JSON list) and `GET /v1-mini/images/<name>`.
//!
//! Everything but `/install.sh` needs `Authorization: Bearer <join token>` with the whole
//! token string (`K10<hash>::server:<secret>` or `K10<hash>::<id>.<secret>`); anything else is
//! answered 401. The installer checks the CA against the token's hash before it trusts these
//! downloads, so the token both pins the server and authorises the download.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use mini_api::ApiError;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::body::{self, Body};
use crate::ApiServer;

/// The installer script, served without authentication.
pub const INSTALL_SCRIPT: &str = include_str!("../../../install.sh");
/// Path of the installer script.
pub const INSTALL_PATH: &str = "/install.sh";
/// Path of the running binary.
pub const BINARY_PATH: &str = "/v1-mini/binary";
/// Path of the running binary's checksum line (`<hex>  mini\n`).
pub const BINARY_SHA_PATH: &str = "/v1-mini/binary.sha256";
/// Path of the image list; `<IMAGES_PATH>/<name>` is one tarball.
pub const IMAGES_PATH: &str = "/v1-mini/images";

/// Whether `path` is one of this module's endpoints.
pub(crate) fn handles(path: &str) -> bool {
    path == INSTALL_PATH
        || path == BINARY_PATH
        || path == BINARY_SHA_PATH
        || path == IMAGES_PATH
        || path.starts_with("/v1-mini/images/")
}

/// Answers a request for one of [`handles`]' paths.
pub(crate) async fn handle(
    server: &ApiServer,
    req: &Request<Bytes>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::method_not_allowed(format!(
            "{path} only accepts GET"
        )));
    }
    if path == INSTALL_PATH {
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8")
            .body(body::full(INSTALL_SCRIPT))
            .expect("valid response"));
    }
    let Some(token) = crate::auth::bearer(req.headers()) else {
        return Err(ApiError::new(
            401,
            "Unauthorized",
            format!("{path} needs Authorization: Bearer <join token>"),
        ));
    };
    match crate::auth::authenticate_join_token(server, token).await {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(e),
        None => {
            return Err(ApiError::new(
                401,
                "Unauthorized",
                format!("{path}: the bearer token is not a valid join token"),
            ))
        }
    }
    match path {
        BINARY_PATH | BINARY_SHA_PATH => {
            let Some(binary) = server.inner.config.binary_path.clone() else {
                return Err(not_served("this server does not serve its binary"));
            };
            let digest = file_digest(&binary).await?;
            if path == BINARY_SHA_PATH {
                return Ok(body::text(
                    StatusCode::OK,
                    format!("{}  mini\n", digest.sha256),
                ));
            }
            stream_file(&binary, digest.size).await
        }
        IMAGES_PATH => {
            let list = list_images(server).await?;
            let items: Vec<_> = list
                .iter()
                .map(|(name, d)| json!({"name": name, "size": d.size, "sha256": d.sha256}))
                .collect();
            Ok(body::json(StatusCode::OK, &json!({"images": items})))
        }
        _ => {
            let name = path.trim_start_matches("/v1-mini/images/");
            let Some(dir) = server.inner.config.images_dir.clone() else {
                return Err(not_served("this server has no image directory"));
            };
            if !valid_image_name(name) {
                return Err(not_served(&format!(
                    "no image tarball {name:?} on this server"
                )));
            }
            let file = dir.join(name);
            match std::fs::metadata(&file) {
                Ok(m) if m.is_file() => stream_file(&file, m.len()).await,
                _ => Err(not_served(&format!(
                    "no image tarball {name:?} on this server"
                ))),
            }
        }
    }
}

fn not_served(message: &str) -> ApiError {
    ApiError::new(404, "NotFound", message)
}

/// A tarball name the image endpoints serve: one path component, not hidden.
pub(crate) fn valid_image_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.contains('\0')
        && name != ".."
}

/// Size and sha256 of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digest256 {
    pub size: u64,
    pub sha256: String,
}

type Fingerprint = (u64, i128);

/// Digests by path, reused while size and mtime stay the same.
static DIGESTS: Mutex<Option<HashMap<PathBuf, (Fingerprint, Digest256)>>> = Mutex::new(None);

fn fingerprint(meta: &std::fs::Metadata) -> Fingerprint {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    (meta.len(), mtime)
}

fn io_error(path: &Path, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("reading {}: {e}", path.display()))
}

/// The file's size and sha256, hashed once per content (size + mtime).
pub(crate) async fn file_digest(path: &Path) -> Result<Digest256, ApiError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, e))?;
        let fp = fingerprint(&meta);
        if let Some((known, d)) = DIGESTS
            .lock()
            .ok()
            .and_then(|m| m.as_ref().and_then(|m| m.get(&path).cloned()))
        {
            if known == fp {
                return Ok(d);
            }
        }
        let mut file = std::fs::File::open(&path).map_err(|e| io_error(&path, e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|e| io_error(&path, e))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        let d = Digest256 {
            size,
            sha256: hex::encode(hasher.finalize()),
        };
        if let Ok(mut m) = DIGESTS.lock() {
            m.get_or_insert_with(HashMap::new)
                .insert(path.clone(), ((size, fp.1), d.clone()));
        }
        Ok(d)
    })
    .await
    .map_err(|e| ApiError::internal(format!("hashing task failed: {e}")))?
}

/// The regular, non-hidden files of the image directory with their digests, sorted by name.
async fn list_images(server: &ApiServer) -> Result<Vec<(String, Digest256)>, ApiError> {
    let Some(dir) = server.inner.config.images_dir.clone() else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
                if is_file && valid_image_name(&name) {
                    names.push(name);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&dir, e)),
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        // a file removed meanwhile is simply left out
        if let Ok(d) = file_digest(&dir.join(&name)).await {
            out.push((name, d));
        }
    }
    Ok(out)
}

/// Streams a file as `application/octet-stream`.
async fn stream_file(path: &Path, size: u64) -> Result<Response<Body>, ApiError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| io_error(path, e))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let body = http_body_util::StreamBody::new(futures::StreamExt::map(stream, |chunk| {
        chunk.map(http_body::Frame::data)
    }))
    .boxed_unsync();
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size)
        .body(body)
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_image_name_rejects_paths_and_hidden_files() {
        assert!(valid_image_name("app.tar.zst"));
        for bad in ["", ".part", "..", "a/b", "../x"] {
            assert!(!valid_image_name(bad), "{bad}");
        }
    }

    #[test]
    fn install_script_is_a_posix_shell_script() {
        assert!(INSTALL_SCRIPT.starts_with("#!/bin/sh"));
    }

    #[tokio::test]
    async fn file_digest_hashes_and_rehashes_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"abc").unwrap();
        let d = file_digest(&f).await.unwrap();
        assert_eq!(d.size, 3);
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&f, b"abcd").unwrap();
        assert_eq!(file_digest(&f).await.unwrap().size, 4);
    }
}

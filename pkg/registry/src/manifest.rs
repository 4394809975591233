//! Manifest validation: media types, JSON shape (oci-spec types), and what a manifest references.

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::error::ApiError;
use crate::names::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What a validated manifest refers to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub media_type: String,
    /// Config + layers (image manifests), in order; foreign layers (with `urls`) left out.
    pub blobs: Vec<String>,
    pub blob_sizes: u64,
    /// Child manifests (indexes).
    pub manifests: Vec<String>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Validates `bytes` as a manifest of `content_type` (the request's Content-Type; may be empty, then
/// the document's own mediaType decides).
pub fn parse(content_type: &str, bytes: &[u8]) -> Result<Parsed, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::manifest_invalid(format!("manifest is not valid JSON: {e}")))?;
    let doc_type = value
        .get("mediaType")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let content_type = content_type.split(';').next().unwrap_or("").trim();
    let media_type = match (content_type, doc_type) {
        ("", "") => {
            // No type given: an index has `manifests`, an image manifest `config`.
            if value.get("manifests").is_some() {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        }
        ("", d) => d.to_string(),
        (c, "") => c.to_string(),
        (c, d) if c == d => c.to_string(),
        (c, d) => {
            return Err(ApiError::manifest_invalid(format!(
                "Content-Type {c} does not match the manifest's mediaType {d}"
            )))
        }
    };
    if value.get("schemaVersion").and_then(|v| v.as_i64()) != Some(2) {
        return Err(ApiError::manifest_invalid(
            "manifest schemaVersion must be 2 (schema 1 manifests are not supported)",
        ));
    }
    let digest_of = |d: &oci_spec::image::Descriptor| -> Result<String, ApiError> {
        let s = d.digest().to_string();
        Digest::parse(&s)
            .map(|d| d.to_string())
            .ok_or_else(|| ApiError::manifest_invalid(format!("unsupported digest {s}")))
    };
    let mut parsed = Parsed {
        media_type: media_type.clone(),
        ..Parsed::default()
    };
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: ImageManifest = serde_json::from_value(value)
                .map_err(|e| ApiError::manifest_invalid(format!("invalid image manifest: {e}")))?;
            parsed.blobs.push(digest_of(m.config())?);
            parsed.blob_sizes += m.config().size();
            for layer in m.layers() {
                if layer.urls().as_ref().is_some_and(|u| !u.is_empty()) {
                    continue;
                }
                parsed.blobs.push(digest_of(layer)?);
                parsed.blob_sizes += layer.size();
            }
            if let Some(s) = m.subject() {
                parsed.subject = Some(digest_of(s)?);
            }
            parsed.artifact_type = m
                .artifact_type()
                .as_ref()
                .map(|a| a.to_string())
                .or_else(|| Some(m.config().media_type().to_string()));
            parsed.annotations = m.annotations().clone().unwrap_or_default().into_iter().collect();
        }
        OCI_INDEX | DOCKER_LIST => {
            let m: ImageIndex = serde_json::from_value(value)
                .map_err(|e| ApiError::manifest_invalid(format!("invalid image index: {e}")))?;
            for child in m.manifests() {
                parsed.manifests.push(digest_of(child)?);
            }
            if let Some(s) = m.subject() {
                parsed.subject = Some(digest_of(s)?);
            }
            parsed.artifact_type = m.artifact_type().as_ref().map(|a| a.to_string());
            parsed.annotations = m.annotations().clone().unwrap_or_default().into_iter().collect();
        }
        other => {
            return Err(ApiError::manifest_invalid(format!(
                "unsupported manifest media type {other}: push an OCI image manifest or index, or a docker schema 2 manifest or manifest list"
            )))
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn parse_oci_manifest_lists_config_and_layers() {
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d('a'), "size": 10},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d('b'), "size": 20}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": d('c'), "size": 5},
        });
        let p = parse(OCI_MANIFEST, m.to_string().as_bytes()).unwrap();
        assert_eq!(p.blobs, vec![d('a'), d('b')]);
        assert_eq!(p.blob_sizes, 30);
        assert_eq!(p.subject, Some(d('c')));
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn parse_mismatched_content_type_rejected() {
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        let e = parse(OCI_MANIFEST, m.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.code, "MANIFEST_INVALID");
    }

    #[test]
    fn parse_docker_list_lists_children() {
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": d('e'), "size": 3, "platform": {"architecture": "amd64", "os": "linux"}}]});
        let p = parse("", m.to_string().as_bytes()).unwrap();
        assert_eq!(p.manifests, vec![d('e')]);
        assert!(is_index(&p.media_type));
    }

    #[test]
    fn parse_garbage_and_schema1_rejected() {
        assert_eq!(parse("", b"{nope").unwrap_err().code, "MANIFEST_INVALID");
        let s1 = serde_json::json!({"schemaVersion": 1, "name": "x"});
        assert_eq!(
            parse("", s1.to_string().as_bytes()).unwrap_err().code,
            "MANIFEST_INVALID"
        );
    }
}

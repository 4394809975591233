//! Understanding an image tarball: OCI image layout (`index.json` + `blobs/`) or docker-archive
//! (`docker save`: `manifest.json` + config + layer tars, converted to an OCI manifest), reduced to an
//! [`ImportPlan`]: per image its names, manifest, config and layers, with where each blob's bytes are.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::archive::{detect_compression, Compression, Member, TarIndex};
use crate::reference::normalize_image_name;
use crate::ImageError;

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Annotation containerd writes on `index.json` entries with the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// OCI ref-name annotation: a full reference (docker save) or a bare tag (ignored: no repository).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An OCI content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// Where a blob's bytes come from.
#[derive(Debug, Clone)]
pub enum BlobData {
    /// A member of the tarball, streamed when written.
    Member(Member),
    /// Small blobs already read (manifests, configs) or generated (docker-archive manifests).
    Inline(Arc<Vec<u8>>),
}

#[derive(Debug, Clone)]
pub struct PlannedBlob {
    pub desc: Descriptor,
    pub data: BlobData,
}

/// One image to create: its names, the manifest (the image record's target), config and layers.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    pub names: Vec<String>,
    pub manifest: PlannedBlob,
    pub config: PlannedBlob,
    pub layers: Vec<PlannedBlob>,
    /// Uncompressed layer digests from the config, one per layer.
    pub diff_ids: Vec<String>,
}

pub struct ImportPlan {
    pub tar: TarIndex,
    pub images: Vec<ImagePlan>,
}

/// The OCI architecture name of the host.
pub fn host_architecture() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else if cfg!(target_arch = "arm") {
        "arm"
    } else {
        std::env::consts::ARCH
    }
}

fn platform_matches(os: &str, arch: &str, variant: Option<&str>) -> bool {
    let os_ok = os == "linux" || os.is_empty();
    let arch_ok = arch == host_architecture();
    let variant_ok = match (host_architecture(), variant) {
        ("arm64", Some(v)) => v.is_empty() || v == "v8",
        _ => true,
    };
    os_ok && arch_ok && variant_ok
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The OCI chain ID of each layer prefix: `chain[0] = diff[0]`, `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Reads the tarball's layout and plans the import.
pub fn plan(tar: TarIndex) -> Result<ImportPlan, ImageError> {
    let has_index = tar.get("index.json").is_some();
    let has_docker = tar.get("manifest.json").is_some();
    let images = if has_index {
        match plan_oci(&tar) {
            // docker >= 25 writes both; its index.json may lack names the manifest.json has.
            Ok(images) if images.is_empty() && has_docker => plan_docker(&tar)?,
            other => other?,
        }
    } else if has_docker {
        plan_docker(&tar)?
    } else {
        return Err(ImageError::UnknownLayout {
            source_name: tar.source.clone(),
        });
    };
    Ok(ImportPlan { tar, images })
}

fn invalid(tar: &TarIndex, what: &str, reason: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid {
        source_name: tar.source.clone(),
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

fn blob_path(tar: &TarIndex, digest: &str) -> Result<String, ImageError> {
    let (algo, hexpart) = digest
        .split_once(':')
        .filter(|(a, h)| {
            *a == "sha256" && h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .ok_or_else(|| invalid(tar, "descriptor", format!("unsupported digest {digest:?}")))?;
    Ok(format!("blobs/{algo}/{hexpart}"))
}

/// Reads a small blob named by digest and checks its digest.
fn read_verified(tar: &TarIndex, desc: &Descriptor) -> Result<Vec<u8>, ImageError> {
    let path = blob_path(tar, &desc.digest)?;
    let data = tar.read(&path).map_err(|e| match e {
        ImageError::MissingBlob { source_name, .. } => ImageError::MissingBlob {
            source_name,
            what: format!("{path} ({})", desc.media_type),
        },
        other => other,
    })?;
    let actual = sha256_digest(&data);
    if actual != desc.digest {
        return Err(ImageError::DigestMismatch {
            source_name: tar.source.clone(),
            what: path,
            expected: desc.digest.clone(),
            actual,
        });
    }
    Ok(data)
}

fn names_from_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<String>, ImageError> {
    let mut names = Vec::new();
    if let Some(n) = annotations.get(ANNOTATION_CONTAINERD_NAME) {
        names.push(normalize_image_name(n)?);
    }
    if let Some(n) = annotations.get(ANNOTATION_REF_NAME) {
        if n.contains('/') || n.contains(':') {
            let n = normalize_image_name(n)?;
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    Ok(names)
}

fn is_index(media_type: &str, data: &[u8]) -> bool {
    match media_type {
        MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST => true,
        MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST => false,
        _ => serde_json::from_slice::<serde_json::Value>(data)
            .map(|v| v.get("manifests").is_some())
            .unwrap_or(false),
    }
}

fn plan_oci(tar: &TarIndex) -> Result<Vec<ImagePlan>, ImageError> {
    let index: Index = serde_json::from_slice(&tar.read("index.json")?)
        .map_err(|e| invalid(tar, "index.json", e))?;
    let mut images: Vec<ImagePlan> = Vec::new();
    let mut unsatisfied: Vec<String> = Vec::new();
    for desc in &index.manifests {
        let names = names_from_annotations(&desc.annotations)?;
        if names.is_empty() {
            tracing::warn!(source = %tar.source, digest = %desc.digest, "index.json entry without an image name, skipped");
            continue;
        }
        if images
            .iter()
            .any(|i| names.iter().all(|n| i.names.contains(n)))
        {
            continue;
        }
        match resolve_manifest(tar, desc, 0)? {
            Some(image) => {
                unsatisfied.retain(|n| !names.contains(n));
                let mut image = image;
                image.names = names;
                images.push(image);
            }
            None => unsatisfied.extend(names),
        }
    }
    if let Some(name) = unsatisfied.first() {
        return Err(ImageError::NoPlatform {
            source_name: tar.source.clone(),
            image: name.clone(),
            platform: format!("linux/{}", host_architecture()),
        });
    }
    Ok(images)
}

/// Follows an index or manifest descriptor to the host platform's manifest; `None` when it has none.
fn resolve_manifest(
    tar: &TarIndex,
    desc: &Descriptor,
    depth: u32,
) -> Result<Option<ImagePlan>, ImageError> {
    if depth > 4 {
        return Err(invalid(tar, "index", "indexes nested too deeply"));
    }
    if let Some(p) = &desc.platform {
        if !platform_matches(&p.os, &p.architecture, p.variant.as_deref()) {
            return Ok(None);
        }
    }
    let data = read_verified(tar, desc)?;
    if is_index(&desc.media_type, &data) {
        let index: Index =
            serde_json::from_slice(&data).map_err(|e| invalid(tar, &desc.digest, e))?;
        for child in &index.manifests {
            if child.platform.is_none() && is_index(&child.media_type, b"") {
                continue;
            }
            if let Some(found) = resolve_manifest(tar, child, depth + 1)? {
                return Ok(Some(found));
            }
        }
        return Ok(None);
    }
    let manifest: Manifest =
        serde_json::from_slice(&data).map_err(|e| invalid(tar, &desc.digest, e))?;
    let config_data = read_verified(tar, &manifest.config)?;
    let config: ImageConfig = serde_json::from_slice(&config_data)
        .map_err(|e| invalid(tar, &manifest.config.digest, e))?;
    if !platform_matches(&config.os, &config.architecture, config.variant.as_deref()) {
        return Ok(None);
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(invalid(
            tar,
            &manifest.config.digest,
            format!(
                "{} diff_ids for {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        ));
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for layer in &manifest.layers {
        let path = blob_path(tar, &layer.digest)?;
        let member = tar.get(&path).ok_or_else(|| ImageError::MissingBlob {
            source_name: tar.source.clone(),
            what: format!("{path} (layer)"),
        })?;
        if i64::try_from(member.size).ok() != Some(layer.size) {
            return Err(invalid(
                tar,
                &path,
                format!("size {} but the manifest says {}", member.size, layer.size),
            ));
        }
        layers.push(PlannedBlob {
            desc: strip(layer),
            data: BlobData::Member(member),
        });
    }
    let media_type = if desc.media_type.is_empty() {
        manifest.media_type.clone()
    } else {
        desc.media_type.clone()
    };
    let media_type = if media_type.is_empty() {
        MEDIA_OCI_MANIFEST.to_string()
    } else {
        media_type
    };
    Ok(Some(ImagePlan {
        names: Vec::new(),
        manifest: PlannedBlob {
            desc: Descriptor {
                media_type,
                ..strip(desc)
            },
            data: BlobData::Inline(Arc::new(data)),
        },
        config: PlannedBlob {
            desc: strip(&manifest.config),
            data: BlobData::Inline(Arc::new(config_data)),
        },
        layers,
        diff_ids: config.rootfs.diff_ids,
    }))
}

fn strip(desc: &Descriptor) -> Descriptor {
    Descriptor {
        annotations: BTreeMap::new(),
        platform: None,
        ..desc.clone()
    }
}

/// Hashes a tar member chunk by chunk.
fn hash_member(tar: &TarIndex, member: Member) -> Result<String, ImageError> {
    const CHUNK: u64 = 1 << 20;
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < member.size {
        let len = CHUNK.min(member.size - offset);
        let chunk = tar.read_member(Member {
            offset: member.offset + offset,
            size: len,
        })?;
        hasher.update(&chunk);
        offset += len;
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

fn plan_docker(tar: &TarIndex) -> Result<Vec<ImagePlan>, ImageError> {
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&tar.read("manifest.json")?)
        .map_err(|e| invalid(tar, "manifest.json", e))?;
    let mut images = Vec::new();
    for entry in entries {
        let mut names = Vec::new();
        for tag in entry.repo_tags.unwrap_or_default() {
            let n = normalize_image_name(&tag)?;
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if names.is_empty() {
            tracing::warn!(source = %tar.source, config = %entry.config, "docker-archive image without RepoTags, skipped");
            continue;
        }
        let config_data = tar.read(&entry.config).map_err(|e| match e {
            ImageError::MissingBlob { source_name, .. } => ImageError::MissingBlob {
                source_name,
                what: format!("{} (config)", entry.config),
            },
            other => other,
        })?;
        let config: ImageConfig =
            serde_json::from_slice(&config_data).map_err(|e| invalid(tar, &entry.config, e))?;
        if !platform_matches(&config.os, &config.architecture, config.variant.as_deref()) {
            return Err(ImageError::NoPlatform {
                source_name: tar.source.clone(),
                image: names[0].clone(),
                platform: format!("linux/{}", host_architecture()),
            });
        }
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(invalid(
                tar,
                &entry.config,
                format!(
                    "{} diff_ids for {} layers",
                    config.rootfs.diff_ids.len(),
                    entry.layers.len()
                ),
            ));
        }
        let config_desc = Descriptor {
            media_type: MEDIA_OCI_CONFIG.to_string(),
            digest: sha256_digest(&config_data),
            size: config_data.len() as i64,
            annotations: BTreeMap::new(),
            platform: None,
        };
        let mut layers = Vec::new();
        for path in &entry.layers {
            let member = tar.get(path).ok_or_else(|| ImageError::MissingBlob {
                source_name: tar.source.clone(),
                what: format!("{path} (layer)"),
            })?;
            let head = tar.read_member(Member {
                offset: member.offset,
                size: member.size.min(512),
            })?;
            let media_type = match detect_compression(&head) {
                Some(Compression::Gzip) => MEDIA_OCI_LAYER_GZIP,
                Some(Compression::Zstd) => MEDIA_OCI_LAYER_ZSTD,
                // An empty layer is still an (empty) tar.
                Some(Compression::None) | None => MEDIA_OCI_LAYER,
            };
            let digest = hash_member(tar, member)?;
            layers.push(PlannedBlob {
                desc: Descriptor {
                    media_type: media_type.to_string(),
                    digest,
                    size: member.size as i64,
                    annotations: BTreeMap::new(),
                    platform: None,
                },
                data: BlobData::Member(member),
            });
        }
        let manifest_data = oci_manifest_json(&config_desc, layers.iter().map(|l| &l.desc));
        let manifest_desc = Descriptor {
            media_type: MEDIA_OCI_MANIFEST.to_string(),
            digest: sha256_digest(&manifest_data),
            size: manifest_data.len() as i64,
            annotations: BTreeMap::new(),
            platform: None,
        };
        images.push(ImagePlan {
            names,
            manifest: PlannedBlob {
                desc: manifest_desc,
                data: BlobData::Inline(Arc::new(manifest_data)),
            },
            config: PlannedBlob {
                desc: config_desc,
                data: BlobData::Inline(Arc::new(config_data)),
            },
            layers,
            diff_ids: config.rootfs.diff_ids,
        });
    }
    Ok(images)
}

/// Serialises an OCI image manifest.
pub fn oci_manifest_json<'a>(
    config: &Descriptor,
    layers: impl Iterator<Item = &'a Descriptor>,
) -> Vec<u8> {
    let value = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": config,
        "layers": layers.collect::<Vec<_>>(),
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::open_bytes;

    fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "hello.txt", b"hello\n");
        b.into_inner().unwrap()
    }

    fn docker_archive(layer: &[u8], arch: &str, tags: serde_json::Value) -> Vec<u8> {
        let diff = sha256_digest(layer);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [diff]},
        }))
        .unwrap();
        let config_name = format!("{}.json", &sha256_digest(&config)[7..]);
        let manifest = serde_json::to_vec(&serde_json::json!([
            {"Config": config_name, "RepoTags": tags, "Layers": ["abc/layer.tar"]}
        ]))
        .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, &config_name, &config);
        add(&mut b, "abc/layer.tar", layer);
        add(&mut b, "manifest.json", &manifest);
        b.into_inner().unwrap()
    }

    fn plan_of(bytes: &[u8]) -> Result<ImportPlan, ImageError> {
        plan(TarIndex::build(open_bytes(bytes, "test.tar")?, "test.tar")?)
    }

    #[test]
    fn chain_ids_follow_oci_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a);
        assert_eq!(chain[1], sha256_digest(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
        // Known value from the containerd identity tests (digest of "sha256:a.. sha256:b..").
        assert_ne!(chain[1], b);
    }

    #[test]
    fn docker_archive_converts_to_oci_manifest() {
        let layer = layer_tar();
        let plan = plan_of(&docker_archive(
            &layer,
            host_architecture(),
            serde_json::json!(["busybox:1.0"]),
        ))
        .unwrap();
        assert_eq!(plan.images.len(), 1);
        let image = &plan.images[0];
        assert_eq!(
            image.names,
            vec!["docker.io/library/busybox:1.0".to_string()]
        );
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.layers[0].desc.media_type, MEDIA_OCI_LAYER);
        assert_eq!(image.layers[0].desc.digest, sha256_digest(&layer));
        assert_eq!(image.layers[0].desc.size, layer.len() as i64);
        assert_eq!(image.diff_ids, vec![sha256_digest(&layer)]);
        let BlobData::Inline(manifest) = &image.manifest.data else {
            panic!("manifest must be inline")
        };
        assert_eq!(image.manifest.desc.digest, sha256_digest(manifest));
        let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        assert_eq!(m["mediaType"], MEDIA_OCI_MANIFEST);
        assert_eq!(m["config"]["digest"], image.config.desc.digest.as_str());
        assert_eq!(m["config"]["mediaType"], MEDIA_OCI_CONFIG);
        assert_eq!(m["layers"][0]["digest"], sha256_digest(&layer).as_str());
    }

    #[test]
    fn docker_archive_missing_layer_names_the_blob() {
        let layer = layer_tar();
        let archive = docker_archive(&layer, host_architecture(), serde_json::json!(["x:1"]));
        // Rebuild the archive without the layer member.
        let idx = TarIndex::build(open_bytes(&archive, "t").unwrap(), "t").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for (path, m) in &idx.members {
            if path != "abc/layer.tar" {
                add(&mut b, path, &idx.read_member(*m).unwrap());
            }
        }
        let err = plan_of(&b.into_inner().unwrap()).err().expect("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("test.tar") && msg.contains("abc/layer.tar") && msg.contains("missing"),
            "{msg}"
        );
    }

    #[test]
    fn docker_archive_other_architecture_is_refused() {
        let other = if host_architecture() == "amd64" {
            "arm64"
        } else {
            "amd64"
        };
        let err = plan_of(&docker_archive(
            &layer_tar(),
            other,
            serde_json::json!(["x:1"]),
        ))
        .err()
        .expect("must fail");
        assert!(err.to_string().contains("platform"), "{err}");
    }

    #[test]
    fn plan_without_index_or_manifest_is_unknown_layout() {
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "foo.txt", b"x");
        let err = plan_of(&b.into_inner().unwrap()).err().expect("must fail");
        assert!(
            err.to_string().contains("index.json") && err.to_string().contains("manifest.json"),
            "{err}"
        );
    }

    #[test]
    fn oci_layout_digest_mismatch_is_reported() {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_desc = Descriptor {
            media_type: MEDIA_OCI_CONFIG.into(),
            digest: sha256_digest(config),
            size: config.len() as i64,
            annotations: BTreeMap::new(),
            platform: None,
        };
        let manifest = oci_manifest_json(&config_desc, std::iter::empty());
        let digest = sha256_digest(&manifest);
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": MEDIA_OCI_MANIFEST, "digest": digest, "size": manifest.len(),
            "annotations": {ANNOTATION_CONTAINERD_NAME: "x:1"}}]}))
        .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        add(&mut b, "index.json", &index);
        add(
            &mut b,
            &format!("blobs/sha256/{}", &digest[7..]),
            b"{\"tampered\":true}",
        );
        let err = plan_of(&b.into_inner().unwrap()).err().expect("must fail");
        assert!(err.to_string().contains("digest mismatch"), "{err}");
    }

    #[test]
    fn ref_name_bare_tag_is_not_an_image_name() {
        let mut a = BTreeMap::new();
        a.insert(ANNOTATION_REF_NAME.to_string(), "latest".to_string());
        assert!(names_from_annotations(&a).unwrap().is_empty());
        a.insert(
            ANNOTATION_REF_NAME.to_string(),
            "docker.io/library/busybox:1".to_string(),
        );
        assert_eq!(
            names_from_annotations(&a).unwrap(),
            vec!["docker.io/library/busybox:1".to_string()]
        );
    }

    #[test]
    fn oci_index_picks_host_platform_manifest() {
        let other = if host_architecture() == "amd64" {
            "arm64"
        } else {
            "amd64"
        };
        let mut b = tar::Builder::new(Vec::new());
        let blob = |b: &mut tar::Builder<Vec<u8>>, data: &[u8]| {
            add(
                b,
                &format!("blobs/sha256/{}", &sha256_digest(data)[7..]),
                data,
            );
            sha256_digest(data)
        };
        let mut children = Vec::new();
        for arch in [other, host_architecture()] {
            let layer = layer_tar();
            let layer_digest = blob(&mut b, &layer);
            let config = serde_json::to_vec(&serde_json::json!({
                "architecture": arch, "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }))
            .unwrap();
            let config_desc = Descriptor {
                media_type: MEDIA_OCI_CONFIG.into(),
                digest: blob(&mut b, &config),
                size: config.len() as i64,
                annotations: BTreeMap::new(),
                platform: None,
            };
            let layer_desc = Descriptor {
                media_type: MEDIA_OCI_LAYER.into(),
                digest: layer_digest,
                size: layer.len() as i64,
                annotations: BTreeMap::new(),
                platform: None,
            };
            let manifest = oci_manifest_json(&config_desc, std::iter::once(&layer_desc));
            children.push(serde_json::json!({
                "mediaType": MEDIA_OCI_MANIFEST, "digest": blob(&mut b, &manifest), "size": manifest.len(),
                "platform": {"os": "linux", "architecture": arch},
            }));
        }
        let inner =
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": children}))
                .unwrap();
        let inner_digest = blob(&mut b, &inner);
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": MEDIA_OCI_INDEX, "digest": inner_digest, "size": inner.len(),
            "annotations": {ANNOTATION_CONTAINERD_NAME: "multi:1"}}]}))
        .unwrap();
        add(&mut b, "index.json", &index);
        let p = plan_of(&b.into_inner().unwrap()).unwrap();
        assert_eq!(p.images.len(), 1);
        assert_eq!(
            p.images[0].names,
            vec!["docker.io/library/multi:1".to_string()]
        );
        assert_eq!(
            p.images[0].manifest.desc.digest,
            children[1]["digest"].as_str().unwrap()
        );
        assert_eq!(p.images[0].manifest.desc.media_type, MEDIA_OCI_MANIFEST);
    }
}

//! Building small single-layer OCI image-layout tarballs from a list of files (the pause image, test images).

use std::collections::{BTreeMap, BTreeSet};

use crate::layout::{
    host_architecture, oci_manifest_json, sha256_digest, Descriptor, ANNOTATION_CONTAINERD_NAME,
    ANNOTATION_REF_NAME, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_LAYER, MEDIA_OCI_MANIFEST,
};
use crate::reference::normalize_image_name;
use crate::ImageError;

/// A regular file in the image's single layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Absolute or relative path inside the image, e.g. `/bin/busybox`.
    pub path: String,
    /// Permission bits, e.g. `0o755`.
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// A symbolic link in the image's single layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSymlink {
    pub path: String,
    pub target: String,
}

/// What [`build_image_tarball`] puts in the image. Parent directories are created (mode 0755).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// Image name, normalised (`busybox:1` -> `docker.io/library/busybox:1`).
    pub name: String,
    pub files: Vec<ImageFile>,
    pub symlinks: Vec<ImageSymlink>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// OCI architecture (`amd64`, `arm64`); the host's when `None`.
    pub architecture: Option<String>,
}

fn rel(path: &str) -> String {
    crate::archive::normalize_member_path(path)
}

fn build_err(spec: &ImageSpec, reason: impl std::fmt::Display) -> ImageError {
    ImageError::Build {
        name: spec.name.clone(),
        reason: reason.to_string(),
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// The layer tar (uncompressed, deterministic: sorted, mtime 0, owner root).
fn layer_tar(spec: &ImageSpec) -> Result<Vec<u8>, ImageError> {
    let mut dirs = BTreeSet::new();
    let mut paths = BTreeSet::new();
    let all = spec
        .files
        .iter()
        .map(|f| rel(&f.path))
        .chain(spec.symlinks.iter().map(|s| rel(&s.path)));
    for p in all {
        if p.is_empty() || p.split('/').any(|c| c == "..") {
            return Err(build_err(spec, format!("invalid path {p:?}")));
        }
        if !paths.insert(p.clone()) {
            return Err(build_err(spec, format!("path {p:?} given twice")));
        }
        let mut acc = String::new();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            dirs.insert(acc.clone());
        }
    }
    let io = |e: std::io::Error| build_err(spec, format!("writing layer tar: {e}"));
    let mut b = tar::Builder::new(Vec::new());
    for d in &dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())
            .map_err(io)?;
    }
    let mut files: Vec<&ImageFile> = spec.files.iter().collect();
    files.sort_by_key(|f| rel(&f.path));
    for f in files {
        let mut h = header(tar::EntryType::Regular, f.mode, f.contents.len() as u64);
        b.append_data(&mut h, rel(&f.path), f.contents.as_slice())
            .map_err(io)?;
    }
    let mut links: Vec<&ImageSymlink> = spec.symlinks.iter().collect();
    links.sort_by_key(|s| rel(&s.path));
    for s in links {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, rel(&s.path), &s.target).map_err(io)?;
    }
    b.into_inner().map_err(io)
}

/// Builds an OCI image-layout tarball (`oci-layout`, `index.json` naming the image, `blobs/sha256/*`) with one
/// uncompressed layer. The output is deterministic: the same spec gives the same bytes and digests.
pub fn build_image_tarball(spec: &ImageSpec) -> Result<Vec<u8>, ImageError> {
    let name = normalize_image_name(&spec.name)?;
    let layer = layer_tar(spec)?;
    let diff_id = sha256_digest(&layer);
    let mut config_section = serde_json::Map::new();
    if !spec.entrypoint.is_empty() {
        config_section.insert("Entrypoint".into(), serde_json::json!(spec.entrypoint));
    }
    if !spec.cmd.is_empty() {
        config_section.insert("Cmd".into(), serde_json::json!(spec.cmd));
    }
    if !spec.env.is_empty() {
        config_section.insert("Env".into(), serde_json::json!(spec.env));
    }
    if let Some(wd) = &spec.working_dir {
        config_section.insert("WorkingDir".into(), serde_json::json!(wd));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": spec.architecture.as_deref().unwrap_or(host_architecture()),
        "os": "linux",
        "config": config_section,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "mini build_image_tarball"}],
    }))
    .map_err(|e| build_err(spec, e))?;
    let desc = |media_type: &str, data: &[u8]| Descriptor {
        media_type: media_type.to_string(),
        digest: sha256_digest(data),
        size: data.len() as i64,
        annotations: BTreeMap::new(),
        platform: None,
    };
    let config_desc = desc(MEDIA_OCI_CONFIG, &config);
    let layer_desc = desc(MEDIA_OCI_LAYER, &layer);
    let manifest = oci_manifest_json(&config_desc, std::iter::once(&layer_desc));
    let mut manifest_desc = desc(MEDIA_OCI_MANIFEST, &manifest);
    let tag = name
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'))
        .unwrap_or("latest");
    manifest_desc
        .annotations
        .insert(ANNOTATION_CONTAINERD_NAME.into(), name.clone());
    manifest_desc
        .annotations
        .insert(ANNOTATION_REF_NAME.into(), tag.to_string());
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [manifest_desc],
    }))
    .map_err(|e| build_err(spec, e))?;

    let io = |e: std::io::Error| build_err(spec, format!("writing image tarball: {e}"));
    let mut b = tar::Builder::new(Vec::new());
    for d in ["blobs/", "blobs/sha256/"] {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, d, std::io::empty()).map_err(io)?;
    }
    let blobs: [(&Descriptor, &[u8]); 3] = [
        (&layer_desc, &layer),
        (&config_desc, &config),
        (&manifest_desc, &manifest),
    ];
    for (d, data) in blobs {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, format!("blobs/sha256/{}", &d.digest[7..]), data)
            .map_err(io)?;
    }
    let oci_layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    for (path, data) in [("oci-layout", &oci_layout[..]), ("index.json", &index[..])] {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, path, data).map_err(io)?;
    }
    b.into_inner().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{open_bytes, TarIndex};
    use crate::layout::{plan, BlobData};

    fn spec() -> ImageSpec {
        ImageSpec {
            name: "demo:1".into(),
            files: vec![ImageFile {
                path: "/bin/tool".into(),
                mode: 0o755,
                contents: b"#!/bin/sh\n".to_vec(),
            }],
            symlinks: vec![ImageSymlink {
                path: "/bin/sh".into(),
                target: "tool".into(),
            }],
            entrypoint: vec!["/bin/tool".into()],
            cmd: vec!["arg".into()],
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        }
    }

    #[test]
    fn build_image_tarball_roundtrips_through_plan() {
        let bytes = build_image_tarball(&spec()).unwrap();
        assert_eq!(
            bytes,
            build_image_tarball(&spec()).unwrap(),
            "output must be deterministic"
        );
        let p =
            plan(TarIndex::build(open_bytes(&bytes, "demo").unwrap(), "demo").unwrap()).unwrap();
        assert_eq!(p.images.len(), 1);
        let image = &p.images[0];
        assert_eq!(image.names, vec!["docker.io/library/demo:1".to_string()]);
        let BlobData::Inline(config) = &image.config.data else {
            panic!("config inline")
        };
        let config: serde_json::Value = serde_json::from_slice(config).unwrap();
        assert_eq!(config["config"]["Entrypoint"][0], "/bin/tool");
        assert_eq!(config["config"]["Env"][0], "PATH=/bin");
        assert_eq!(config["architecture"], host_architecture());
        let BlobData::Member(m) = image.layers[0].data else {
            panic!("layer is a member")
        };
        let layer = p.tar.read_member(m).unwrap();
        let mut entries: Vec<(String, tar::EntryType, u32)> = tar::Archive::new(layer.as_slice())
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            entries,
            vec![
                ("bin/".to_string(), tar::EntryType::Directory, 0o755),
                ("bin/sh".to_string(), tar::EntryType::Symlink, 0o777),
                ("bin/tool".to_string(), tar::EntryType::Regular, 0o755),
            ]
        );
    }

    #[test]
    fn build_image_tarball_duplicate_path_rejected() {
        let mut s = spec();
        s.symlinks.push(ImageSymlink {
            path: "bin/tool".into(),
            target: "x".into(),
        });
        assert!(build_image_tarball(&s).is_err());
    }
}

//! Reading bundles: [`verify`] checks the header's digest against the binary, every file
//! against the manifest, and refuses files the manifest does not list; [`install_from`] does
//! the same while unpacking the images (as one OCI-layout tarball into
//! `<data-dir>/agent/images`) and the packages (installed with dpkg when containerd or runc are
//! missing). Nothing is put in place unless the whole bundle checks out.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::create::RUNTIME_PACKAGES;
use crate::host::{DebianHost, PackageHost};
use crate::{
    io_err, parse_header_line, BundleError, Manifest, BINARY_ENTRY, FORMAT_VERSION, HEADER_LEN,
    IMAGES_TARBALL_PREFIX, MANIFEST_PATH, SKIPPABLE_MAGIC,
};

/// The largest manifest read (it lists files, it is small).
const MAX_MANIFEST: u64 = 16 << 20;

/// What a verified bundle holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSummary {
    pub manifest: Manifest,
    pub binary_sha256: String,
    pub binary_size: u64,
    /// Files in the tar besides the manifest.
    pub files: usize,
    pub has_images: bool,
    pub packages: Vec<String>,
}

/// What [`install_from`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstallSummary {
    /// The image layout tarball written, if the bundle has images.
    pub images_tarball: Option<PathBuf>,
    /// The `.deb` files installed (empty when containerd and runc were present).
    pub installed_packages: Vec<String>,
}

fn verify_err(path: &Path, reason: impl Into<String>) -> BundleError {
    BundleError::Verify {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: Sha256,
    size: u64,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Receives each tar file: its path, size and content.
type Sink<'a> = dyn FnMut(&str, u64, &mut dyn Read) -> Result<(), BundleError> + 'a;

/// Reads the whole bundle, handing every tar file (but the manifest) to `sink` while hashing
/// it, then checks everything.
fn walk(path: &Path, sink: &mut Sink<'_>) -> Result<BundleSummary, BundleError> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let format = |reason: String| BundleError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let mut head = [0u8; 8];
    r.read_exact(&mut head)
        .map_err(|_| format("shorter than the header".into()))?;
    if head[..4] != SKIPPABLE_MAGIC {
        return Err(format(
            "it does not start with the bundle's zstd skippable frame".into(),
        ));
    }
    let frame_len = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
    let mut line = [0u8; HEADER_LEN];
    r.read_exact(&mut line)
        .map_err(|_| format("the header line is cut short".into()))?;
    let (bin_sha, bin_size) = parse_header_line(&line).map_err(format)?;
    if frame_len != HEADER_LEN as u64 + bin_size {
        return Err(format(format!(
            "the frame length {frame_len} does not match the header's binary size {bin_size} + {HEADER_LEN}"
        )));
    }
    let mut hasher = Sha256::new();
    let copied =
        std::io::copy(&mut (&mut r).take(bin_size), &mut hasher).map_err(|e| io_err(path, e))?;
    if copied != bin_size {
        return Err(verify_err(path, "the binary is cut short"));
    }
    let actual = hex::encode(hasher.finalize());
    if actual != bin_sha {
        return Err(verify_err(
            path,
            format!("the binary hashes to {actual}, the header says {bin_sha}"),
        ));
    }

    let decoder = zstd::stream::read::Decoder::with_buffer(r).map_err(|e| io_err(path, e))?;
    let mut archive = tar::Archive::new(decoder);
    let mut seen: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    let tar_err = |e: std::io::Error| verify_err(path, format!("reading the tar: {e}"));
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let name = entry
            .path()
            .map_err(tar_err)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(verify_err(
                path,
                format!("{name} is not a regular file (links are not allowed)"),
            ));
        }
        if name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(verify_err(path, format!("{name}: unsafe path")));
        }
        if seen.contains_key(&name) || (name == MANIFEST_PATH && manifest.is_some()) {
            return Err(verify_err(path, format!("{name} appears twice")));
        }
        if name == MANIFEST_PATH {
            if entry.size() > MAX_MANIFEST {
                return Err(verify_err(path, "manifest.json is implausibly large"));
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(tar_err)?;
            let m: Manifest = serde_json::from_slice(&text)
                .map_err(|e| verify_err(path, format!("manifest.json: {e}")))?;
            manifest = Some(m);
            continue;
        }
        let size = entry.size();
        let mut hashing = HashingReader {
            inner: &mut entry,
            hasher: Sha256::new(),
            size: 0,
        };
        sink(&name, size, &mut hashing)?;
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(tar_err)?;
        let sha = hex::encode(std::mem::take(&mut hashing.hasher).finalize());
        seen.insert(name, (sha, hashing.size));
    }
    let manifest = manifest.ok_or_else(|| verify_err(path, "no manifest.json in the tar"))?;
    if manifest.version != FORMAT_VERSION {
        return Err(verify_err(
            path,
            format!(
                "manifest version {} is not supported (this mini reads {FORMAT_VERSION})",
                manifest.version
            ),
        ));
    }
    let mut listed: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
    for f in &manifest.files {
        if listed.insert(&f.path, (&f.sha256, f.size)).is_some() {
            return Err(verify_err(
                path,
                format!("manifest.json lists {} twice", f.path),
            ));
        }
    }
    match listed.get(BINARY_ENTRY) {
        Some((sha, size)) if sha.eq_ignore_ascii_case(&bin_sha) && *size == bin_size => {}
        Some(_) => {
            return Err(verify_err(
                path,
                "the manifest's binary entry does not match the header",
            ))
        }
        None => return Err(verify_err(path, "the manifest does not list the binary")),
    }
    for (name, (sha, size)) in &seen {
        match listed.get(name.as_str()) {
            None => return Err(verify_err(path, format!("{name} is not in the manifest"))),
            Some((want_sha, want_size)) => {
                if !want_sha.eq_ignore_ascii_case(sha) || want_size != size {
                    return Err(verify_err(
                        path,
                        format!(
                            "{name} hashes to {sha} ({size} bytes), the manifest says {want_sha} ({want_size} bytes)"
                        ),
                    ));
                }
            }
        }
    }
    for name in listed.keys() {
        if *name != BINARY_ENTRY && !seen.contains_key(*name) {
            return Err(verify_err(
                path,
                format!("{name} is listed in the manifest but missing from the bundle"),
            ));
        }
    }
    Ok(BundleSummary {
        binary_sha256: bin_sha,
        binary_size: bin_size,
        files: seen.len(),
        has_images: seen.contains_key("images/index.json"),
        packages: seen
            .keys()
            .filter_map(|k| k.strip_prefix("packages/"))
            .map(str::to_string)
            .collect(),
        manifest,
    })
}

/// Checks the bundle completely (see the module docs).
pub fn verify(path: &Path) -> Result<BundleSummary, BundleError> {
    walk(path, &mut |_, _, _| Ok(()))
}

/// Extracts the binary of a bundle to `out` (mode 0755) after verifying the bundle.
pub fn extract_binary(path: &Path, out: &Path) -> Result<BundleSummary, BundleError> {
    let summary = verify(path)?;
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut skip = [0u8; 8 + HEADER_LEN];
    f.read_exact(&mut skip).map_err(|e| io_err(path, e))?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_err(dir, e))?;
    std::io::copy(&mut f.take(summary.binary_size), tmp.as_file_mut())
        .map_err(|e| io_err(out, e))?;
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io_err(out, e))?;
    tmp.persist(out).map_err(|e| io_err(out, e.error))?;
    Ok(summary)
}

/// [`install_from_with`] on this machine's Debian package manager.
pub fn install_from(bundle: &Path, data_dir: &Path) -> Result<InstallSummary, BundleError> {
    install_from_with(bundle, data_dir, &DebianHost)
}

/// Verifies `bundle` while unpacking it; then puts the images as one OCI-layout tarball into
/// `<data_dir>/agent/images` (where the agent's importer picks it up) and installs the
/// packages with dpkg when containerd or runc are missing. The binary is not installed here.
pub fn install_from_with(
    bundle: &Path,
    data_dir: &Path,
    host: &dyn PackageHost,
) -> Result<InstallSummary, BundleError> {
    let images_dir = data_dir.join("agent").join("images");
    std::fs::create_dir_all(&images_dir).map_err(|e| io_err(&images_dir, e))?;
    let debs_dir = tempfile::tempdir().map_err(|e| io_err(std::env::temp_dir(), e))?;
    // hidden while unpacking: the importer skips hidden files
    let mut part = tempfile::Builder::new()
        .prefix(".mini-bundle-")
        .suffix(".part")
        .tempfile_in(&images_dir)
        .map_err(|e| io_err(&images_dir, e))?;
    let mut layout = tar::Builder::new(std::io::BufWriter::new(part.as_file_mut()));
    let mut debs: Vec<PathBuf> = Vec::new();
    let mut index_sha = Sha256::new();
    let summary = walk(bundle, &mut |name, size, data| {
        if let Some(rel) = name.strip_prefix("images/") {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
            let result = if rel == "index.json" {
                let mut buf = Vec::new();
                data.read_to_end(&mut buf).map_err(|e| io_err(bundle, e))?;
                index_sha.update(&buf);
                layout.append_data(&mut header, rel, &buf[..])
            } else {
                layout.append_data(&mut header, rel, data.take(size))
            };
            result.map_err(|e| io_err(&images_dir, e))
        } else if let Some(file) = name.strip_prefix("packages/") {
            if file.contains('/') || !file.ends_with(".deb") {
                return Err(BundleError::Invalid(format!(
                    "{}: {name} is not a package file",
                    bundle.display()
                )));
            }
            let out = debs_dir.path().join(file);
            let mut f = std::fs::File::create(&out).map_err(|e| io_err(&out, e))?;
            std::io::copy(data, &mut f).map_err(|e| io_err(&out, e))?;
            f.flush().map_err(|e| io_err(&out, e))?;
            debs.push(out);
            Ok(())
        } else {
            Ok(())
        }
    })?;
    let writer = layout.into_inner().map_err(|e| io_err(&images_dir, e))?;
    writer
        .into_inner()
        .map_err(|e| io_err(&images_dir, e.into_error()))?;
    let mut out = InstallSummary::default();
    if summary.has_images {
        let id = hex::encode(index_sha.finalize());
        let target = images_dir.join(format!("{IMAGES_TARBALL_PREFIX}{}.tar", &id[..16]));
        part.as_file().sync_all().map_err(|e| io_err(&target, e))?;
        part.persist(&target)
            .map_err(|e| io_err(&target, e.error))?;
        out.images_tarball = Some(target);
    }
    let missing = RUNTIME_PACKAGES.iter().any(|p| !host.installed(p));
    if missing && !debs.is_empty() {
        debs.sort();
        host.install_debs(&debs)?;
        out.installed_packages = summary.packages.clone();
    } else if missing {
        tracing::warn!("containerd or runc is not installed and the bundle carries no packages (create it with --packages)");
    }
    Ok(out)
}

//! `mini bundle create`: converts the given image tarballs (OCI layout or docker-archive, plain,
//! gzip or zstd) into one OCI image layout, gathers the packages, and writes the bundle
//! atomically (a temp file renamed into place).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mini_images::archive::{open_file, Backing, TarIndex};
use mini_images::layout::{self, BlobData, Descriptor, ImportPlan};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::host::PackageHost;
use crate::{
    header_line, io_err, BundleError, FileEntry, Manifest, BINARY_ENTRY, FORMAT_VERSION,
    HEADER_LEN, MANIFEST_PATH, SKIPPABLE_MAGIC,
};

/// The packages `--packages` puts in a bundle.
pub const RUNTIME_PACKAGES: &[&str] = &["containerd", "runc"];

/// What goes into a bundle.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The mini binary.
    pub binary: PathBuf,
    /// Image tarballs, or directories whose regular non-hidden files are image tarballs.
    pub images: Vec<PathBuf>,
    /// `.deb` files to include (see [`runtime_packages`]).
    pub packages: Vec<PathBuf>,
    /// The version recorded in the manifest.
    pub mini_version: String,
    /// zstd level (3 when 0).
    pub level: i32,
}

/// The image tarballs `paths` name: files as given, directories' regular non-hidden files sorted.
pub fn expand_image_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, BundleError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| io_err(p, e))?;
        if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| io_err(p, e))?
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Downloads containerd and runc and those of their dependencies that a minimal Debian lacks
/// (see [`PackageHost::is_base`]) into `dir`; returns the `.deb` files.
pub fn runtime_packages(host: &dyn PackageHost, dir: &Path) -> Result<Vec<PathBuf>, BundleError> {
    let mut names: Vec<String> = RUNTIME_PACKAGES.iter().map(|s| s.to_string()).collect();
    let mut i = 0;
    while i < names.len() {
        for dep in host.depends(&names[i])? {
            if names.contains(&dep) {
                continue;
            }
            if !host.is_base(&dep)? {
                names.push(dep);
            }
        }
        i += 1;
    }
    host.download(&names, dir)
}

/// One blob of the layout: where its bytes are.
#[derive(Clone)]
enum Source {
    Range(Backing, u64, u64),
    Inline(Arc<Vec<u8>>),
    File(PathBuf),
}

struct Entry {
    path: String,
    sha256: String,
    size: u64,
    source: Source,
}

/// Reads `len` bytes of a backing from `offset` in 1 MiB pieces.
struct RangeReader {
    backing: Backing,
    offset: u64,
    remaining: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.remaining).min(1 << 20);
        let data = self.backing.read_range(self.offset, n)?;
        buf[..data.len()].copy_from_slice(&data);
        self.offset += data.len() as u64;
        self.remaining -= data.len() as u64;
        Ok(data.len())
    }
}

fn hex_of(digest: &str) -> Result<&str, BundleError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| BundleError::Invalid(format!("unsupported blob digest {digest:?}")))
}

fn sha256_file(path: &Path) -> Result<(String, u64), BundleError> {
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(|e| io_err(path, e))?;
    Ok((hex::encode(h.finalize()), n))
}

fn inline(path: &str, data: Vec<u8>) -> Entry {
    Entry {
        path: path.to_string(),
        sha256: hex::encode(Sha256::digest(&data)),
        size: data.len() as u64,
        source: Source::Inline(Arc::new(data)),
    }
}

/// The OCI layout's files for the images of `plans`: oci-layout, index.json (one entry per
/// image name, annotated with `io.containerd.image.name`) and the blobs, deduplicated.
fn layout_entries(plans: &[ImportPlan]) -> Result<Vec<Entry>, BundleError> {
    let mut blobs: BTreeMap<String, Entry> = BTreeMap::new();
    let mut index = Vec::new();
    for plan in plans {
        for image in &plan.images {
            let all = std::iter::once(&image.manifest)
                .chain(std::iter::once(&image.config))
                .chain(image.layers.iter());
            for blob in all {
                let hex = hex_of(&blob.desc.digest)?.to_ascii_lowercase();
                let source = match &blob.data {
                    BlobData::Inline(d) => Source::Inline(d.clone()),
                    BlobData::Member(m) => {
                        Source::Range(plan.tar.backing.clone(), m.offset, m.size)
                    }
                };
                let size = match &blob.data {
                    BlobData::Inline(d) => d.len() as u64,
                    BlobData::Member(m) => m.size,
                };
                blobs.entry(hex.clone()).or_insert(Entry {
                    path: format!("images/blobs/sha256/{hex}"),
                    sha256: hex,
                    size,
                    source,
                });
            }
            for name in &image.names {
                let mut annotations = BTreeMap::new();
                annotations.insert(layout::ANNOTATION_CONTAINERD_NAME.to_string(), name.clone());
                index.push(Descriptor {
                    media_type: if image.manifest.desc.media_type.is_empty() {
                        layout::MEDIA_OCI_MANIFEST.to_string()
                    } else {
                        image.manifest.desc.media_type.clone()
                    },
                    digest: image.manifest.desc.digest.clone(),
                    size: image.manifest.desc.size,
                    annotations,
                    platform: None,
                });
            }
        }
    }
    let mut out = vec![
        inline(
            "images/oci-layout",
            serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"})).unwrap_or_default(),
        ),
        inline(
            "images/index.json",
            serde_json::to_vec(&json!({"schemaVersion": 2,
                "mediaType": layout::MEDIA_OCI_INDEX, "manifests": index}))
            .unwrap_or_default(),
        ),
    ];
    out.extend(blobs.into_values());
    Ok(out)
}

/// Writes the bundle to `out` (atomically); returns its manifest.
pub fn create(options: &CreateOptions, out: &Path) -> Result<Manifest, BundleError> {
    let (bin_sha, bin_size) = sha256_file(&options.binary)?;
    let frame_len = u32::try_from(HEADER_LEN as u64 + bin_size).map_err(|_| {
        BundleError::Invalid(format!(
            "{}: the binary is too large for the header frame (4 GiB)",
            options.binary.display()
        ))
    })?;
    let scratch = tempfile::tempdir().map_err(|e| io_err(std::env::temp_dir(), e))?;
    let mut plans = Vec::new();
    for path in expand_image_paths(&options.images)? {
        let backing = open_file(&path, scratch.path())?;
        let tar = TarIndex::build(backing, &path.display().to_string())?;
        let plan = layout::plan(tar)?;
        if plan.images.is_empty() {
            return Err(BundleError::Invalid(format!(
                "{}: holds no named image for this platform",
                path.display()
            )));
        }
        plans.push(plan);
    }
    let mut entries = if plans.is_empty() {
        Vec::new()
    } else {
        layout_entries(&plans)?
    };
    for deb in &options.packages {
        let name = deb
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .filter(|n| n.ends_with(".deb"))
            .ok_or_else(|| BundleError::Invalid(format!("{}: not a .deb file", deb.display())))?;
        let (sha256, size) = sha256_file(deb)?;
        entries.push(Entry {
            path: format!("packages/{name}"),
            sha256,
            size,
            source: Source::File(deb.clone()),
        });
    }
    let created = chrono::Utc::now();
    let mut files = vec![FileEntry {
        path: BINARY_ENTRY.into(),
        sha256: bin_sha.clone(),
        size: bin_size,
    }];
    files.extend(entries.iter().map(|e| FileEntry {
        path: e.path.clone(),
        sha256: e.sha256.clone(),
        size: e.size,
    }));
    let manifest = Manifest {
        version: FORMAT_VERSION,
        mini_version: options.mini_version.clone(),
        created: created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        files,
    };

    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_err(dir, e))?;
    {
        let file = tmp.as_file_mut();
        let mut w = std::io::BufWriter::new(file);
        let werr = |e| io_err(out, e);
        w.write_all(&SKIPPABLE_MAGIC).map_err(werr)?;
        w.write_all(&frame_len.to_le_bytes()).map_err(werr)?;
        w.write_all(header_line(&bin_sha, bin_size).as_bytes())
            .map_err(werr)?;
        let mut bin =
            std::fs::File::open(&options.binary).map_err(|e| io_err(&options.binary, e))?;
        let copied = std::io::copy(&mut (&mut bin).take(bin_size), &mut w).map_err(werr)?;
        if copied != bin_size {
            return Err(BundleError::Invalid(format!(
                "{}: changed while being bundled",
                options.binary.display()
            )));
        }
        let level = if options.level == 0 { 3 } else { options.level };
        let enc = zstd::stream::write::Encoder::new(w, level).map_err(werr)?;
        let mut tar = tar::Builder::new(enc);
        let mtime = created.timestamp().max(0) as u64;
        let manifest_json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        append(
            &mut tar,
            MANIFEST_PATH,
            manifest_json.len() as u64,
            mtime,
            &manifest_json[..],
            out,
        )?;
        for e in &entries {
            let mut hashing = HashingReader::new(open_source(&e.source)?);
            append(&mut tar, &e.path, e.size, mtime, &mut hashing, out)?;
            let got = hex::encode(hashing.hasher.finalize());
            if got != e.sha256 {
                return Err(BundleError::Invalid(format!(
                    "{}: content hashes to {got}, expected {} (a source changed or is corrupt)",
                    e.path, e.sha256
                )));
            }
        }
        let enc = tar.into_inner().map_err(werr)?;
        let mut w = enc.finish().map_err(werr)?;
        w.flush().map_err(werr)?;
    }
    tmp.as_file().sync_all().map_err(|e| io_err(out, e))?;
    tmp.persist(out).map_err(|e| io_err(out, e.error))?;
    Ok(manifest)
}

fn open_source(source: &Source) -> Result<Box<dyn Read>, BundleError> {
    Ok(match source {
        Source::Range(b, offset, len) => Box::new(RangeReader {
            backing: b.clone(),
            offset: *offset,
            remaining: *len,
        }),
        Source::Inline(d) => Box::new(std::io::Cursor::new(d.as_ref().clone())),
        Source::File(p) => Box::new(std::fs::File::open(p).map_err(|e| io_err(p, e))?),
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    mtime: u64,
    data: impl Read,
    out: &Path,
) -> Result<(), BundleError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data.take(size))
        .map_err(|e| io_err(out, e))
}

//! Reading image tarballs: compression detection by magic bytes, and an index of tar members with their
//! byte ranges so blobs can be streamed from the (decompressed) tarball without loading it into memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::ImageError;

/// What the first bytes of an image file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar archive.
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Detects gzip, zstd or plain tar from the first 512 bytes; `None` when it is none of them.
pub fn detect_compression(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&GZIP_MAGIC) {
        Some(Compression::Gzip)
    } else if head.starts_with(&ZSTD_MAGIC) {
        Some(Compression::Zstd)
    } else if is_tar_header(head) {
        Some(Compression::None)
    } else {
        None
    }
}

/// True when `head` starts with a tar header: the ustar/GNU magic at offset 257, or a valid header checksum.
pub fn is_tar_header(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    if &head[257..262] == b"ustar" {
        return true;
    }
    // v7 tar: no magic, but the checksum (bytes 148..156, octal) covers the header with those bytes as spaces.
    let field = &head[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let Ok(expected) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = head[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == expected && head[0] != 0
}

/// The bytes of an uncompressed tar: in memory or in a file (the original, or a decompressed temp file).
#[derive(Clone)]
pub enum Backing {
    Memory(Arc<Vec<u8>>),
    File(Arc<File>),
}

impl Backing {
    /// Reads `len` bytes at `offset`.
    pub fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        match self {
            Backing::Memory(bytes) => {
                let start = usize::try_from(offset).map_err(io::Error::other)?;
                let end = start
                    .checked_add(usize::try_from(len).map_err(io::Error::other)?)
                    .filter(|e| *e <= bytes.len())
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::UnexpectedEof, "range past end of tarball")
                    })?;
                Ok(bytes[start..end].to_vec())
            }
            Backing::File(file) => {
                let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
                file.read_exact_at(&mut buf, offset)?;
                Ok(buf)
            }
        }
    }
}

/// Turns a possibly compressed image file into an uncompressed tar backing. Compressed files are
/// decompressed into an anonymous temp file in `scratch_dir` (deleted when dropped).
pub fn open_file(path: &Path, scratch_dir: &Path) -> Result<Backing, ImageError> {
    let source = path.display().to_string();
    let read_err = |e: io::Error| ImageError::Read {
        source_name: source.clone(),
        source: e,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut head = Vec::with_capacity(512);
    (&mut file)
        .take(512)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let compression = detect_compression(&head).ok_or_else(|| ImageError::NotATarball {
        source_name: source.clone(),
    })?;
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    if compression == Compression::None {
        return Ok(Backing::File(Arc::new(file)));
    }
    std::fs::create_dir_all(scratch_dir).map_err(|e| ImageError::Io {
        path: scratch_dir.display().to_string(),
        source: e,
    })?;
    let mut out = tempfile::tempfile_in(scratch_dir).map_err(|e| ImageError::Io {
        path: scratch_dir.display().to_string(),
        source: e,
    })?;
    let reader = io::BufReader::new(file);
    let copied = match compression {
        Compression::Gzip => io::copy(&mut flate2::read::MultiGzDecoder::new(reader), &mut out),
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(reader)
            .and_then(|mut d| io::copy(&mut d, &mut out)),
        Compression::None => Ok(0),
    };
    copied.map_err(|e| ImageError::Decompress {
        source_name: source.clone(),
        source: e,
    })?;
    check_tar_head(&out, &source)?;
    Ok(Backing::File(Arc::new(out)))
}

/// Turns possibly compressed image bytes into an uncompressed in-memory tar.
pub fn open_bytes(bytes: &[u8], source: &str) -> Result<Backing, ImageError> {
    let compression = detect_compression(bytes).ok_or_else(|| ImageError::NotATarball {
        source_name: source.to_string(),
    })?;
    let decompress_err = |e: io::Error| ImageError::Decompress {
        source_name: source.to_string(),
        source: e,
    };
    let data = match compression {
        Compression::None => return Ok(Backing::Memory(Arc::new(bytes.to_vec()))),
        Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(decompress_err)?;
            out
        }
        Compression::Zstd => zstd::stream::decode_all(bytes).map_err(decompress_err)?,
    };
    if !is_tar_header(&data) {
        return Err(ImageError::NotATarball {
            source_name: source.to_string(),
        });
    }
    Ok(Backing::Memory(Arc::new(data)))
}

fn check_tar_head(file: &File, source: &str) -> Result<(), ImageError> {
    let mut head = [0u8; 512];
    let n = file.read_at(&mut head, 0).map_err(|e| ImageError::Read {
        source_name: source.to_string(),
        source: e,
    })?;
    if n < 512 || !is_tar_header(&head) {
        return Err(ImageError::NotATarball {
            source_name: source.to_string(),
        });
    }
    Ok(())
}

/// Where one regular file sits inside the uncompressed tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u64,
    pub size: u64,
}

/// The regular files of a tar by normalised path (no leading `./` or `/`), links resolved.
pub struct TarIndex {
    pub backing: Backing,
    pub members: HashMap<String, Member>,
    pub source: String,
}

impl TarIndex {
    /// Scans the tar once, recording every regular file's data range; symlinks and hard links to
    /// regular files are resolved to their targets.
    pub fn build(backing: Backing, source: &str) -> Result<TarIndex, ImageError> {
        let read_err = |e: io::Error| ImageError::Read {
            source_name: source.to_string(),
            source: e,
        };
        let mut members = HashMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        {
            let mut scan = |reader: &mut dyn ReadSeek| -> io::Result<()> {
                let mut archive = tar::Archive::new(reader);
                for entry in archive.entries_with_seek()? {
                    let entry = entry?;
                    let path = normalize_member_path(&entry.path()?.to_string_lossy());
                    let kind = entry.header().entry_type();
                    if kind.is_file() {
                        members.insert(
                            path,
                            Member {
                                offset: entry.raw_file_position(),
                                size: entry.size(),
                            },
                        );
                    } else if kind.is_symlink() || kind.is_hard_link() {
                        if let Some(target) = entry.link_name()? {
                            let target = target.to_string_lossy().to_string();
                            let resolved = if kind.is_symlink() && !target.starts_with('/') {
                                let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                                join_relative(dir, &target)
                            } else {
                                normalize_member_path(&target)
                            };
                            links.push((path, resolved));
                        }
                    }
                }
                Ok(())
            };
            match &backing {
                Backing::Memory(bytes) => scan(&mut io::Cursor::new(bytes.as_slice())),
                Backing::File(file) => {
                    let mut f: &File = file;
                    f.seek(SeekFrom::Start(0)).map_err(read_err)?;
                    scan(&mut io::BufReader::new(f))
                }
            }
            .map_err(read_err)?;
        }
        // Links may point at links; a few rounds settle any sane chain.
        for _ in 0..8 {
            for (link, target) in &links {
                if let Some(m) = members.get(target).copied() {
                    members.entry(link.clone()).or_insert(m);
                }
            }
        }
        Ok(TarIndex {
            backing,
            members,
            source: source.to_string(),
        })
    }

    pub fn get(&self, path: &str) -> Option<Member> {
        self.members.get(&normalize_member_path(path)).copied()
    }

    /// Reads a whole member into memory (for small JSON files).
    pub fn read(&self, path: &str) -> Result<Vec<u8>, ImageError> {
        let member = self.get(path).ok_or_else(|| ImageError::MissingBlob {
            source_name: self.source.clone(),
            what: path.to_string(),
        })?;
        self.read_member(member)
    }

    pub fn read_member(&self, member: Member) -> Result<Vec<u8>, ImageError> {
        self.backing
            .read_range(member.offset, member.size)
            .map_err(|e| ImageError::Read {
                source_name: self.source.clone(),
                source: e,
            })
    }
}

trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// `./a/b`, `/a/b` and `a//b` all become `a/b`.
pub fn normalize_member_path(p: &str) -> String {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn join_relative(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).unwrap();
        }
        for (path, target) in links {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn detect_compression_by_magic_bytes() {
        let tar = tar_with(&[("a", b"x")], &[]);
        assert_eq!(detect_compression(&tar), Some(Compression::None));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        assert_eq!(
            detect_compression(&gz.finish().unwrap()),
            Some(Compression::Gzip)
        );
        let zst = zstd::stream::encode_all(tar.as_slice(), 1).unwrap();
        assert_eq!(detect_compression(&zst), Some(Compression::Zstd));
        assert_eq!(detect_compression(b"{\"not\": \"a tarball\"}"), None);
        assert_eq!(detect_compression(&[0u8; 1024]), None);
    }

    #[test]
    fn open_bytes_garbage_is_not_a_tarball() {
        let err = open_bytes(b"hello world", "x.tar")
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("x.tar"), "{err}");
        assert!(err.to_string().contains("not a tarball"), "{err}");
    }

    #[test]
    fn tar_index_reads_members_through_compression_and_links() {
        let tar = tar_with(
            &[("./dir/a.json", b"{\"a\":1}"), ("b", b"bee")],
            &[("dir/link", "../b")],
        );
        let zst = zstd::stream::encode_all(tar.as_slice(), 1).unwrap();
        let idx = TarIndex::build(open_bytes(&zst, "t").unwrap(), "t").unwrap();
        assert_eq!(idx.read("dir/a.json").unwrap(), b"{\"a\":1}");
        assert_eq!(idx.read("dir/link").unwrap(), b"bee");
        assert!(idx.read("missing").is_err());
    }

    #[test]
    fn open_file_gzip_decompresses_to_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[("index.json", b"{}")], &[]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let path = dir.path().join("img.tar.gz");
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let idx = TarIndex::build(open_file(&path, dir.path()).unwrap(), "img").unwrap();
        assert_eq!(idx.read("index.json").unwrap(), b"{}");
    }
}

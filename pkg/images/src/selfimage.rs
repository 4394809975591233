//! Images made of mini's own running binary (the load test generator image): the executable of
//! this process plus the shared libraries it has mapped (read from `/proc/self/maps`) at their
//! paths, and the ELF loader under its well-known names. Nothing is pulled; the tag carries a
//! fingerprint of the binary, so the server and agents of one build name the same image.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::builder::{build_image_tarball, ImageFile, ImageSpec, ImageSymlink};
use crate::ImageError;

/// The repository of the load test generator image.
pub const LOADTEST_REPOSITORY: &str = "mini.local/loadtest";
/// Where the binary sits inside the image.
pub const SELF_BINARY: &str = "/mini";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A fingerprint of an executable: sha256 of its first 64 KiB (ELF headers and build id)
/// and its size, 12 hex digits.
pub fn fingerprint(exe: &Path) -> Result<String, ImageError> {
    let mut file = std::fs::File::open(exe).map_err(io_err(exe))?;
    let size = file.metadata().map_err(io_err(exe))?.len();
    let mut head = vec![0u8; 64 << 10];
    let mut filled = 0;
    while filled < head.len() {
        let n = file.read(&mut head[filled..]).map_err(io_err(exe))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let mut h = Sha256::new();
    h.update(&head[..filled]);
    h.update(size.to_le_bytes());
    Ok(hex::encode(h.finalize())[..12].to_string())
}

/// The generator image of this binary: `mini.local/loadtest:<fingerprint>`.
pub fn loadtest_image() -> Result<String, ImageError> {
    Ok(format!(
        "{LOADTEST_REPOSITORY}:{}",
        fingerprint(Path::new("/proc/self/exe"))?
    ))
}

/// Shared objects named in a `/proc/<pid>/maps` text (absolute paths, deduplicated, in order).
pub fn mapped_libraries(maps: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let file = path.rsplit('/').next().unwrap_or_default();
        if path.starts_with('/') && file.contains(".so") && !out.iter().any(|p| p == path) {
            out.push(path.to_string());
        }
    }
    out
}

/// The spec of an image holding `exe` as [`SELF_BINARY`] (entrypoint) and the libraries in
/// `maps`; the loader also answers at `/lib64/ld-linux-x86-64.so.2` and
/// `/lib/ld-linux-aarch64.so.1` (the interpreter paths in ELF headers).
pub fn self_image_spec(name: &str, exe: &Path, maps: &str) -> Result<ImageSpec, ImageError> {
    let mut files = vec![ImageFile {
        path: SELF_BINARY.into(),
        mode: 0o755,
        contents: std::fs::read(exe).map_err(io_err(exe))?,
    }];
    let mut symlinks = Vec::new();
    for lib in mapped_libraries(maps) {
        let path = Path::new(&lib);
        let contents = match std::fs::read(path) {
            Ok(c) => c,
            // a library replaced on disk since it was mapped (an upgrade): skip it
            Err(_) => continue,
        };
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default();
        if file.starts_with("ld-linux") {
            for alias in ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"] {
                if alias.ends_with(&file) && alias != lib {
                    symlinks.push(ImageSymlink {
                        path: alias.into(),
                        target: lib.clone(),
                    });
                }
            }
        }
        files.push(ImageFile {
            path: lib,
            mode: 0o755,
            contents,
        });
    }
    Ok(ImageSpec {
        name: name.into(),
        files,
        symlinks,
        entrypoint: vec![SELF_BINARY.into()],
        ..Default::default()
    })
}

/// The tarball of this process's own image named `name`.
pub fn self_image_tarball(name: &str) -> Result<Vec<u8>, ImageError> {
    let maps_path = Path::new("/proc/self/maps");
    let maps = std::fs::read_to_string(maps_path).map_err(io_err(maps_path))?;
    build_image_tarball(&self_image_spec(name, Path::new("/proc/self/exe"), &maps)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0-55d1 r--p 00000000 fe:01 123 /usr/local/bin/mini
7f00-7f01 r-xp 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f01-7f02 r--p 00001000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f02-7f03 rw-p 00000000 00:00 0
7f03-7f04 r-xp 00000000 fe:01 789 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7ffd-7ffe rw-p 00000000 00:00 0 [stack]
";

    #[test]
    fn mapped_libraries_lists_each_shared_object_once() {
        assert_eq!(
            mapped_libraries(MAPS),
            vec![
                "/usr/lib/x86_64-linux-gnu/libc.so.6".to_string(),
                "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".to_string(),
            ]
        );
    }

    #[test]
    fn fingerprint_changes_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"one").unwrap();
        std::fs::write(&b, b"two").unwrap();
        assert_eq!(fingerprint(&a).unwrap().len(), 12);
        assert_ne!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
    }

    #[test]
    fn self_image_spec_has_the_binary_as_entrypoint_and_loader_alias() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("exe");
        std::fs::write(&exe, b"\x7fELF").unwrap();
        // only files that exist are taken; the fake maps name none of this host's files
        let spec = self_image_spec("mini.local/loadtest:x", &exe, "").unwrap();
        assert_eq!(spec.entrypoint, vec![SELF_BINARY.to_string()]);
        assert_eq!(spec.files.len(), 1);
        assert_eq!(spec.files[0].contents, b"\x7fELF");
    }
}

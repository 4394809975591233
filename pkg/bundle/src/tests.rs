//! Bundle round trips and the ways verify must fail.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::*;

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

struct Fixture {
    dir: tempfile::TempDir,
    binary: PathBuf,
    image: PathBuf,
    deb: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("mini");
    std::fs::write(
        &binary,
        b"\x7fELF not really a binary, but bytes all the same",
    )
    .unwrap();
    let image = dir.path().join("pause.tar");
    std::fs::write(&image, mini_images::pause_image_tarball()).unwrap();
    let deb = dir.path().join("runc_1.0_amd64.deb");
    std::fs::write(&deb, b"!<arch>\nfake deb").unwrap();
    Fixture {
        dir,
        binary,
        image,
        deb,
    }
}

fn create_bundle(f: &Fixture) -> PathBuf {
    let out = f.dir.path().join("b.tar.zst");
    create(
        &CreateOptions {
            binary: f.binary.clone(),
            images: vec![f.image.clone()],
            packages: vec![f.deb.clone()],
            mini_version: "0.1.0".into(),
            level: 0,
        },
        &out,
    )
    .unwrap();
    out
}

/// Writes a bundle from parts, for building broken ones.
fn write_raw(path: &Path, binary: &[u8], manifest: &Manifest, files: &[(&str, &[u8])]) {
    let mut out = std::fs::File::create(path).unwrap();
    out.write_all(&SKIPPABLE_MAGIC).unwrap();
    out.write_all(&((HEADER_LEN + binary.len()) as u32).to_le_bytes())
        .unwrap();
    out.write_all(header_line(&sha(binary), binary.len() as u64).as_bytes())
        .unwrap();
    out.write_all(binary).unwrap();
    let enc = zstd::stream::write::Encoder::new(out, 3).unwrap();
    let mut tar = tar::Builder::new(enc);
    let json = serde_json::to_vec(manifest).unwrap();
    let mut all: Vec<(&str, &[u8])> = vec![(MANIFEST_PATH, &json)];
    all.extend_from_slice(files);
    for (name, data) in all {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

fn manifest_for(binary: &[u8], files: &[(&str, &[u8])]) -> Manifest {
    let mut entries = vec![FileEntry {
        path: BINARY_ENTRY.into(),
        sha256: sha(binary),
        size: binary.len() as u64,
    }];
    entries.extend(files.iter().map(|(p, d)| FileEntry {
        path: p.to_string(),
        sha256: sha(d),
        size: d.len() as u64,
    }));
    Manifest {
        version: 1,
        mini_version: "0.1.0".into(),
        created: "2026-01-01T00:00:00Z".into(),
        files: entries,
    }
}

#[test]
fn header_line_is_100_bytes_and_parses_back() {
    let line = header_line(&"ab".repeat(32), 12345);
    assert_eq!(line.len(), HEADER_LEN);
    assert!(line.starts_with("mini-bundle 1 abab"));
    assert!(line.ends_with(" 00000000000000012345\n"));
    assert_eq!(
        parse_header_line(line.as_bytes()).unwrap(),
        ("ab".repeat(32), 12345)
    );
    assert!(parse_header_line(&line.as_bytes()[..99]).is_err());
}

#[test]
fn create_then_verify_round_trips() {
    let f = fixture();
    let out = create_bundle(&f);
    let summary = verify(&out).unwrap();
    assert_eq!(
        summary.binary_sha256,
        sha(&std::fs::read(&f.binary).unwrap())
    );
    assert!(summary.has_images);
    assert_eq!(summary.packages, ["runc_1.0_amd64.deb"]);
    let paths: Vec<&str> = summary
        .manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    for want in [
        "mini",
        "images/oci-layout",
        "images/index.json",
        "packages/runc_1.0_amd64.deb",
    ] {
        assert!(paths.contains(&want), "{want} in {paths:?}");
    }
    assert!(paths.iter().any(|p| p.starts_with("images/blobs/sha256/")));
    // the bytes start with the fixed skippable frame
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes[..4], [0x5B, 0x2A, 0x4D, 0x18]);
    assert_eq!(&bytes[8..20], b"mini-bundle ");
    // extracting the binary gives the original bytes
    let bin = f.dir.path().join("extracted");
    extract_binary(&out, &bin).unwrap();
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(&f.binary).unwrap()
    );
}

#[test]
fn create_output_lists_with_stock_zstd_and_tar() {
    if std::process::Command::new("zstd")
        .arg("--version")
        .output()
        .is_err()
    {
        return;
    }
    let f = fixture();
    let out = create_bundle(&f);
    let listing = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc '{}' | tar -t", out.display()))
        .output()
        .unwrap();
    assert!(listing.status.success(), "{listing:?}");
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(text.lines().any(|l| l == "manifest.json"), "{text}");
    assert!(text.lines().any(|l| l == "images/index.json"), "{text}");
}

#[test]
fn verify_flipped_byte_in_binary_is_rejected() {
    let f = fixture();
    let out = create_bundle(&f);
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[8 + HEADER_LEN + 3] ^= 0x01;
    std::fs::write(&out, bytes).unwrap();
    let err = verify(&out).unwrap_err().to_string();
    assert!(err.contains("the binary hashes to"), "{err}");
}

#[test]
fn verify_flipped_byte_in_a_file_is_rejected() {
    let binary = b"bin".to_vec();
    let files: &[(&str, &[u8])] = &[("packages/a.deb", b"package")];
    let manifest = manifest_for(&binary, files);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    write_raw(&path, &binary, &manifest, &[("packages/a.deb", b"packagf")]);
    let err = verify(&path).unwrap_err().to_string();
    assert!(err.contains("packages/a.deb hashes to"), "{err}");
}

#[test]
fn verify_extra_file_is_rejected() {
    let binary = b"bin".to_vec();
    let files: &[(&str, &[u8])] = &[("packages/a.deb", b"package")];
    let manifest = manifest_for(&binary, files);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    write_raw(
        &path,
        &binary,
        &manifest,
        &[("packages/a.deb", b"package"), ("packages/evil.deb", b"x")],
    );
    let err = verify(&path).unwrap_err().to_string();
    assert!(
        err.contains("packages/evil.deb is not in the manifest"),
        "{err}"
    );
}

#[test]
fn verify_missing_file_is_rejected() {
    let binary = b"bin".to_vec();
    let files: &[(&str, &[u8])] = &[("packages/a.deb", b"package"), ("packages/b.deb", b"b")];
    let manifest = manifest_for(&binary, files);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    write_raw(&path, &binary, &manifest, &files[..1]);
    let err = verify(&path).unwrap_err().to_string();
    assert!(
        err.contains("packages/b.deb is listed in the manifest but missing"),
        "{err}"
    );
}

#[test]
fn verify_not_a_bundle_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    std::fs::write(&path, b"hello world, this is no bundle").unwrap();
    let err = verify(&path).unwrap_err().to_string();
    assert!(err.contains("not a mini bundle"), "{err}");
}

#[derive(Default)]
struct FakeHost {
    installed: bool,
    installs: Mutex<Vec<PathBuf>>,
}

impl PackageHost for FakeHost {
    fn depends(&self, name: &str) -> Result<Vec<String>, BundleError> {
        Ok(match name {
            "containerd" => vec!["runc".into(), "libc6".into()],
            "runc" => vec!["libc6".into(), "libseccomp2".into()],
            _ => vec![],
        })
    }
    fn is_base(&self, name: &str) -> Result<bool, BundleError> {
        Ok(name == "libc6")
    }
    fn download(&self, names: &[String], dir: &Path) -> Result<Vec<PathBuf>, BundleError> {
        Ok(names
            .iter()
            .map(|n| {
                let p = dir.join(format!("{n}.deb"));
                std::fs::write(&p, n).unwrap();
                p
            })
            .collect())
    }
    fn installed(&self, _: &str) -> bool {
        self.installed
    }
    fn install_debs(&self, debs: &[PathBuf]) -> Result<(), BundleError> {
        for d in debs {
            assert!(d.exists());
        }
        self.installs.lock().unwrap().extend(debs.iter().cloned());
        Ok(())
    }
}

#[test]
fn runtime_packages_adds_non_base_dependencies_once() {
    let dir = tempfile::tempdir().unwrap();
    let debs = create::runtime_packages(&FakeHost::default(), dir.path()).unwrap();
    let names: Vec<String> = debs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["containerd.deb", "runc.deb", "libseccomp2.deb"]);
}

#[test]
fn install_from_writes_the_image_layout_and_installs_missing_packages() {
    let f = fixture();
    let out = create_bundle(&f);
    let data = f.dir.path().join("data");
    let host = FakeHost::default();
    let summary = install_from_with(&out, &data, &host).unwrap();
    let tarball = summary.images_tarball.unwrap();
    assert!(tarball.starts_with(data.join("agent/images")));
    // the written layout is an importable OCI layout naming the pause image
    let backing = mini_images::archive::open_file(&tarball, f.dir.path()).unwrap();
    let tar = mini_images::archive::TarIndex::build(backing, "t").unwrap();
    let plan = mini_images::layout::plan(tar).unwrap();
    assert!(plan.images[0]
        .names
        .contains(&mini_images::PAUSE_IMAGE.to_string()));
    assert_eq!(host.installs.lock().unwrap().len(), 1);
    // no part file is left behind
    let hidden = std::fs::read_dir(data.join("agent/images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(hidden, 0);
}

#[test]
fn install_from_corrupt_bundle_puts_nothing_in_place() {
    let f = fixture();
    let out = create_bundle(&f);
    let mut bytes = std::fs::read(&out).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0xff;
    std::fs::write(&out, bytes).unwrap();
    let data = f.dir.path().join("data");
    let host = FakeHost::default();
    assert!(install_from_with(&out, &data, &host).is_err());
    assert_eq!(
        std::fs::read_dir(data.join("agent/images"))
            .unwrap()
            .count(),
        0
    );
    assert!(host.installs.lock().unwrap().is_empty());
}

#[test]
fn install_from_with_runtime_present_skips_packages() {
    let f = fixture();
    let out = create_bundle(&f);
    let host = FakeHost {
        installed: true,
        ..FakeHost::default()
    };
    let summary = install_from_with(&out, &f.dir.path().join("data"), &host).unwrap();
    assert!(summary.installed_packages.is_empty());
    assert!(host.installs.lock().unwrap().is_empty());
}

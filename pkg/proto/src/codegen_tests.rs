//! Keeps the committed generated code (`src/cri/`, `src/containerd/`) in step with the vendored `.proto`
//! files: regenerates it with a pure-Rust protobuf compiler (`protox`) and `tonic-prost-build`, and
//! compares byte for byte. `MINI_REGENERATE_PROTO=1 cargo test -p mini-proto` rewrites the files instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `.proto` files compiled, relative to `proto/`; their imports come along.
const PROTO_FILES: &[&str] = &[
    "runtime/v1/api.proto",
    "github.com/containerd/containerd/api/services/content/v1/content.proto",
    "github.com/containerd/containerd/api/services/diff/v1/diff.proto",
    "github.com/containerd/containerd/api/services/images/v1/images.proto",
    "github.com/containerd/containerd/api/services/leases/v1/leases.proto",
    "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto",
];

const REGENERATE_ENV: &str = "MINI_REGENERATE_PROTO";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the code of a protobuf package lives under `src/`: the module path of `lib.rs`
/// (`runtime.v1` is `cri::v1`, `containerd.services.content.v1` is `containerd::services::content::v1`).
fn module_file(package: &str) -> PathBuf {
    let module = match package.strip_prefix("runtime.") {
        Some(rest) => format!("cri.{rest}"),
        None => package.to_string(),
    };
    PathBuf::from(format!("{}.rs", module.replace('.', "/")))
}

/// The header every generated file starts with (the workspace wants a `//!` line first).
fn header(package: &str) -> String {
    format!(
        "//! Generated from the vendored protobuf package `{package}` (`proto/`) by tonic-prost-build via protox;\n\
         //! do not edit: `{REGENERATE_ENV}=1 cargo test -p mini-proto` regenerates it.\n\n"
    )
}

/// Compiles the vendored files and returns each generated file's path under `src/` and its contents.
fn generate() -> BTreeMap<PathBuf, String> {
    let proto_dir = crate_dir().join("proto");
    let files: Vec<PathBuf> = PROTO_FILES.iter().map(|f| proto_dir.join(f)).collect();
    let descriptors =
        protox::compile(&files, [&proto_dir]).expect("compile the vendored .proto files");
    let out = tempfile::tempdir().expect("tempdir");
    tonic_prost_build::configure()
        .build_server(false)
        .emit_rerun_if_changed(false)
        .out_dir(out.path())
        .compile_fds(descriptors)
        .expect("generate Rust code");
    let mut generated = BTreeMap::new();
    for entry in std::fs::read_dir(out.path()).expect("read the output dir") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name");
        let package = name.strip_suffix(".rs").expect("a .rs file");
        let code = std::fs::read_to_string(&path).expect("read generated code");
        generated.insert(module_file(package), format!("{}{code}", header(package)));
    }
    generated
}

/// The generated files committed under `src/` (recognised by their header).
fn committed(dir: &Path, src: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            committed(&path, src, out);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            if text.starts_with("//! Generated from the vendored protobuf package") {
                let rel = path.strip_prefix(src).expect("under src").to_path_buf();
                out.insert(rel, text);
            }
        }
    }
}

#[test]
fn generated_code_matches_proto_files() {
    let src = crate_dir().join("src");
    let generated = generate();
    let mut existing = BTreeMap::new();
    committed(&src, &src, &mut existing);

    if std::env::var_os(REGENERATE_ENV).is_some_and(|v| v == "1") {
        for stale in existing.keys().filter(|p| !generated.contains_key(*p)) {
            std::fs::remove_file(src.join(stale)).expect("remove a stale generated file");
        }
        for (rel, code) in &generated {
            let path = src.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("create module dir");
            std::fs::write(&path, code).expect("write generated code");
        }
        return;
    }

    let differing: Vec<String> = generated
        .iter()
        .filter(|(rel, code)| existing.get(*rel) != Some(*code))
        .map(|(rel, _)| format!("src/{} (stale or missing)", rel.display()))
        .chain(
            existing
                .keys()
                .filter(|rel| !generated.contains_key(*rel))
                .map(|rel| format!("src/{} (no longer generated)", rel.display())),
        )
        .collect();
    assert!(
        differing.is_empty(),
        "the committed generated code does not match pkg/proto/proto/*.proto: {differing:?}; \
         regenerate it with `{REGENERATE_ENV}=1 cargo test -p mini-proto` and commit the result"
    );
}

#[test]
fn module_file_follows_the_lib_module_tree() {
    assert_eq!(module_file("runtime.v1"), PathBuf::from("cri/v1.rs"));
    assert_eq!(
        module_file("containerd.types"),
        PathBuf::from("containerd/types.rs")
    );
    assert_eq!(
        module_file("containerd.services.snapshots.v1"),
        PathBuf::from("containerd/services/snapshots/v1.rs")
    );
}

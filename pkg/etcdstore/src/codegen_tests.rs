//! Keeps the committed generated etcd API code (`src/pb/`) in step with the vendored `.proto`
//! files: regenerates it with a pure-Rust protobuf compiler (`protox`) and `tonic-prost-build`,
//! and compares byte for byte. `MINI_REGENERATE_PROTO=1 cargo test -p mini-etcdstore codegen`
//! rewrites the files instead.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The `.proto` file compiled, relative to `proto/`; its imports come along.
const PROTO_FILE: &str = "etcd/api/etcdserverpb/rpc.proto";

/// The generated packages the client uses (the option packages only annotate the services).
const PACKAGES: &[&str] = &["etcdserverpb", "mvccpb", "authpb"];

const REGENERATE_ENV: &str = "MINI_REGENERATE_PROTO";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header(package: &str) -> String {
    format!(
        "//! Generated from the vendored etcd protobuf package `{package}` (`proto/`) by tonic-prost-build via protox;\n\
         //! do not edit: `{REGENERATE_ENV}=1 cargo test -p mini-etcdstore codegen` regenerates it.\n\n"
    )
}

/// Compiles the vendored files and returns each used package's file name under `src/pb/` and
/// its contents.
fn generate() -> BTreeMap<String, String> {
    let proto_dir = crate_dir().join("proto");
    let descriptors = protox::compile([proto_dir.join(PROTO_FILE)], [&proto_dir])
        .expect("compile the vendored .proto files");
    let out = tempfile::tempdir().expect("tempdir");
    tonic_prost_build::configure()
        .build_server(false)
        .emit_rerun_if_changed(false)
        .out_dir(out.path())
        .compile_fds(descriptors)
        .expect("generate Rust code");
    PACKAGES
        .iter()
        .map(|package| {
            let code = std::fs::read_to_string(out.path().join(format!("{package}.rs")))
                .expect("read generated code");
            (
                format!("{package}.rs"),
                format!("{}{code}", header(package)),
            )
        })
        .collect()
}

#[test]
fn codegen_matches_proto_files() {
    let dir = crate_dir().join("src").join("pb");
    let generated = generate();
    if std::env::var_os(REGENERATE_ENV).is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).expect("create src/pb");
        for (name, code) in &generated {
            std::fs::write(dir.join(name), code).expect("write generated code");
        }
        return;
    }
    let differing: Vec<&String> = generated
        .iter()
        .filter(|(name, code)| std::fs::read_to_string(dir.join(name)).ok().as_ref() != Some(*code))
        .map(|(name, _)| name)
        .collect();
    assert!(
        differing.is_empty(),
        "the committed code in src/pb does not match proto/: {differing:?}; regenerate it with \
         `{REGENERATE_ENV}=1 cargo test -p mini-etcdstore codegen` and commit the result"
    );
}

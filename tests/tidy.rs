//! Repository hygiene: every Rust file says what it is for, and no `todo!`/`unimplemented!` or
//! `dbg!` is left in the product code.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "pkg", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 20,
        "expected the workspace's Rust files, found {}",
        files.len()
    );
    files
}

#[test]
fn rust_files_start_with_a_module_doc_line() {
    let missing: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            !text.starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:?}"
    );
}

#[test]
fn product_code_has_no_placeholders() {
    let banned = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("dbg", "!("),
    ];
    let offenders: Vec<String> = all_rust_files()
        .into_iter()
        .filter(|p| !p.starts_with(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")))
        .flat_map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            banned
                .iter()
                .filter(|b| text.contains(*b))
                .map(|b| format!("{}: {b}", p.display()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(offenders.is_empty(), "placeholders left: {offenders:?}");
}

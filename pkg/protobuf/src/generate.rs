//! Generator of `schema.txt` from the sources of the `k8s-pb` and `k8s-openapi` crates.
//!
//! `k8s-pb` gives every message with its fields (wire tag, kind, cardinality, message
//! type), but only with snake_case Rust names; `k8s-openapi` gives the exact JSON names
//! (`podCIDR`, `clusterIPs`, `$ref`) and which fields are required. The test
//! `generated_schema_is_current` regenerates the schema and compares it with the
//! committed file; run it with `MINI_PROTOBUF_REGENERATE=1` to rewrite the file after
//! upgrading `k8s-pb`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// One field of a `k8s-openapi` struct.
struct OpenapiField {
    json: String,
    required: bool,
}

/// Finds the `src` directories of `k8s-pb` and `k8s-openapi`: their versions from the
/// workspace's `Cargo.lock`, their sources in the cargo registry.
fn crate_sources() -> Option<(PathBuf, PathBuf)> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = manifest
        .ancestors()
        .find_map(|dir| fs::read_to_string(dir.join("Cargo.lock")).ok())?;
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let registries: Vec<PathBuf> = fs::read_dir(home.join("registry/src"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    let find = |name: &str| -> Option<PathBuf> {
        let header = format!("name = \"{name}\"\nversion = \"");
        let start = lock.find(&header)? + header.len();
        let version = lock[start..].split('"').next()?;
        registries
            .iter()
            .map(|r| r.join(format!("{name}-{version}/src")))
            .find(|p| p.is_dir())
    };
    Some((find("k8s-pb")?, find("k8s-openapi")?))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lowercase alphanumerics only: the key that matches a snake_case name to a JSON name.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `api/core/v1/config_map.rs` (below a `v1_NN` folder) → `api.core.v1`.
fn package_of(rel: &Path, skip_file: bool) -> String {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if skip_file {
        parts.pop();
    }
    parts.join(".")
}

/// Parses the `k8s-openapi` structs: (package, lowercase struct name) → fields by
/// normalized JSON name. The oldest Kubernetes version (the one the workspace builds
/// `k8s-openapi` for) wins; newer versions only add types.
fn openapi_structs(src: &Path) -> HashMap<(String, String), HashMap<String, OpenapiField>> {
    let mut versions: Vec<PathBuf> = fs::read_dir(src)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("v1_"))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_string_lossy()[3..].parse::<u32>().ok())
            .unwrap_or(0)
    });
    let mut out = HashMap::new();
    for version in &versions {
        let mut files = Vec::new();
        rust_files(version, &mut files);
        for file in files {
            let Ok(text) = fs::read_to_string(&file) else {
                continue;
            };
            let Ok(rel) = file.strip_prefix(version) else {
                continue;
            };
            let package = package_of(rel, true);
            let mut struct_name = None;
            let mut rust_fields: HashMap<String, bool> = HashMap::new();
            let mut json_of: HashMap<String, String> = HashMap::new();
            let mut in_struct = false;
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("pub struct ") {
                    if struct_name.is_none() {
                        struct_name = rest.split([' ', '{', '(']).next().map(str::to_string);
                        in_struct = rest.trim_end().ends_with('{');
                    }
                } else if in_struct {
                    if line.starts_with('}') {
                        in_struct = false;
                    } else if let Some(rest) = line.trim().strip_prefix("pub ") {
                        if let Some((name, ty)) = rest.split_once(": ") {
                            let name = name.trim_start_matches("r#").to_string();
                            rust_fields.insert(name, !ty.starts_with("Option<"));
                        }
                    }
                } else if let Some((json, key)) = line.trim().split_once("\" => Field::Key_") {
                    if let Some(json) = json.strip_prefix('"') {
                        let key = key.trim_end_matches(',').to_string();
                        json_of.insert(key, json.to_string());
                    }
                }
            }
            let Some(name) = struct_name else { continue };
            let key = (package, name.to_lowercase());
            if out.contains_key(&key) {
                continue;
            }
            let fields = rust_fields
                .into_iter()
                .filter_map(|(rust, required)| {
                    let json = json_of.get(&rust)?.clone();
                    Some((normalize(&json), OpenapiField { json, required }))
                })
                .collect();
            out.insert(key, fields);
        }
    }
    out
}

/// Resolves a Rust type path written in `package` to a message's full name.
fn resolve(package: &str, path: &str) -> String {
    let mut segments: Vec<&str> = package.split('.').collect();
    let mut parts: Vec<&str> = path.trim_start_matches("::").split("::").collect();
    if parts.first() == Some(&"crate") {
        segments.clear();
        parts.remove(0);
    }
    while parts.first() == Some(&"super") {
        segments.pop();
        parts.remove(0);
    }
    segments.extend(parts);
    segments.join(".")
}

/// The innermost type path of a field type such as `Option<Box<super::X>>` or
/// `BTreeMap<String, super::Y>`.
fn inner_type(ty: &str) -> String {
    let ty: String = ty.chars().filter(|c| !c.is_whitespace()).collect();
    let ty = ty.trim_end_matches(',');
    let inner = if let Some(pos) = ty.find("BTreeMap<") {
        let args = &ty[pos + "BTreeMap<".len()..];
        let args = args.strip_suffix('>').unwrap_or(args);
        args.split_once(',').map_or(args, |(_, v)| v).to_string()
    } else {
        let mut t = ty.to_string();
        for wrapper in [
            "::core::option::Option<",
            "::prost::alloc::vec::Vec<",
            "::prost::alloc::boxed::Box<",
        ] {
            if let Some(rest) = t.strip_prefix(wrapper) {
                t = rest.strip_suffix('>').unwrap_or(rest).to_string();
            }
        }
        t
    };
    inner.trim_end_matches(['>', ',']).to_string()
}

/// Generates the schema text from the two crates' sources.
fn generate(pb_src: &Path, openapi_src: &Path) -> String {
    let openapi = openapi_structs(openapi_src);
    let mut files = Vec::new();
    rust_files(pb_src, &mut files);
    files.sort();
    let mut messages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let Ok(rel) = file.strip_prefix(pb_src) else {
            continue;
        };
        if rel.file_name().is_none_or(|n| n != "mod.rs") {
            continue;
        }
        let package = package_of(rel, true);
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let Some(rest) = lines[i].strip_prefix("pub struct ") else {
                i += 1;
                continue;
            };
            let name = rest
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string();
            if rest.trim_end().ends_with("{}") {
                messages.insert(format!("{package}.{name}"), Vec::new());
                i += 1;
                continue;
            }
            let structure = openapi.get(&(package.clone(), name.to_lowercase()));
            let mut fields = Vec::new();
            i += 1;
            let mut attr: Option<String> = None;
            while i < lines.len() && !lines[i].starts_with('}') {
                let line = lines[i].trim();
                if let Some(a) = line.strip_prefix("#[prost(") {
                    attr = Some(a.trim_end_matches(")]").to_string());
                    i += 1;
                    continue;
                }
                if let (Some(a), Some(decl)) = (attr.take(), line.strip_prefix("pub ")) {
                    let mut decl = decl.to_string();
                    let balanced = |d: &str| d.matches('<').count() == d.matches('>').count();
                    while !(decl.trim_end().ends_with(',') && balanced(&decl))
                        && i + 1 < lines.len()
                    {
                        i += 1;
                        decl.push_str(lines[i].trim());
                    }
                    let (rust, ty) = decl.split_once(':').unwrap_or((&decl, ""));
                    let rust = rust.trim().trim_start_matches("r#");
                    fields.push(field_line(&package, structure, rust, &a, ty));
                }
                i += 1;
            }
            messages.insert(format!("{package}.{name}"), fields);
        }
    }
    let mut out = String::from(
        "# generated from the k8s-pb and k8s-openapi sources by src/generate.rs; do not edit\n\
         # message NAME, then: TAG JSON_NAME opt|rep|map KIND [MESSAGE_TYPE] [req]\n",
    );
    for (name, fields) in messages {
        out.push_str("message ");
        out.push_str(&name);
        out.push('\n');
        for f in fields {
            out.push_str(&f);
            out.push('\n');
        }
    }
    out
}

fn field_line(
    package: &str,
    structure: Option<&HashMap<String, OpenapiField>>,
    rust: &str,
    attr: &str,
    ty: &str,
) -> String {
    let parts: Vec<&str> = attr.split(", ").map(str::trim).collect();
    let tag = parts
        .iter()
        .find_map(|p| p.strip_prefix("tag = \""))
        .map(|t| t.trim_end_matches('"'))
        .unwrap_or("0");
    let (card, kind) = if let Some(map) = attr.strip_prefix("btree_map = \"") {
        let types = map.split('"').next().unwrap_or_default();
        let value = types.split(", ").nth(1).unwrap_or("string");
        ("map", value.to_string())
    } else {
        let kind = parts.first().copied().unwrap_or("string");
        let kind = kind.split(' ').next().unwrap_or(kind);
        let card = if parts.contains(&"repeated") {
            "rep"
        } else {
            "opt"
        };
        (card, kind.to_string())
    };
    let openapi_field = structure.and_then(|s| s.get(&normalize(rust)));
    let json = openapi_field.map_or_else(|| lower_camel(rust), |f| f.json.clone());
    let mut line = format!("{tag} {json} {card} {kind}");
    if kind == "message" {
        line.push(' ');
        line.push_str(&resolve(package, &inner_type(ty)));
    }
    if openapi_field.is_some_and(|f| f.required) {
        line.push_str(" req");
    }
    line
}

#[test]
fn generated_schema_is_current() {
    let Some((pb, openapi)) = crate_sources() else {
        eprintln!("skipping: the k8s-pb sources are not in the cargo registry");
        return;
    };
    let generated = generate(&pb, &openapi);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/schema.txt");
    if std::env::var_os("MINI_PROTOBUF_REGENERATE").is_some() {
        fs::write(&path, &generated).expect("write schema.txt");
        return;
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "src/schema.txt is stale: rerun with MINI_PROTOBUF_REGENERATE=1"
    );
}

//! Splitting a manifest file into Kubernetes objects, each with the line it starts on:
//! multi-document YAML (`---`), JSON, and `kind: List`; plus the file checksum and the identity
//! of an object used to tell which ones left a file.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// One object of a manifest file.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 1-based line of the file where the object's document starts.
    pub line: usize,
    pub object: Value,
}

/// A document that could not be read as an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// 1-based line of the file the problem is on.
    pub line: usize,
    pub message: String,
}

/// What a manifest file holds: the objects it names and the documents that are broken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub objects: Vec<Document>,
    pub errors: Vec<DocumentError>,
}

/// The sha256 of a file's bytes, hex encoded (the Addon's `spec.checksum`).
pub fn checksum(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether a file name is a manifest (`.yaml`, `.yml`, `.json`, not hidden).
pub fn is_manifest_file(name: &str) -> bool {
    !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
}

/// The name without its manifest extension (`traefik.yaml` -> `traefik`).
pub fn file_stem(name: &str) -> &str {
    for ext in [".yaml", ".yml", ".json"] {
        if let Some(stem) = name.strip_suffix(ext) {
            return stem;
        }
    }
    name
}

/// Reads a manifest file: JSON for `.json` names, multi-document YAML otherwise.
pub fn parse(file_name: &str, text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    if file_name.ends_with(".json") {
        match serde_json::from_str::<Value>(text) {
            Ok(value) => {
                let line = first_content_line(text, 1);
                add_value(&mut parsed, line, value);
            }
            Err(e) => parsed.errors.push(DocumentError {
                line: e.line().max(1),
                message: format!("invalid JSON: {e}"),
            }),
        }
        return parsed;
    }
    for (start, chunk) in split_yaml(text) {
        if chunk
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            continue;
        }
        let line = first_content_line(&chunk, start);
        match serde_yaml_ng::from_str::<Value>(&chunk) {
            Ok(value) => add_value(&mut parsed, line, value),
            Err(e) => {
                let at = e
                    .location()
                    .map(|l| start + l.line().saturating_sub(1))
                    .unwrap_or(line);
                parsed.errors.push(DocumentError {
                    line: at,
                    message: format!("invalid YAML: {}", strip_location(&e.to_string())),
                });
            }
        }
    }
    parsed
}

/// serde_yaml puts " at line L column C" in its message; the caller names the file's line.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The YAML documents of `text`, each with the 1-based file line its text starts on. A
/// document keeps its `---` line blanked out, so line numbers within it map to the file's.
fn split_yaml(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let is_start = line == "---"
            || line.starts_with("--- ")
            || line.starts_with("---\t")
            || line.starts_with("---#");
        let is_end = line == "..." || line.starts_with("... ");
        if is_start || is_end {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 1;
            if is_start {
                // `--- {a: 1}` carries content on the marker line: keep it, columns intact
                current.push_str("   ");
                current.push_str(&line[3..]);
            }
            current.push('\n');
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs
}

/// The first line of `chunk` (numbered from `start`) that is not blank or a comment.
fn first_content_line(chunk: &str, start: usize) -> usize {
    chunk
        .lines()
        .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|i| start + i)
        .unwrap_or(start)
}

fn add_value(parsed: &mut Parsed, line: usize, value: Value) {
    match value {
        Value::Null => {}
        Value::Object(_) if is_list(&value) => {
            for item in value["items"].as_array().into_iter().flatten() {
                add_value(parsed, line, item.clone());
            }
        }
        Value::Object(_) => match check_object(&value) {
            Ok(()) => parsed.objects.push(Document {
                line,
                object: value,
            }),
            Err(message) => parsed.errors.push(DocumentError { line, message }),
        },
        other => parsed.errors.push(DocumentError {
            line,
            message: format!(
                "a document must be a Kubernetes object (a mapping), not {}",
                type_name(&other)
            ),
        }),
    }
}

fn is_list(value: &Value) -> bool {
    value["kind"]
        .as_str()
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && value["items"].is_array()
}

fn check_object(value: &Value) -> Result<(), String> {
    for field in ["apiVersion", "kind"] {
        if value[field].as_str().is_none_or(str::is_empty) {
            return Err(format!("object has no {field}"));
        }
    }
    if value["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{} has no metadata.name (generateName is not supported for applied manifests)",
            value["kind"].as_str().unwrap_or_default()
        ));
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// An object's identity across API versions: (group, kind, namespace, name).
pub type RefKey = (String, String, String, String);

/// An object applied from a manifest, as the Addon's status records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// The reference to `object`, in `namespace` (already defaulted by the caller).
    pub fn of(object: &Value, namespace: &str) -> ObjectRef {
        ObjectRef {
            api_version: object["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            kind: object["kind"].as_str().unwrap_or_default().to_string(),
            namespace: namespace.to_string(),
            name: object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// The API group (`apps` for `apps/v1`, empty for `v1`).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or_default()
    }

    /// The version (`v1` for `apps/v1`).
    pub fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(_, v)| v)
            .unwrap_or(&self.api_version)
    }

    /// Identity across versions: moving `apps/v1beta1` to `apps/v1` is the same object.
    pub fn key(&self) -> RefKey {
        (
            self.group().to_string(),
            self.kind.clone(),
            self.namespace.clone(),
            self.name.clone(),
        )
    }

    /// `kind/name` or `kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
        });
        if !self.namespace.is_empty() {
            v["namespace"] = Value::String(self.namespace.clone());
        }
        v
    }

    pub fn from_json(v: &Value) -> Option<ObjectRef> {
        Some(ObjectRef {
            api_version: v["apiVersion"].as_str()?.to_string(),
            kind: v["kind"].as_str()?.to_string(),
            namespace: v["namespace"].as_str().unwrap_or_default().to_string(),
            name: v["name"].as_str()?.to_string(),
        })
    }
}

/// Apply order: Namespaces, then CustomResourceDefinitions, then everything else (file order
/// kept within each). Removal runs the reverse.
pub fn apply_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_multi_document_yaml_records_start_lines() {
        let text = "# a comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\n# two\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n---\n";
        let parsed = parse("x.yaml", text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let lines: Vec<usize> = parsed.objects.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![2, 8]);
        assert_eq!(parsed.objects[1].object["metadata"]["name"], "b");
    }

    #[test]
    fn parse_syntax_error_names_file_line_and_keeps_other_documents() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n   bad: [\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: c}\n";
        let parsed = parse("x.yaml", text);
        assert_eq!(parsed.objects.len(), 2);
        assert_eq!(parsed.errors.len(), 1);
        let err = &parsed.errors[0];
        assert!((8..=10).contains(&err.line), "line {}", err.line);
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(!err.message.contains("at line"), "{}", err.message);
    }

    #[test]
    fn parse_marker_with_content_keeps_line() {
        let parsed = parse(
            "x.yaml",
            "--- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n",
        );
        assert_eq!(parsed.objects.len(), 1);
        assert_eq!(parsed.objects[0].line, 1);
    }

    #[test]
    fn parse_json_error_has_line() {
        let parsed = parse("x.json", "{\n \"apiVersion\": \"v1\",\n \"kind\": ,\n}\n");
        assert!(parsed.objects.is_empty());
        assert_eq!(parsed.errors[0].line, 3);
    }

    #[test]
    fn parse_list_expands_items() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}},
        ]});
        let parsed = parse("l.json", &list.to_string());
        assert_eq!(parsed.objects.len(), 2);
        assert!(parsed.errors.is_empty());
    }

    #[test]
    fn parse_object_without_name_is_an_error_at_its_line() {
        let parsed = parse("x.yaml", "\n\napiVersion: v1\nkind: ConfigMap\n");
        assert_eq!(
            parsed.errors,
            vec![DocumentError {
                line: 3,
                message: "ConfigMap has no metadata.name (generateName is not supported for applied manifests)".into()
            }]
        );
    }

    #[test]
    fn parse_scalar_document_is_an_error() {
        let parsed = parse("x.yaml", "just text\n");
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0].message.contains("a string"));
    }

    #[test]
    fn parse_empty_and_comment_documents_are_skipped() {
        let parsed = parse("x.yaml", "---\n# nothing\n---\n\n...\n");
        assert_eq!(parsed, Parsed::default());
    }

    #[test]
    fn checksum_is_sha256_hex() {
        assert_eq!(
            checksum(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn is_manifest_file_accepts_yaml_and_json_only() {
        assert!(is_manifest_file("a.yaml"));
        assert!(is_manifest_file("a.yml"));
        assert!(is_manifest_file("a.json"));
        assert!(!is_manifest_file("a.yaml.swp"));
        assert!(!is_manifest_file(".a.yaml"));
        assert_eq!(file_stem("local-storage.yaml"), "local-storage");
    }

    #[test]
    fn object_ref_key_ignores_version() {
        let a = ObjectRef::of(
            &json!({"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "x"}}),
            "default",
        );
        let b = ObjectRef::of(
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}),
            "default",
        );
        assert_eq!(a.key(), b.key());
        assert_eq!(b.group(), "apps");
        assert_eq!(b.version(), "v1");
        assert_eq!(ObjectRef::from_json(&b.to_json()), Some(b));
    }
}

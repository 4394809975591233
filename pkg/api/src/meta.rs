//! Object metadata helpers: reading names, stamping server-owned fields, and splicing the
//! resourceVersion into stored JSON without re-parsing it.

use serde_json::{Map, Value};

/// `metadata.name`, or "".
pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// `metadata.namespace`, or "".
pub fn namespace(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// The metadata map, created when missing (replaces a non-object `metadata`).
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("object ensured above");
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("metadata ensured above")
}

/// RFC 3339 UTC timestamp with second precision, as `metav1.Time`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// RFC 3339 UTC timestamp with microseconds, as `metav1.MicroTime`.
pub fn now_micro() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Upstream's generateName suffix: five characters from a consonant-and-digit alphabet.
pub fn generate_name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

/// Puts `apiVersion`, `kind`, `metadata` first (the storage form `splice_resource_version`
/// relies on) and drops `metadata.resourceVersion`.
pub fn to_storage_bytes(obj: &Value) -> Vec<u8> {
    let mut out = Map::new();
    if let Some(map) = obj.as_object() {
        for key in ["apiVersion", "kind", "metadata"] {
            if let Some(v) = map.get(key) {
                out.insert(key.to_string(), v.clone());
            }
        }
        if let Some(Value::Object(meta)) = out.get_mut("metadata") {
            meta.remove("resourceVersion");
        }
        for (k, v) in map {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::to_vec(&Value::Object(out)).unwrap_or_default()
}

/// Inserts `"resourceVersion":"<rv>"` into the top-level metadata of stored JSON.
/// Stored JSON always has `apiVersion`, `kind` (plain strings) then `metadata`, so the first
/// `"metadata":{` is the top-level one (a JSON string can't contain an unescaped quote).
pub fn splice_resource_version(stored: &[u8], rv: u64) -> Vec<u8> {
    const NEEDLE: &[u8] = b"\"metadata\":{";
    let mut out = Vec::with_capacity(stored.len() + 32);
    if let Some(pos) = stored.windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        let at = pos + NEEDLE.len();
        out.extend_from_slice(&stored[..at]);
        out.extend_from_slice(b"\"resourceVersion\":\"");
        out.extend_from_slice(rv.to_string().as_bytes());
        out.push(b'"');
        if stored.get(at) != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(&stored[at..]);
    } else {
        out.extend_from_slice(stored);
    }
    out
}

/// Parses stored JSON and sets its resourceVersion.
pub fn from_storage(stored: &[u8], rv: u64) -> Result<Value, serde_json::Error> {
    let mut obj: Value = serde_json::from_slice(stored)?;
    metadata_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
    Ok(obj)
}

/// `metadata.resourceVersion` as a number; `None` when absent or empty.
pub fn resource_version(obj: &Value) -> Result<Option<u64>, String> {
    match obj["metadata"]["resourceVersion"].as_str() {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid resourceVersion {s:?}")),
    }
}

/// The object with `metadata.finalizers` as a list of strings.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splice_resource_version_into_storage_form_parses_back() {
        let obj = json!({"kind":"Pod","metadata":{"name":"a","resourceVersion":"9"},"apiVersion":"v1","spec":{"x":{"metadata":{}}}});
        let stored = to_storage_bytes(&obj);
        let spliced = splice_resource_version(&stored, 42);
        let back: Value = serde_json::from_slice(&spliced).unwrap();
        assert_eq!(back["metadata"]["resourceVersion"], "42");
        assert_eq!(back["metadata"]["name"], "a");
        assert!(back["spec"]["x"]["metadata"]
            .get("resourceVersion")
            .is_none());
    }

    #[test]
    fn splice_resource_version_into_empty_metadata_is_valid_json() {
        let stored = to_storage_bytes(&json!({"apiVersion":"v1","kind":"X","metadata":{}}));
        let back: Value = serde_json::from_slice(&splice_resource_version(&stored, 7)).unwrap();
        assert_eq!(back["metadata"], json!({"resourceVersion":"7"}));
    }

    #[test]
    fn generate_name_suffix_is_five_allowed_chars() {
        let s = generate_name_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}

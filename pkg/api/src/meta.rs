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
    let mut out = Vec::with_capacity(1024);
    let written = match obj.as_object() {
        Some(map) => serde_json::to_writer(&mut out, &StorageForm(map)),
        None => serde_json::to_writer(&mut out, &Value::Object(Map::new())),
    };
    if written.is_err() {
        out.clear();
    }
    out
}

/// An object in storage order (`apiVersion`, `kind`, `metadata` without `resourceVersion`,
/// then the rest as they come), serialised without copying it.
struct StorageForm<'a>(&'a Map<String, Value>);

/// `metadata` without `resourceVersion`, in the order `Map::remove` leaves.
struct StoredMetadata<'a>(&'a Map<String, Value>);

impl serde::Serialize for StorageForm<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        for key in ["apiVersion", "kind"] {
            if let Some(v) = self.0.get(key) {
                m.serialize_entry(key, v)?;
            }
        }
        match self.0.get("metadata") {
            Some(Value::Object(meta)) => m.serialize_entry("metadata", &StoredMetadata(meta))?,
            Some(v) => m.serialize_entry("metadata", v)?,
            None => {}
        }
        for (k, v) in self.0 {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

impl serde::Serialize for StoredMetadata<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // the order a swap-remove of `resourceVersion` leaves: the last entry takes its place
        let mut m = s.serialize_map(None)?;
        let rv = self.0.keys().position(|k| k == "resourceVersion");
        let last = self.0.len().saturating_sub(1);
        for (i, (k, v)) in self.0.iter().enumerate() {
            if Some(i) == rv {
                if i != last {
                    if let Some((lk, lv)) = self.0.iter().next_back() {
                        m.serialize_entry(lk, lv)?;
                    }
                }
            } else if rv.is_none() || i != last {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

/// Inserts `"resourceVersion":"<rv>"` into the top-level metadata of stored JSON.
/// Stored JSON always has `apiVersion`, `kind` (plain strings) then `metadata`, so the first
/// `"metadata":{` is the top-level one (a JSON string can't contain an unescaped quote).
pub fn splice_resource_version(stored: &[u8], rv: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len() + 32);
    splice_resource_version_into(&mut out, stored, rv);
    out
}

/// [`splice_resource_version`], appending to `out`.
pub fn splice_resource_version_into(out: &mut Vec<u8>, stored: &[u8], rv: u64) {
    const NEEDLE: &[u8] = b"\"metadata\":{";
    match stored.windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        Some(pos) => {
            let at = pos + NEEDLE.len();
            out.extend_from_slice(&stored[..at]);
            out.extend_from_slice(b"\"resourceVersion\":\"");
            out.extend_from_slice(rv.to_string().as_bytes());
            out.push(b'"');
            if stored.get(at) != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(&stored[at..]);
        }
        None => out.extend_from_slice(stored),
    }
}

/// The length of [`splice_resource_version`]'s output, without building it.
pub fn spliced_len(stored: &[u8], rv: u64) -> usize {
    const NEEDLE: &[u8] = b"\"metadata\":{";
    match stored.windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        Some(pos) => {
            let at = pos + NEEDLE.len();
            let comma = usize::from(stored.get(at) != Some(&b'}'));
            stored.len() + "\"resourceVersion\":\"".len() + decimal_len(rv) + 1 + comma
        }
        None => stored.len(),
    }
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
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

    /// The storage form built by copying, as before the borrowing serializer.
    fn storage_by_copy(obj: &Value) -> Vec<u8> {
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
        serde_json::to_vec(&Value::Object(out)).unwrap()
    }

    #[test]
    fn to_storage_bytes_matches_the_copying_form() {
        for obj in [
            json!({"spec": {"a": [1, {"b": null}]}, "metadata": {"resourceVersion": "3", "name": "x", "labels": {"a": "b"}}, "kind": "Pod", "status": {}, "apiVersion": "v1"}),
            json!({"apiVersion": "v1", "kind": "X", "metadata": null, "data": "\u{1}\"q"}),
            json!({"kind": "X"}),
            json!({"metadata": {"name": "a", "resourceVersion": "1"}}),
            json!({"metadata": {"resourceVersion": "1"}}),
            json!({"metadata": {"a": 1, "b": 2, "c": 3}}),
            json!({}),
            json!([1, 2]),
            json!("s"),
        ] {
            assert_eq!(to_storage_bytes(&obj), storage_by_copy(&obj), "{obj}");
        }
    }

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
    fn spliced_len_is_the_length_of_the_splice() {
        for stored in [
            &b"{\"apiVersion\":\"v1\",\"kind\":\"X\",\"metadata\":{}}"[..],
            b"{\"apiVersion\":\"v1\",\"kind\":\"X\",\"metadata\":{\"name\":\"a\"}}",
            b"{\"kind\":\"X\"}",
        ] {
            for rv in [0, 9, 10, 99, 100, 12345, u64::MAX] {
                assert_eq!(
                    spliced_len(stored, rv),
                    splice_resource_version(stored, rv).len()
                );
            }
        }
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

//! Strategic merge patch, server side (upstream `k8s.io/apimachinery/pkg/util/strategicpatch`
//! semantics with `MergeParallelList` and `IgnoreUnmatchedNulls`).

use crate::{strategy, ListStrategy, PatchError};
use serde_json::{Map, Value};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to `doc` for objects of (group, kind).
pub fn apply(doc: &Value, patch: &Value, group: &str, kind: &str) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Malformed(format!(
            "strategic merge patch must be a JSON object, got {}",
            type_name(patch)
        )));
    };
    let original = match doc {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::Apply(format!(
                "cannot apply a strategic merge patch to a {}",
                type_name(other)
            )))
        }
    };
    let smp = Smp { group, kind };
    let merged = smp.merge_map(original, patch.clone(), &mut Vec::new())?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// Formats a JSON value the way Go's `%v` prints the decoded `interface{}` (used in error
/// messages that kubectl users know from upstream).
pub(crate) fn go_format(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_format).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", k, go_format(&m[k.as_str()])))
                .collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

fn no_merge_key(item: &Map<String, Value>, key: &str) -> PatchError {
    PatchError::Apply(format!(
        "map: {} does not contain declared merge key: {}",
        go_format(&Value::Object(item.clone())),
        key
    ))
}

struct Smp<'a> {
    group: &'a str,
    kind: &'a str,
}

impl Smp<'_> {
    fn strategy(&self, path: &[String]) -> ListStrategy {
        let names: Vec<&str> = path.iter().map(String::as_str).collect();
        strategy::lookup(self.group, self.kind, &names)
    }

    /// Merges `patch` into `original`; `None` means the map was deleted (`$patch: delete`).
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        path: &mut Vec<String>,
    ) -> Result<Option<Map<String, Value>>, PatchError> {
        if let Some(directive) = patch.shift_remove(DIRECTIVE) {
            match directive.as_str() {
                Some("replace") => return self.merge_map(Map::new(), patch, path),
                Some("delete") => return Ok(None),
                Some("merge") => {}
                _ => {
                    return Err(PatchError::Malformed(format!(
                        "Unknown patch type: {} in map: {}",
                        go_format(&directive),
                        go_format(&Value::Object(patch))
                    )))
                }
            }
        }

        if let Some(retain) = patch.shift_remove(RETAIN_KEYS) {
            let Value::Array(keys) = retain else {
                return Err(PatchError::Malformed(
                    "invalid patch: the value of $retainKeys must be a list".to_string(),
                ));
            };
            let mut keep = Vec::with_capacity(keys.len());
            for k in keys {
                match k {
                    Value::String(s) => keep.push(s),
                    other => {
                        return Err(PatchError::Malformed(format!(
                            "invalid patch: $retainKeys must contain strings, got {}",
                            go_format(&other)
                        )))
                    }
                }
            }
            original.retain(|k, _| keep.iter().any(|s| s == k));
        }

        self.merge_ordered_lists(&mut original, &mut patch, path)?;

        for (key, patch_value) in patch {
            let (field, delete_list) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
                Some(f) => (f.to_string(), true),
                None => (key, false),
            };
            if !delete_list && field.starts_with('$') {
                // Unknown or already handled directive: never copied into the result.
                continue;
            }
            if patch_value.is_null() {
                if !delete_list {
                    original.shift_remove(&field);
                }
                continue;
            }
            path.push(field.clone());
            let result = self.merge_field(&mut original, &field, patch_value, delete_list, path);
            path.pop();
            result?;
        }
        Ok(Some(original))
    }

    fn merge_field(
        &self,
        original: &mut Map<String, Value>,
        field: &str,
        patch_value: Value,
        delete_list: bool,
        path: &mut Vec<String>,
    ) -> Result<(), PatchError> {
        match (original.get_mut(field), patch_value) {
            (None, patch_value) => {
                if !delete_list {
                    if let Some(v) = self.clean(patch_value, path)? {
                        original.insert(field.to_string(), v);
                    }
                }
            }
            (Some(Value::Object(o)), Value::Object(p)) => {
                match self.merge_map(std::mem::take(o), p, path)? {
                    Some(m) => *o = m,
                    None => {
                        original.shift_remove(field);
                    }
                }
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                let strategy = self.strategy(path);
                *o = self.merge_list(std::mem::take(o), p, strategy, delete_list, path)?;
            }
            (Some(slot), patch_value) => {
                if !delete_list {
                    match self.clean(patch_value, path)? {
                        Some(v) => *slot = v,
                        None => {
                            original.shift_remove(field);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A patch value for a field absent from the original: directives are processed against
    /// an empty value and nulls dropped.
    fn clean(&self, value: Value, path: &mut Vec<String>) -> Result<Option<Value>, PatchError> {
        Ok(match value {
            Value::Object(p) => self.merge_map(Map::new(), p, path)?.map(Value::Object),
            Value::Array(p) => {
                let strategy = self.strategy(path);
                Some(Value::Array(self.merge_list(
                    Vec::new(),
                    p,
                    strategy,
                    false,
                    path,
                )?))
            }
            Value::Null => None,
            other => Some(other),
        })
    }

    /// Handles `$setElementOrder/<field>` together with the patch list of that field.
    fn merge_ordered_lists(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        path: &mut Vec<String>,
    ) -> Result<(), PatchError> {
        let keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
            .cloned()
            .collect();
        for key in keys {
            let order = patch.shift_remove(&key).unwrap_or(Value::Null);
            let field = key[SET_ELEMENT_ORDER.len()..].to_string();
            let Value::Array(order) = order else {
                return Err(PatchError::Malformed(format!(
                    "invalid patch: the value of {key} must be a list"
                )));
            };
            let original_list = match original.get(&field) {
                Some(Value::Array(a)) => a.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(other) => {
                    return Err(PatchError::Apply(format!(
                        "cannot apply {key}: {field} is a {}, not a list",
                        type_name(other)
                    )))
                }
            };
            let patch_list = match patch.shift_remove(&field) {
                Some(Value::Array(a)) => a,
                None => Vec::new(),
                Some(Value::Null) => {
                    original.shift_remove(&field);
                    continue;
                }
                Some(other) => {
                    return Err(PatchError::Malformed(format!(
                        "invalid patch: {field} must be a list to go with {key}, got {}",
                        type_name(&other)
                    )))
                }
            };
            path.push(field.clone());
            let strategy = self.strategy(path);
            let merged = self.merge_list(original_list.clone(), patch_list, strategy, false, path);
            path.pop();
            let merged = merged?;
            let key_field = match strategy {
                ListStrategy::MergeByKey(k) => Some(k),
                _ => None,
            };
            let ordered = if matches!(strategy, ListStrategy::Atomic) {
                merged
            } else {
                let (in_order, server_only) = partition(merged, &order, key_field);
                normalize_element_order(
                    in_order,
                    server_only,
                    &order,
                    &original_list,
                    key_field,
                    NewItems::WherePatchOrderPutsThem,
                )?
            };
            original.insert(field, Value::Array(ordered));
        }
        Ok(())
    }

    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        strategy: ListStrategy,
        delete_list: bool,
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, PatchError> {
        if strategy == ListStrategy::Atomic {
            return Ok(patch);
        }
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        let first = original.iter().chain(patch.iter()).next();
        let maps = matches!(first, Some(Value::Object(_)));
        if original
            .iter()
            .chain(patch.iter())
            .any(|v| v.is_object() != maps || v.is_array())
        {
            return Err(PatchError::Apply(format!(
                "cannot merge list {}: its elements are of different types",
                path.join(".")
            )));
        }
        if !maps {
            if delete_list {
                return Ok(original
                    .into_iter()
                    .filter(|v| !patch.contains(v))
                    .collect());
            }
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch.iter()) {
                if !merged.contains(v) {
                    merged.push(v.clone());
                }
            }
            let (in_patch, server_only) = partition(merged, &patch, None);
            return normalize_element_order(
                in_patch,
                server_only,
                &patch,
                &original,
                None,
                NewItems::AfterServerItems,
            );
        }
        let ListStrategy::MergeByKey(key) = strategy else {
            return Err(PatchError::Apply(format!(
                "cannot merge lists without merge key for {}",
                path.join(".")
            )));
        };
        let (original, patch) = with_special_elements(original, patch, key)?;
        let server_order = original.clone();
        let mut merged = original;
        for item in &patch {
            let Value::Object(item_map) = item else {
                continue;
            };
            let Some(key_value) = item_map.get(key) else {
                return Err(no_merge_key(item_map, key));
            };
            let pos = merged.iter().position(|o| o.get(key) == Some(key_value));
            match pos {
                Some(i) => {
                    let Value::Object(o) = std::mem::take(&mut merged[i]) else {
                        continue;
                    };
                    match self.merge_map(o, item_map.clone(), path)? {
                        Some(m) => merged[i] = Value::Object(m),
                        None => {
                            merged.remove(i);
                        }
                    }
                }
                None => {
                    if let Some(v) = self.merge_map(Map::new(), item_map.clone(), path)? {
                        merged.push(Value::Object(v));
                    }
                }
            }
        }
        let (in_patch, server_only) = partition(merged, &patch, Some(key));
        normalize_element_order(
            in_patch,
            server_only,
            &patch,
            &server_order,
            Some(key),
            NewItems::AfterServerItems,
        )
    }
}

/// Processes `{"$patch": ...}` elements of a keyed list: returns the (original, patch) to merge.
fn with_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(map) = &item else {
            plain.push(item);
            continue;
        };
        match map.get(DIRECTIVE) {
            None => plain.push(item),
            Some(Value::String(d)) if d == "delete" => {
                let Some(key_value) = map.get(key) else {
                    return Err(no_merge_key(map, key));
                };
                original.retain(|o| o.get(key) != Some(key_value));
            }
            Some(Value::String(d)) if d == "replace" => replace = true,
            Some(Value::String(d)) if d == "merge" => {
                return Err(PatchError::Malformed(
                    "merging lists cannot yet be specified in the patch".to_string(),
                ))
            }
            Some(other) => {
                return Err(PatchError::Malformed(format!(
                    "Unknown patch type: {} in map: {}",
                    go_format(other),
                    go_format(&item)
                )))
            }
        }
    }
    if replace {
        Ok((Vec::new(), plain))
    } else {
        Ok((original, plain))
    }
}

/// Position of `item` in `list`, by merge key for maps and by value for primitives.
fn index_of(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        Some(k) => {
            let v = item.get(k)?;
            list.iter().position(|o| o.get(k) == Some(v))
        }
        None => list.iter().position(|o| o == item),
    }
}

/// Splits `merged` into the items present in `list` and the others, keeping relative order.
fn partition(merged: Vec<Value>, list: &[Value], key: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    merged
        .into_iter()
        .partition(|item| index_of(list, item, key).is_some())
}

/// Sorts `items` stably by their position in `order` (items not in `order` first).
fn normalize_slice_order(
    mut items: Vec<Value>,
    order: &[Value],
    key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    if let Some(k) = key {
        for item in items.iter().chain(order.iter()) {
            if let Value::Object(m) = item {
                if !m.contains_key(k) {
                    return Err(no_merge_key(m, k));
                }
            }
        }
    }
    items.sort_by_key(|item| index_of(order, item, key).map_or(-1, |i| i as i64));
    Ok(items)
}

/// Where items that the server's list does not have yet go when merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewItems {
    /// A plain patch list: after the server's items (a container added by a patch comes after
    /// the existing ones, as a real API server does, so `kubectl logs`/`exec` keep defaulting
    /// to the first container).
    AfterServerItems,
    /// A `$setElementOrder` list decides the order of everything it names.
    WherePatchOrderPutsThem,
}

/// Orders the patch items by the patch order and the server-only items by the server order,
/// then interleaves them (upstream `normalizeElementOrder` / `mergeSortedSlice`).
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
    new_items: NewItems,
) -> Result<Vec<Value>, PatchError> {
    let right = normalize_slice_order(patch_items, patch_order, key)?;
    let left = normalize_slice_order(server_only, server_order, key)?;
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (Some(l), Some(r)) => {
                let li = index_of(server_order, l, key);
                let ri = index_of(server_order, r, key);
                match (li, ri) {
                    (Some(li), Some(ri)) if li < ri => out.extend(left.next()),
                    (Some(_), None) if new_items == NewItems::AfterServerItems => {
                        out.extend(left.next())
                    }
                    _ => out.extend(right.next()),
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::{strategic_merge_patch, PatchError};
    use serde_json::{json, Value};

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a", "b"]},
            "spec": {
                "replicas": 1,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "app", "image": "busybox:1", "env": [{"name": "A", "value": "1"}]},
                            {"name": "sidecar", "image": "envoy:1"}
                        ],
                        "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]
                    }
                }
            }
        })
    }

    fn smp(doc: &Value, patch: Value) -> Result<Value, PatchError> {
        strategic_merge_patch(doc, &patch, "apps", "Deployment")
    }

    fn containers(v: &Value) -> &Value {
        &v["spec"]["template"]["spec"]["containers"]
    }

    #[test]
    fn containers_merged_by_name_keep_other_fields() {
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "sidecar", "image": "envoy:2"},
                {"name": "new", "image": "nginx"}
            ]}}}}),
        )
        .unwrap();
        assert_eq!(
            containers(&out),
            &json!([
                {"name": "app", "image": "busybox:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "envoy:2"},
                {"name": "new", "image": "nginx"}
            ])
        );
        assert_eq!(out["spec"]["replicas"], json!(1));
    }

    #[test]
    fn containers_new_container_alone_goes_after_the_existing_ones() {
        let out = smp(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "new", "image": "nginx"}
            ]}}}}),
        )
        .unwrap();
        let names: Vec<&str> = containers(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["app", "sidecar", "new"]);
    }

    #[test]
    fn set_image_patch_with_set_element_order_updates_image_only() {
        let out = smp(
            &deployment(),
            json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"app"},{"name":"sidecar"}],"containers":[{"image":"busybox:2","name":"app"}]}}}}),
        )
        .unwrap();
        assert_eq!(containers(&out)[0]["image"], json!("busybox:2"));
        assert_eq!(
            containers(&out)[0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
        assert_eq!(
            containers(&out)[1],
            json!({"name": "sidecar", "image": "envoy:1"})
        );
        assert!(!out.to_string().contains('$'));
    }

    #[test]
    fn set_element_order_reorders_and_keeps_unmentioned_items() {
        let out = smp(
            &deployment(),
            json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"sidecar"},{"name":"app"}]}}}}),
        )
        .unwrap();
        let names: Vec<&str> = containers(&out)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["sidecar", "app"]);

        // Only one of the two listed: the other keeps its place relative to the server order.
        let out = smp(
            &deployment(),
            json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"app"}],"containers":[{"image":"busybox:2","name":"app"}]}}}}),
        )
        .unwrap();
        assert_eq!(containers(&out)[0]["name"], json!("app"));
        assert_eq!(containers(&out)[1]["name"], json!("sidecar"));
    }

    #[test]
    fn patch_delete_directive_removes_keyed_element() {
        let out = smp(
            &deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}),
        )
        .unwrap();
        assert_eq!(containers(&out).as_array().unwrap().len(), 1);
        assert_eq!(containers(&out)[0]["name"], json!("app"));
    }

    #[test]
    fn patch_replace_directive_replaces_map_and_list() {
        let out = smp(
            &deployment(),
            json!({"metadata":{"labels":{"$patch":"replace","tier":"front"}}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"tier": "front"}));

        let out = smp(
            &deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"only","image":"x"},{"$patch":"replace"}]}}}}),
        )
        .unwrap();
        assert_eq!(containers(&out), &json!([{"name": "only", "image": "x"}]));
    }

    #[test]
    fn patch_delete_directive_on_map_removes_it() {
        let out = smp(
            &deployment(),
            json!({"metadata":{"labels":{"$patch":"delete"}}}),
        )
        .unwrap();
        assert!(out["metadata"].get("labels").is_none());
    }

    #[test]
    fn retain_keys_clears_unlisted_keys() {
        let doc =
            json!({"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1}}}});
        let out = smp(
            &doc,
            json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn delete_from_primitive_list_removes_finalizer() {
        let out = smp(
            &deployment(),
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn delete_from_primitive_list_with_set_element_order_as_kubectl_apply_sends() {
        let out = smp(
            &deployment(),
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a"],"$setElementOrder/finalizers":["b"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn finalizers_are_merged_as_a_set() {
        let out = smp(&deployment(), json!({"metadata":{"finalizers":["c","a"]}})).unwrap();
        let mut got: Vec<String> =
            serde_json::from_value(out["metadata"]["finalizers"].clone()).unwrap();
        got.sort();
        assert_eq!(got, ["a", "b", "c"]);
    }

    #[test]
    fn null_deletes_key() {
        let out = smp(
            &deployment(),
            json!({"metadata":{"labels":{"app":null,"x":"y"}},"spec":{"replicas":null}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"x": "y"}));
        assert!(out["spec"].get("replicas").is_none());
    }

    #[test]
    fn tolerations_are_atomic_and_replaced() {
        let out = smp(
            &deployment(),
            json!({"spec":{"template":{"spec":{"tolerations":[{"key":"c","operator":"Exists"}]}}}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "c", "operator": "Exists"}])
        );
    }

    #[test]
    fn service_ports_merged_by_port() {
        let svc = json!({"spec":{"ports":[{"port":80,"targetPort":8080,"protocol":"TCP"},{"port":443,"protocol":"TCP"}]}});
        let out = strategic_merge_patch(
            &svc,
            &json!({"spec":{"ports":[{"port":80,"targetPort":9090}]}}),
            "",
            "Service",
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port":80,"targetPort":9090,"protocol":"TCP"},{"port":443,"protocol":"TCP"}])
        );
    }

    #[test]
    fn keyed_element_without_merge_key_is_an_error() {
        let err = smp(
            &deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"image":"nginx"}]}}}}),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::Apply(_)));
        assert_eq!(
            err.to_string(),
            "map: map[image:nginx] does not contain declared merge key: name"
        );
    }

    #[test]
    fn rollout_restart_annotation_patch_adds_annotation() {
        let out = smp(
            &deployment(),
            json!({"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2024-01-01T00:00:00Z"}}}}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["template"]["metadata"],
            json!({"labels":{"app":"web"},"annotations":{"kubectl.kubernetes.io/restartedAt":"2024-01-01T00:00:00Z"}})
        );
        assert_eq!(containers(&out), containers(&deployment()));
    }

    #[test]
    fn cordon_and_label_patches_merge_maps() {
        let node =
            json!({"metadata":{"name":"n1","labels":{"a":"1"}},"spec":{"podCIDR":"10.0.0.0/24"}});
        let out = strategic_merge_patch(
            &node,
            &json!({"metadata":{"labels":{"b":"2"}},"spec":{"unschedulable":true}}),
            "",
            "Node",
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a":"1","b":"2"}));
        assert_eq!(
            out["spec"],
            json!({"podCIDR":"10.0.0.0/24","unschedulable":true})
        );
    }

    #[test]
    fn kubectl_apply_three_way_patch_removes_env_and_sets_order() {
        let out = smp(
            &deployment(),
            json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"app"},{"name":"sidecar"}],
                "containers":[{"$setElementOrder/env":[{"name":"B"}],"env":[{"name":"B","value":"2"},{"$patch":"delete","name":"A"}],"name":"app"}]
            }}}}),
        )
        .unwrap();
        assert_eq!(
            containers(&out)[0]["env"],
            json!([{"name":"B","value":"2"}])
        );
        assert!(!out.to_string().contains('$'));
    }

    #[test]
    fn new_nested_values_never_keep_directives_or_nulls() {
        let out = smp(
            &json!({"spec":{}}),
            json!({"spec":{"template":{"metadata":{"labels":{"$patch":"replace","a":"b","c":null}}}}}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"spec":{"template":{"metadata":{"labels":{"a":"b"}}}}})
        );
    }

    #[test]
    fn crd_lists_are_atomic() {
        let out = strategic_merge_patch(
            &json!({"spec":{"items":[{"name":"a"},{"name":"b"}]}}),
            &json!({"spec":{"items":[{"name":"c"}]}}),
            "example.com",
            "Widget",
        )
        .unwrap();
        assert_eq!(out["spec"]["items"], json!([{"name":"c"}]));
    }

    #[test]
    fn non_object_patch_is_malformed() {
        let err = smp(&deployment(), json!([1])).unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)));
    }
}

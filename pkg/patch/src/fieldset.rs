//! Field sets of server-side apply (structured-merge-diff `fieldpath.Set`) and their upstream
//! `FieldsV1` JSON encoding, plus the schema-aware walks over objects that produce them.

use crate::{strategy, ListStrategy};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of a map/struct: `f:name`.
    Field(String),
    /// An item of an associative list, by its key fields (canonical JSON, sorted keys): `k:{..}`.
    Key(String),
    /// An item of a set of primitives, by value (JSON): `v:..`.
    Value(String),
    /// An item of a list by position: `i:3`.
    Index(usize),
}

impl PathElement {
    fn encode(&self) -> String {
        match self {
            PathElement::Field(f) => format!("f:{f}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<PathElement> {
        let (prefix, rest) = s.split_at_checked(2)?;
        match prefix {
            "f:" => Some(PathElement::Field(rest.to_string())),
            "k:" => Some(PathElement::Key(rest.to_string())),
            "v:" => Some(PathElement::Value(rest.to_string())),
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }

    /// Upstream's human-readable notation: `.name`, `[name="x"]`, `[="v"]`, `[3]`.
    fn display(&self) -> String {
        match self {
            PathElement::Field(f) => format!(".{f}"),
            PathElement::Key(k) => {
                let fields = match serde_json::from_str::<Value>(k) {
                    Ok(Value::Object(m)) => m
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => k.clone(),
                };
                format!("[{fields}]")
            }
            PathElement::Value(v) => format!("[={v}]"),
            PathElement::Index(i) => format!("[{i}]"),
        }
    }
}

/// A path in upstream notation, e.g. `.spec.template.spec.containers[name="app"].image`.
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(PathElement::display).collect()
}

/// A set of field paths, stored as a tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// Whether the set holds no path.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Adds `path`.
    pub fn insert(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => self.member = true,
            Some((head, tail)) => self.children.entry(head.clone()).or_default().insert(tail),
        }
    }

    /// Whether `path` is in the set.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    fn node(&self, path: &[PathElement]) -> Option<&FieldSet> {
        match path.split_first() {
            None => Some(self),
            Some((head, tail)) => self.children.get(head)?.node(tail),
        }
    }

    /// Whether the set holds a path strictly below `path`.
    pub fn has_descendants(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|n| !n.children.is_empty())
    }

    /// Removes `path` (not its descendants).
    pub fn remove(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => self.member = false,
            Some((head, tail)) => {
                if let Some(child) = self.children.get_mut(head) {
                    child.remove(tail);
                    if child.is_empty() {
                        self.children.remove(head);
                    }
                }
            }
        }
    }

    /// Adds every path of `other`.
    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, child) in &other.children {
            self.children.entry(pe.clone()).or_default().union(child);
        }
    }

    /// The paths of `self` that are not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) => child.difference(o),
                None => child.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// All paths, in order.
    pub fn members(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The upstream `FieldsV1` JSON encoding.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (pe, child) in &self.children {
            map.insert(pe.encode(), child.to_fields_v1());
        }
        Value::Object(map)
    }

    /// Parses the `FieldsV1` encoding; unknown entries are skipped.
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Value::Object(map) = v {
            for (k, child) in map {
                if k == "." {
                    set.member = true;
                    continue;
                }
                let Some(pe) = PathElement::decode(k) else {
                    continue;
                };
                let mut c = FieldSet::from_fields_v1(child);
                if child.as_object().is_some_and(Map::is_empty) {
                    c.member = true;
                }
                set.children.insert(pe, c);
            }
        }
        set
    }
}

/// The schema knowledge needed to walk objects of one kind.
pub struct Schema<'a> {
    pub group: &'a str,
    pub kind: &'a str,
}

enum ListKind {
    Atomic,
    Keyed(Vec<(&'static str, Option<Value>)>),
    Set,
}

impl Schema<'_> {
    fn list_kind(&self, names: &[String]) -> ListKind {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Some(keys) = strategy::associative_keys(self.group, self.kind, &names) {
            return ListKind::Keyed(keys);
        }
        match strategy::lookup(self.group, self.kind, &names) {
            ListStrategy::MergePrimitives => ListKind::Set,
            _ => ListKind::Atomic,
        }
    }

    fn atomic_map(&self, names: &[String]) -> bool {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        strategy::map_is_atomic(self.group, self.kind, &names)
    }

    /// The path elements of the items of a granular list, or `None` if the list must be
    /// treated as atomic (an item without its key, duplicates, or non-primitive set items).
    fn item_elements(&self, items: &[Value], names: &[String]) -> Option<Vec<PathElement>> {
        let out: Vec<PathElement> = match self.list_kind(names) {
            ListKind::Atomic => return None,
            ListKind::Keyed(keys) => items
                .iter()
                .map(|i| key_element(i, &keys))
                .collect::<Option<Vec<_>>>()?,
            ListKind::Set => items
                .iter()
                .map(|i| match i {
                    Value::Object(_) | Value::Array(_) => None,
                    v => Some(PathElement::Value(v.to_string())),
                })
                .collect::<Option<Vec<_>>>()?,
        };
        let unique: HashSet<&PathElement> = out.iter().collect();
        (unique.len() == out.len()).then_some(out)
    }

    /// The field set of an object (already stripped of the fields that are never owned).
    pub fn to_set(&self, obj: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Value::Object(m) = obj {
            self.walk_map(m, &mut Vec::new(), &mut Vec::new(), &mut set);
        }
        set
    }

    fn walk_map(
        &self,
        m: &Map<String, Value>,
        names: &mut Vec<String>,
        path: &mut Vec<PathElement>,
        set: &mut FieldSet,
    ) {
        for (k, v) in m {
            names.push(k.clone());
            path.push(PathElement::Field(k.clone()));
            self.walk_value(v, names, path, set);
            path.pop();
            names.pop();
        }
    }

    fn walk_value(
        &self,
        v: &Value,
        names: &mut Vec<String>,
        path: &mut Vec<PathElement>,
        set: &mut FieldSet,
    ) {
        match v {
            Value::Object(m) if !m.is_empty() && !self.atomic_map(names) => {
                self.walk_map(m, names, path, set)
            }
            Value::Array(items) => match self.item_elements(items, names) {
                Some(elements) => {
                    for (item, pe) in items.iter().zip(elements) {
                        path.push(pe);
                        set.insert(path);
                        if let Value::Object(m) = item {
                            self.walk_map(m, names, path, set);
                        }
                        path.pop();
                    }
                }
                None => set.insert(path),
            },
            _ => set.insert(path),
        }
    }

    /// The value at `path` in `root`.
    pub fn value_at<'v>(&self, root: &'v Value, path: &[PathElement]) -> Option<&'v Value> {
        let mut names: Vec<String> = Vec::new();
        let mut cur = root;
        for pe in path {
            cur = match pe {
                PathElement::Field(f) => {
                    names.push(f.clone());
                    cur.get(f)?
                }
                PathElement::Index(i) => cur.get(*i)?,
                _ => {
                    let items = cur.as_array()?;
                    let pos = self.position(items, pe, &names)?;
                    &items[pos]
                }
            };
        }
        Some(cur)
    }

    fn position(&self, items: &[Value], pe: &PathElement, names: &[String]) -> Option<usize> {
        match pe {
            PathElement::Index(i) => (*i < items.len()).then_some(*i),
            PathElement::Value(v) => {
                let wanted: Value = serde_json::from_str(v).ok()?;
                items.iter().position(|i| *i == wanted)
            }
            PathElement::Key(_) => {
                let ListKind::Keyed(keys) = self.list_kind(names) else {
                    return None;
                };
                items
                    .iter()
                    .position(|i| key_element(i, &keys).as_ref() == Some(pe))
            }
            PathElement::Field(_) => None,
        }
    }

    /// Removes every path of `set` from `v` (a path that is a member goes with its subtree).
    pub fn remove_set(&self, v: &mut Value, set: &FieldSet, names: &mut Vec<String>) {
        for (pe, child) in &set.children {
            match pe {
                PathElement::Field(f) => {
                    let Value::Object(m) = v else { continue };
                    if child.member {
                        m.shift_remove(f);
                    } else if let Some(cv) = m.get_mut(f) {
                        names.push(f.clone());
                        self.remove_set(cv, child, names);
                        names.pop();
                    }
                }
                _ => {
                    let Value::Array(items) = v else { continue };
                    let Some(pos) = self.position(items, pe, names) else {
                        continue;
                    };
                    if child.member {
                        items.remove(pos);
                    } else {
                        self.remove_set(&mut items[pos], child, names);
                    }
                }
            }
        }
    }

    /// Server-side apply merge of `applied` into `live`: maps recursively, granular lists item
    /// by item (the applied order wins for shared items), everything else replaced.
    pub fn merge(&self, live: &Value, applied: &Value, names: &mut Vec<String>) -> Value {
        match (live, applied) {
            (Value::Object(l), Value::Object(a)) if !self.atomic_map(names) => {
                let mut out = l.clone();
                for (k, av) in a {
                    if av.is_null() {
                        out.shift_remove(k);
                        continue;
                    }
                    let merged = match l.get(k) {
                        Some(lv) => {
                            names.push(k.clone());
                            let m = self.merge(lv, av, names);
                            names.pop();
                            m
                        }
                        None => av.clone(),
                    };
                    out.insert(k.clone(), merged);
                }
                Value::Object(out)
            }
            (Value::Array(l), Value::Array(a)) => {
                match (self.item_elements(l, names), self.item_elements(a, names)) {
                    (Some(lpe), Some(rpe)) => {
                        Value::Array(self.merge_items(l, &lpe, a, &rpe, names))
                    }
                    _ => applied.clone(),
                }
            }
            _ => applied.clone(),
        }
    }

    /// structured-merge-diff's list merge: walks both lists, keeping live-only items in place
    /// and shared items in the applied order.
    fn merge_items(
        &self,
        lhs: &[Value],
        lpe: &[PathElement],
        rhs: &[Value],
        rpe: &[PathElement],
        names: &mut Vec<String>,
    ) -> Vec<Value> {
        let lhs_index: HashMap<&PathElement, usize> =
            lpe.iter().enumerate().map(|(i, p)| (p, i)).collect();
        let rhs_index: HashMap<&PathElement, usize> =
            rpe.iter().enumerate().map(|(i, p)| (p, i)).collect();
        let mut shared: VecDeque<&PathElement> =
            rpe.iter().filter(|p| lhs_index.contains_key(p)).collect();
        let mut next_shared = shared.pop_front();
        let mut merged_rhs: HashSet<&PathElement> = HashSet::new();
        let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
        let (mut li, mut ri) = (0, 0);
        while li < lhs.len() || ri < rhs.len() {
            if li < lhs.len() && ri < rhs.len() {
                let pe = &lpe[li];
                if *pe == rpe[ri] {
                    merged_rhs.insert(pe);
                    out.push(self.merge(&lhs[li], &rhs[ri], names));
                    li += 1;
                    ri += 1;
                    next_shared = shared.pop_front();
                    continue;
                }
                if rhs_index.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                    li += 1;
                    continue;
                }
            }
            if li < lhs.len() {
                let pe = &lpe[li];
                if !rhs_index.contains_key(pe) {
                    out.push(lhs[li].clone());
                    li += 1;
                    continue;
                } else if merged_rhs.contains(pe) {
                    li += 1;
                    continue;
                }
            }
            if ri < rhs.len() {
                let pe = &rpe[ri];
                merged_rhs.insert(pe);
                out.push(match lhs_index.get(pe) {
                    Some(&l) => self.merge(&lhs[l], &rhs[ri], names),
                    None => rhs[ri].clone(),
                });
                ri += 1;
                if next_shared == Some(pe) {
                    next_shared = shared.pop_front();
                }
            }
        }
        out
    }
}

/// The `k:{..}` element of a keyed list item; `None` if the item lacks its first key field.
fn key_element(item: &Value, keys: &[(&'static str, Option<Value>)]) -> Option<PathElement> {
    let Value::Object(m) = item else { return None };
    let mut fields: Vec<(&str, Value)> = Vec::with_capacity(keys.len());
    for (i, (k, default)) in keys.iter().enumerate() {
        match (m.get(*k), default) {
            (Some(v), _) if !v.is_null() => fields.push((k, v.clone())),
            (_, Some(d)) => fields.push((k, d.clone())),
            _ if i == 0 => return None,
            _ => {}
        }
    }
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let map: Map<String, Value> = fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Some(PathElement::Key(Value::Object(map).to_string()))
}

//! The message schema of every Kubernetes protobuf type, loaded from `schema.txt`.
//!
//! `schema.txt` is generated from the `k8s-pb` and `k8s-openapi` sources (see
//! `generate.rs`); it lists each message's fields in declaration order with their wire
//! tag, JSON name, cardinality, kind and message type.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The scalar or message kind of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Bool,
    Int32,
    Int64,
    Double,
    Bytes,
    Message,
}

/// How many values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Card {
    Optional,
    Repeated,
    /// A `map<string, V>`; `kind` is the value's kind.
    Map,
}

#[derive(Debug)]
pub struct Field {
    pub tag: u32,
    pub json: String,
    pub card: Card,
    pub kind: Kind,
    /// Full name of the message type (e.g. `api.core.v1.PodSpec`) for message fields.
    pub type_name: String,
    /// Required in the OpenAPI schema: zero values are serialized.
    pub required: bool,
}

#[derive(Debug)]
pub struct Message {
    /// Full name, e.g. `api.core.v1.ConfigMap`.
    pub name: String,
    pub fields: Vec<Field>,
}

impl Message {
    pub fn field_index(&self, tag: u32) -> Option<usize> {
        self.fields.iter().position(|f| f.tag == tag)
    }
}

#[derive(Debug)]
pub struct Schema {
    messages: HashMap<String, Message>,
    /// (package, lowercase message name) → full name.
    by_lower: HashMap<(String, String), String>,
}

const SCHEMA_TEXT: &str = include_str!("schema.txt");

/// Package prefixes under which API groups live in `k8s-pb`.
const PREFIXES: &[&str] = &[
    "api",
    "apiextensions_apiserver.pkg.apis",
    "kube_aggregator.pkg.apis",
    "metrics.pkg.apis",
    "apimachinery.pkg.apis",
];

impl Schema {
    /// The schema embedded in this crate.
    pub fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| Schema::parse(SCHEMA_TEXT))
    }

    fn parse(text: &str) -> Schema {
        let mut messages: HashMap<String, Message> = HashMap::new();
        let mut current: Option<Message> = None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix("message ") {
                if let Some(m) = current.take() {
                    messages.insert(m.name.clone(), m);
                }
                current = Some(Message {
                    name: name.to_string(),
                    fields: Vec::new(),
                });
                continue;
            }
            let Some(message) = current.as_mut() else {
                continue;
            };
            if let Some(field) = parse_field(line) {
                message.fields.push(field);
            }
        }
        if let Some(m) = current.take() {
            messages.insert(m.name.clone(), m);
        }
        let by_lower = messages
            .keys()
            .filter_map(|full| {
                let (package, name) = full.rsplit_once('.')?;
                Some(((package.to_string(), name.to_lowercase()), full.clone()))
            })
            .collect();
        Schema { messages, by_lower }
    }

    pub fn message(&self, name: &str) -> Option<&Message> {
        self.messages.get(name)
    }

    /// Iterates over all messages.
    #[cfg(test)]
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.messages.values()
    }

    /// The message for an object of `apiVersion`/`kind`, e.g. `apps/v1` `Deployment`.
    pub fn for_kind(&self, api_version: &str, kind: &str) -> Option<&Message> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        if version.is_empty() || kind.is_empty() {
            return None;
        }
        let kind = kind.to_lowercase();
        let find = |package: String| {
            self.by_lower
                .get(&(package, kind.clone()))
                .and_then(|full| self.messages.get(full))
        };
        let short = match group {
            "" => "core".to_string(),
            "internal.apiserver.k8s.io" => "apiserverinternal".to_string(),
            "custom.metrics.k8s.io" => "custom_metrics".to_string(),
            "external.metrics.k8s.io" => "external_metrics".to_string(),
            g => g.split('.').next().unwrap_or(g).to_string(),
        };
        PREFIXES
            .iter()
            .find_map(|prefix| find(format!("{prefix}.{short}.{version}")))
            // Options and status kinds (DeleteOptions, Status, ...) are registered in
            // every group version.
            .or_else(|| find(format!("apimachinery.pkg.apis.meta.{version}")))
            .or_else(|| find("apimachinery.pkg.apis.meta.v1".to_string()))
    }
}

fn parse_field(line: &str) -> Option<Field> {
    let mut parts = line.split_whitespace();
    let tag = parts.next()?.parse().ok()?;
    let json = parts.next()?.to_string();
    let card = match parts.next()? {
        "opt" => Card::Optional,
        "rep" => Card::Repeated,
        "map" => Card::Map,
        _ => return None,
    };
    let kind = match parts.next()? {
        "string" => Kind::String,
        "bool" => Kind::Bool,
        "int32" => Kind::Int32,
        "int64" => Kind::Int64,
        "double" => Kind::Double,
        "bytes" => Kind::Bytes,
        "message" => Kind::Message,
        _ => return None,
    };
    let mut type_name = String::new();
    let mut required = false;
    for rest in parts {
        if rest == "req" {
            required = true;
        } else {
            type_name = rest.to_string();
        }
    }
    Some(Field {
        tag,
        json,
        card,
        kind,
        type_name,
        required,
    })
}

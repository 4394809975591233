//! OpenAPI v2 (Swagger 2.0) at `/openapi/v2`, derived from the v3 documents: kubectl still
//! reads v2 for some commands (validating a `kind: List` on `apply`/`create`), and asks for
//! it as gnostic's protobuf (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`).
//!
//! `swagger_document` merges every group-version document into one Swagger 2.0 JSON document
//! (definitions from `components.schemas` with `$ref`s rewritten to `#/definitions/`, paths
//! with inline parameter types and response schemas); `to_protobuf` encodes that document as
//! gnostic's `openapi.v2.Document` message (field numbers from gnostic's OpenAPIv2.proto).

use std::collections::BTreeMap;

use prost::Message;
use serde_json::{json, Map, Value};

const V3_REF_PREFIX: &str = "#/components/schemas/";
const V2_REF_PREFIX: &str = "#/definitions/";

/// One Swagger 2.0 document from the v3 documents `(group, version, document)`.
pub fn swagger_document(documents: &[(String, String, Value)]) -> Value {
    let mut definitions = BTreeMap::new();
    let mut paths = BTreeMap::new();
    for (_, _, document) in documents {
        if let Some(schemas) = document["components"]["schemas"].as_object() {
            for (name, schema) in schemas {
                definitions
                    .entry(name.clone())
                    .or_insert_with(|| schema_to_v2(schema));
            }
        }
        if let Some(items) = document["paths"].as_object() {
            for (path, item) in items {
                paths.insert(path.clone(), path_item_to_v2(item));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
        "paths": paths.into_iter().collect::<Map<String, Value>>(),
        "definitions": definitions.into_iter().collect::<Map<String, Value>>(),
        "securityDefinitions": {
            "BearerToken": {
                "type": "apiKey",
                "description": "Bearer Token authentication",
                "name": "authorization",
                "in": "header"
            }
        },
        "security": [{"BearerToken": []}]
    })
}

/// A v3 schema as v2: `$ref`s point into `definitions`; `nullable`, `oneOf`, `anyOf` and
/// `not` have no v2 form and are dropped (Kubernetes' own v2 documents do the same).
fn schema_to_v2(schema: &Value) -> Value {
    match schema {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                match k.as_str() {
                    "nullable" | "oneOf" | "anyOf" | "not" => {}
                    "$ref" => {
                        let r = v.as_str().unwrap_or_default();
                        let r = match r.strip_prefix(V3_REF_PREFIX) {
                            Some(name) => format!("{V2_REF_PREFIX}{name}"),
                            None => r.to_string(),
                        };
                        out.insert(k.clone(), json!(r));
                    }
                    "properties" => {
                        let props = v
                            .as_object()
                            .map(|p| {
                                p.iter()
                                    .map(|(name, s)| (name.clone(), schema_to_v2(s)))
                                    .collect::<Map<String, Value>>()
                            })
                            .unwrap_or_default();
                        out.insert(k.clone(), Value::Object(props));
                    }
                    "items" | "additionalProperties" => {
                        out.insert(k.clone(), schema_to_v2(v));
                    }
                    "allOf" => {
                        let all = v
                            .as_array()
                            .map(|a| a.iter().map(schema_to_v2).collect::<Vec<_>>())
                            .unwrap_or_default();
                        out.insert(k.clone(), Value::Array(all));
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];

fn path_item_to_v2(item: &Value) -> Value {
    let mut out = Map::new();
    let Some(m) = item.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in m {
        if METHODS.contains(&k.as_str()) {
            out.insert(k.clone(), operation_to_v2(v));
        } else if k == "parameters" {
            out.insert(k.clone(), parameters_to_v2(v));
        } else if k.starts_with("x-") {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

fn parameters_to_v2(params: &Value) -> Value {
    let converted = params
        .as_array()
        .map(|a| a.iter().map(parameter_to_v2).collect::<Vec<_>>())
        .unwrap_or_default();
    Value::Array(converted)
}

/// A v3 parameter (`schema: {type}`) as a v2 non-body parameter (`type` inline).
fn parameter_to_v2(param: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = param.as_object() {
        for (k, v) in m {
            if k == "schema" {
                if let Some(s) = v.as_object() {
                    for (sk, sv) in s {
                        out.insert(sk.clone(), sv.clone());
                    }
                }
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn operation_to_v2(op: &Value) -> Value {
    let mut out = Map::new();
    let Some(m) = op.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in m {
        match k.as_str() {
            "parameters" => {
                out.insert(k.clone(), parameters_to_v2(v));
            }
            "responses" => {
                let mut responses = Map::new();
                for (code, response) in v.as_object().into_iter().flatten() {
                    let mut r = Map::new();
                    r.insert(
                        "description".into(),
                        response["description"].clone_or(json!("")),
                    );
                    if let Some(schema) = response["content"]
                        .as_object()
                        .and_then(|c| c.values().next())
                        .map(|media| &media["schema"])
                        .filter(|s| !s.is_null())
                    {
                        r.insert("schema".into(), schema_to_v2(schema));
                    }
                    responses.insert(code.clone(), Value::Object(r));
                }
                out.insert(k.clone(), Value::Object(responses));
            }
            "requestBody" => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

trait CloneOr {
    fn clone_or(&self, default: Value) -> Value;
}

impl CloneOr for Value {
    fn clone_or(&self, default: Value) -> Value {
        if self.is_null() {
            default
        } else {
            self.clone()
        }
    }
}

/// The Swagger document as gnostic's `openapi.v2.Document` protobuf.
pub fn to_protobuf(doc: &Value) -> Vec<u8> {
    let document = pb::Document {
        swagger: str_of(&doc["swagger"]),
        info: Some(pb::Info {
            title: str_of(&doc["info"]["title"]),
            version: str_of(&doc["info"]["version"]),
        }),
        paths: Some(pb::Paths {
            path: doc["paths"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, item)| pb::NamedPathItem {
                    name: name.clone(),
                    value: Some(pb_path_item(item)),
                })
                .collect(),
        }),
        definitions: Some(pb::Definitions {
            additional_properties: doc["definitions"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, s)| pb::NamedSchema {
                    name: name.clone(),
                    value: Some(pb_schema(s)),
                })
                .collect(),
        }),
        security: doc["security"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|req| pb::SecurityRequirement {
                additional_properties: req
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, scopes)| pb::NamedStringArray {
                        name: name.clone(),
                        value: Some(pb::StringArray {
                            value: strings_of(scopes),
                        }),
                    })
                    .collect(),
            })
            .collect(),
        security_definitions: Some(pb::SecurityDefinitions {
            additional_properties: doc["securityDefinitions"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, d)| pb::NamedSecurityDefinitionsItem {
                    name: name.clone(),
                    value: Some(pb::SecurityDefinitionsItem {
                        api_key_security: Some(pb::ApiKeySecurity {
                            r#type: str_of(&d["type"]),
                            name: str_of(&d["name"]),
                            r#in: str_of(&d["in"]),
                            description: str_of(&d["description"]),
                        }),
                    }),
                })
                .collect(),
        }),
    };
    document.encode_to_vec()
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn strings_of(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// A JSON value as gnostic's `Any`: its YAML text (how gnostic carries defaults, enums and
/// vendor extensions).
fn pb_any(v: &Value) -> pb::Any {
    pb::Any {
        yaml: serde_yaml_ng::to_string(v).unwrap_or_default(),
    }
}

fn vendor_extensions(m: &Map<String, Value>) -> Vec<pb::NamedAny> {
    m.iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| pb::NamedAny {
            name: k.clone(),
            value: Some(pb_any(v)),
        })
        .collect()
}

fn pb_schema(s: &Value) -> pb::Schema {
    let empty = Map::new();
    let m = s.as_object().unwrap_or(&empty);
    let f64_of = |k: &str| m.get(k).and_then(Value::as_f64).unwrap_or_default();
    let i64_of = |k: &str| m.get(k).and_then(Value::as_i64).unwrap_or_default();
    let bool_of = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or_default();
    pb::Schema {
        r#ref: m.get("$ref").map(str_of).unwrap_or_default(),
        format: m.get("format").map(str_of).unwrap_or_default(),
        title: m.get("title").map(str_of).unwrap_or_default(),
        description: m.get("description").map(str_of).unwrap_or_default(),
        default: m.get("default").map(pb_any),
        multiple_of: f64_of("multipleOf"),
        maximum: f64_of("maximum"),
        exclusive_maximum: bool_of("exclusiveMaximum"),
        minimum: f64_of("minimum"),
        exclusive_minimum: bool_of("exclusiveMinimum"),
        max_length: i64_of("maxLength"),
        min_length: i64_of("minLength"),
        pattern: m.get("pattern").map(str_of).unwrap_or_default(),
        max_items: i64_of("maxItems"),
        min_items: i64_of("minItems"),
        unique_items: bool_of("uniqueItems"),
        max_properties: i64_of("maxProperties"),
        min_properties: i64_of("minProperties"),
        required: m.get("required").map(strings_of).unwrap_or_default(),
        r#enum: m
            .get("enum")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(pb_any).collect())
            .unwrap_or_default(),
        additional_properties: m.get("additionalProperties").map(|a| match a {
            Value::Bool(b) => pb::AdditionalPropertiesItem {
                schema: None,
                boolean: Some(*b),
            },
            other => pb::AdditionalPropertiesItem {
                schema: Some(Box::new(pb_schema(other))),
                boolean: None,
            },
        }),
        r#type: m.get("type").map(|t| pb::TypeItem {
            value: match t {
                Value::String(s) => vec![s.clone()],
                other => strings_of(other),
            },
        }),
        items: m.get("items").map(|i| pb::ItemsItem {
            schema: match i {
                Value::Array(a) => a.iter().map(pb_schema).collect(),
                other => vec![pb_schema(other)],
            },
        }),
        all_of: m
            .get("allOf")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(pb_schema).collect())
            .unwrap_or_default(),
        properties: m
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| pb::Properties {
                additional_properties: p
                    .iter()
                    .map(|(name, s)| pb::NamedSchema {
                        name: name.clone(),
                        value: Some(pb_schema(s)),
                    })
                    .collect(),
            }),
        read_only: bool_of("readOnly"),
        example: m.get("example").map(pb_any),
        vendor_extension: vendor_extensions(m),
    }
}

fn pb_path_item(item: &Value) -> pb::PathItem {
    let empty = Map::new();
    let m = item.as_object().unwrap_or(&empty);
    let op = |k: &str| m.get(k).map(pb_operation);
    pb::PathItem {
        get: op("get"),
        put: op("put"),
        post: op("post"),
        delete: op("delete"),
        options: op("options"),
        head: op("head"),
        patch: op("patch"),
        parameters: m.get("parameters").map(pb_parameters).unwrap_or_default(),
        vendor_extension: vendor_extensions(m),
    }
}

fn pb_parameters(params: &Value) -> Vec<pb::ParametersItem> {
    params
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let sub = pb::ParameterSubSchema {
                required: p["required"].as_bool().unwrap_or_default(),
                r#in: str_of(&p["in"]),
                description: str_of(&p["description"]),
                name: str_of(&p["name"]),
                r#type: str_of(&p["type"]),
                format: str_of(&p["format"]),
                unique_items: p["uniqueItems"].as_bool().unwrap_or_default(),
            };
            let non_body = match p["in"].as_str() {
                Some("path") => pb::NonBodyParameter {
                    path_parameter_sub_schema: Some(sub),
                    ..Default::default()
                },
                Some("header") => pb::NonBodyParameter {
                    header_parameter_sub_schema: Some(sub.into_header()),
                    ..Default::default()
                },
                _ => pb::NonBodyParameter {
                    query_parameter_sub_schema: Some(sub.into_query()),
                    ..Default::default()
                },
            };
            pb::ParametersItem {
                parameter: Some(pb::Parameter {
                    non_body_parameter: Some(non_body),
                }),
            }
        })
        .collect()
}

fn pb_operation(op: &Value) -> pb::Operation {
    let empty = Map::new();
    let m = op.as_object().unwrap_or(&empty);
    pb::Operation {
        tags: m.get("tags").map(strings_of).unwrap_or_default(),
        description: m.get("description").map(str_of).unwrap_or_default(),
        operation_id: m.get("operationId").map(str_of).unwrap_or_default(),
        consumes: m.get("consumes").map(strings_of).unwrap_or_default(),
        produces: m.get("produces").map(strings_of).unwrap_or_default(),
        parameters: m.get("parameters").map(pb_parameters).unwrap_or_default(),
        responses: m
            .get("responses")
            .and_then(Value::as_object)
            .map(|r| pb::Responses {
                response_code: r
                    .iter()
                    .map(|(code, resp)| pb::NamedResponseValue {
                        name: code.clone(),
                        value: Some(pb::ResponseValue {
                            response: Some(pb::Response {
                                description: str_of(&resp["description"]),
                                schema: resp.get("schema").map(|s| pb::SchemaItem {
                                    schema: Some(pb_schema(s)),
                                }),
                            }),
                        }),
                    })
                    .collect(),
            }),
        vendor_extension: vendor_extensions(m),
    }
}

/// The subset of gnostic's `openapi.v2` messages mini fills, with gnostic's field numbers.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Document {
        #[prost(string, tag = "1")]
        pub swagger: String,
        #[prost(message, optional, tag = "2")]
        pub info: Option<Info>,
        #[prost(message, optional, tag = "8")]
        pub paths: Option<Paths>,
        #[prost(message, optional, tag = "9")]
        pub definitions: Option<Definitions>,
        #[prost(message, repeated, tag = "12")]
        pub security: Vec<SecurityRequirement>,
        #[prost(message, optional, tag = "13")]
        pub security_definitions: Option<SecurityDefinitions>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Info {
        #[prost(string, tag = "1")]
        pub title: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "2")]
        pub yaml: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedAny {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Definitions {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedSchema {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Properties {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeItem {
        #[prost(string, repeated, tag = "1")]
        pub value: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ItemsItem {
        #[prost(message, repeated, tag = "1")]
        pub schema: Vec<Schema>,
    }

    /// gnostic's `oneof { Schema schema = 1; bool boolean = 2; }`, as two optional fields
    /// of which mini sets exactly one (the wire format of a oneof).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AdditionalPropertiesItem {
        #[prost(message, optional, boxed, tag = "1")]
        pub schema: Option<Box<Schema>>,
        #[prost(bool, optional, tag = "2")]
        pub boolean: Option<bool>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Schema {
        #[prost(string, tag = "1")]
        pub r#ref: String,
        #[prost(string, tag = "2")]
        pub format: String,
        #[prost(string, tag = "3")]
        pub title: String,
        #[prost(string, tag = "4")]
        pub description: String,
        #[prost(message, optional, tag = "5")]
        pub default: Option<Any>,
        #[prost(double, tag = "6")]
        pub multiple_of: f64,
        #[prost(double, tag = "7")]
        pub maximum: f64,
        #[prost(bool, tag = "8")]
        pub exclusive_maximum: bool,
        #[prost(double, tag = "9")]
        pub minimum: f64,
        #[prost(bool, tag = "10")]
        pub exclusive_minimum: bool,
        #[prost(int64, tag = "11")]
        pub max_length: i64,
        #[prost(int64, tag = "12")]
        pub min_length: i64,
        #[prost(string, tag = "13")]
        pub pattern: String,
        #[prost(int64, tag = "14")]
        pub max_items: i64,
        #[prost(int64, tag = "15")]
        pub min_items: i64,
        #[prost(bool, tag = "16")]
        pub unique_items: bool,
        #[prost(int64, tag = "17")]
        pub max_properties: i64,
        #[prost(int64, tag = "18")]
        pub min_properties: i64,
        #[prost(string, repeated, tag = "19")]
        pub required: Vec<String>,
        #[prost(message, repeated, tag = "20")]
        pub r#enum: Vec<Any>,
        #[prost(message, optional, tag = "21")]
        pub additional_properties: Option<AdditionalPropertiesItem>,
        #[prost(message, optional, tag = "22")]
        pub r#type: Option<TypeItem>,
        #[prost(message, optional, tag = "23")]
        pub items: Option<ItemsItem>,
        #[prost(message, repeated, tag = "24")]
        pub all_of: Vec<Schema>,
        #[prost(message, optional, tag = "25")]
        pub properties: Option<Properties>,
        #[prost(bool, tag = "27")]
        pub read_only: bool,
        #[prost(message, optional, tag = "30")]
        pub example: Option<Any>,
        #[prost(message, repeated, tag = "31")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Paths {
        #[prost(message, repeated, tag = "2")]
        pub path: Vec<NamedPathItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedPathItem {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<PathItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PathItem {
        #[prost(message, optional, tag = "2")]
        pub get: Option<Operation>,
        #[prost(message, optional, tag = "3")]
        pub put: Option<Operation>,
        #[prost(message, optional, tag = "4")]
        pub post: Option<Operation>,
        #[prost(message, optional, tag = "5")]
        pub delete: Option<Operation>,
        #[prost(message, optional, tag = "6")]
        pub options: Option<Operation>,
        #[prost(message, optional, tag = "7")]
        pub head: Option<Operation>,
        #[prost(message, optional, tag = "8")]
        pub patch: Option<Operation>,
        #[prost(message, repeated, tag = "9")]
        pub parameters: Vec<ParametersItem>,
        #[prost(message, repeated, tag = "10")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Operation {
        #[prost(string, repeated, tag = "1")]
        pub tags: Vec<String>,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "5")]
        pub operation_id: String,
        #[prost(string, repeated, tag = "6")]
        pub produces: Vec<String>,
        #[prost(string, repeated, tag = "7")]
        pub consumes: Vec<String>,
        #[prost(message, repeated, tag = "8")]
        pub parameters: Vec<ParametersItem>,
        #[prost(message, optional, tag = "9")]
        pub responses: Option<Responses>,
        #[prost(message, repeated, tag = "13")]
        pub vendor_extension: Vec<NamedAny>,
    }

    /// `oneof { Parameter parameter = 1; JsonReference json_reference = 2; }`: mini only
    /// sends parameters.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParametersItem {
        #[prost(message, optional, tag = "1")]
        pub parameter: Option<Parameter>,
    }

    /// `oneof { BodyParameter body_parameter = 1; NonBodyParameter non_body_parameter = 2; }`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Parameter {
        #[prost(message, optional, tag = "2")]
        pub non_body_parameter: Option<NonBodyParameter>,
    }

    /// A oneof of the header/form/query/path sub-schemas; exactly one is set.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NonBodyParameter {
        #[prost(message, optional, tag = "1")]
        pub header_parameter_sub_schema: Option<HeaderParameterSubSchema>,
        #[prost(message, optional, tag = "3")]
        pub query_parameter_sub_schema: Option<QueryParameterSubSchema>,
        #[prost(message, optional, tag = "4")]
        pub path_parameter_sub_schema: Option<ParameterSubSchema>,
    }

    /// `PathParameterSubSchema` (fields 1-6, 19), also the common shape the others are made from.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParameterSubSchema {
        #[prost(bool, tag = "1")]
        pub required: bool,
        #[prost(string, tag = "2")]
        pub r#in: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(string, tag = "5")]
        pub r#type: String,
        #[prost(string, tag = "6")]
        pub format: String,
        #[prost(bool, tag = "19")]
        pub unique_items: bool,
    }

    /// `QueryParameterSubSchema`: like the path one with `allow_empty_value` at 5, so its
    /// type, format and uniqueItems sit one field later.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryParameterSubSchema {
        #[prost(bool, tag = "1")]
        pub required: bool,
        #[prost(string, tag = "2")]
        pub r#in: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(string, tag = "6")]
        pub r#type: String,
        #[prost(string, tag = "7")]
        pub format: String,
        #[prost(bool, tag = "20")]
        pub unique_items: bool,
    }

    /// `HeaderParameterSubSchema`: the same numbering as the path one.
    pub type HeaderParameterSubSchema = ParameterSubSchema;

    impl ParameterSubSchema {
        pub fn into_query(self) -> QueryParameterSubSchema {
            QueryParameterSubSchema {
                required: self.required,
                r#in: self.r#in,
                description: self.description,
                name: self.name,
                r#type: self.r#type,
                format: self.format,
                unique_items: self.unique_items,
            }
        }

        pub fn into_header(self) -> HeaderParameterSubSchema {
            self
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Responses {
        #[prost(message, repeated, tag = "1")]
        pub response_code: Vec<NamedResponseValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedResponseValue {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<ResponseValue>,
    }

    /// `oneof { Response response = 1; JsonReference json_reference = 2; }`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseValue {
        #[prost(message, optional, tag = "1")]
        pub response: Option<Response>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(string, tag = "1")]
        pub description: String,
        #[prost(message, optional, tag = "2")]
        pub schema: Option<SchemaItem>,
    }

    /// `oneof { Schema schema = 1; FileSchema file_schema = 2; }`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SchemaItem {
        #[prost(message, optional, tag = "1")]
        pub schema: Option<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SecurityRequirement {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedStringArray>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedStringArray {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<StringArray>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringArray {
        #[prost(string, repeated, tag = "1")]
        pub value: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SecurityDefinitions {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSecurityDefinitionsItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedSecurityDefinitionsItem {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<SecurityDefinitionsItem>,
    }

    /// A oneof of security kinds; mini has only the bearer token as an API key (field 2).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SecurityDefinitionsItem {
        #[prost(message, optional, tag = "2")]
        pub api_key_security: Option<ApiKeySecurity>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ApiKeySecurity {
        #[prost(string, tag = "1")]
        pub r#type: String,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub r#in: String,
        #[prost(string, tag = "4")]
        pub description: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> Vec<(String, String, Value)> {
        let resources = vec![crate::ResourceDoc {
            group: "".into(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            namespaced: true,
            subresources: vec![],
            crd_schema: None,
        }];
        vec![(
            String::new(),
            "v1".into(),
            crate::group_version_document("", "v1", &resources),
        )]
    }

    #[test]
    fn swagger_document_refs_point_into_definitions() {
        let doc = swagger_document(&docs());
        assert_eq!(doc["swagger"], "2.0");
        let cm = &doc["definitions"]["io.k8s.api.core.v1.ConfigMap"];
        assert_eq!(
            cm["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert_eq!(
            cm["x-kubernetes-group-version-kind"][0]["kind"],
            "ConfigMap"
        );
        let text = serde_json::to_string(&doc).unwrap();
        assert!(!text.contains("#/components/"), "v3 refs left");
    }

    #[test]
    fn swagger_document_parameters_carry_their_type_inline() {
        let doc = swagger_document(&docs());
        let params = doc["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["get"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let limit = params.iter().find(|p| p["name"] == "limit");
        if let Some(limit) = limit {
            assert_eq!(limit["type"], "integer");
            assert!(limit.get("schema").is_none());
        }
    }

    #[test]
    fn to_protobuf_round_trips_the_schema_fields_kubectl_reads() {
        let doc = swagger_document(&docs());
        let bytes = to_protobuf(&doc);
        let decoded = pb::Document::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.swagger, "2.0");
        let defs = decoded.definitions.unwrap().additional_properties;
        let cm = defs
            .iter()
            .find(|d| d.name == "io.k8s.api.core.v1.ConfigMap")
            .and_then(|d| d.value.clone())
            .unwrap();
        let gvk = cm
            .vendor_extension
            .iter()
            .find(|e| e.name == "x-kubernetes-group-version-kind")
            .and_then(|e| e.value.clone())
            .unwrap();
        assert!(gvk.yaml.contains("kind: ConfigMap"), "{}", gvk.yaml);
        let props = cm.properties.unwrap().additional_properties;
        assert!(props.iter().any(|p| p.name == "data"));
    }
}

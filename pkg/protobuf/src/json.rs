//! Conversion of a protobuf-encoded message into the JSON form Kubernetes' Go types
//! marshal to, driven by the [`Schema`].

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::policy;
use crate::schema::{Card, Field, Kind, Message, Schema};
use crate::wire::{packed_varints, Reader, WireValue};
use crate::ProtobufError;

const META: &str = "apimachinery.pkg.apis.meta.v1.";

fn err(message: impl Into<String>) -> ProtobufError {
    ProtobufError::Decode(message.into())
}

/// Converts `bytes`, an encoded `message`, into JSON.
pub fn message_to_json(
    schema: &Schema,
    message: &Message,
    bytes: &[u8],
) -> Result<Value, ProtobufError> {
    if let Some(value) = special(schema, message, bytes)? {
        return Ok(value);
    }
    let mut singles: Vec<Option<Value>> = vec![None; message.fields.len()];
    let mut lists: Vec<Vec<Value>> = vec![Vec::new(); message.fields.len()];
    let mut maps: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new(); message.fields.len()];
    let mut reader = Reader::new(bytes);
    while let Some((tag, wire)) = reader.next_field()? {
        let Some(index) = message.field_index(tag) else {
            continue;
        };
        let field = &message.fields[index];
        match field.card {
            Card::Optional => singles[index] = Some(value_of(schema, field, wire)?),
            Card::Repeated => match wire {
                WireValue::Bytes(packed) if packable(field.kind) => {
                    lists[index].extend(unpack(field.kind, packed)?);
                }
                _ => lists[index].push(value_of(schema, field, wire)?),
            },
            Card::Map => {
                let WireValue::Bytes(entry) = wire else {
                    return Err(err(format!("map field {} is not a message", field.json)));
                };
                let (key, value) = map_entry(schema, field, entry)?;
                maps[index].insert(key, value);
            }
        }
    }
    let mut out = Map::new();
    for (index, field) in message.fields.iter().enumerate() {
        let value = match field.card {
            Card::Optional => match singles[index].take() {
                Some(v) if keep_single(message, field, &v) => v,
                _ => continue,
            },
            Card::Repeated if !lists[index].is_empty() => {
                Value::Array(std::mem::take(&mut lists[index]))
            }
            Card::Map if !maps[index].is_empty() => {
                Value::Object(std::mem::take(&mut maps[index]).into_iter().collect())
            }
            _ => continue,
        };
        match value {
            Value::Object(members) if inline(message, field) => out.extend(members),
            value => {
                out.insert(field.json.clone(), value);
            }
        }
    }
    Ok(Value::Object(out))
}

/// Whether a field is a Go struct embedded with `json:",inline"`: protobuf nests it as a
/// message, JSON lifts its fields into the parent (`Volume.volumeSource.configMap` is
/// `Volume.configMap`; `IngressRule.ingressRuleValue.http` is `IngressRule.http`).
fn inline(message: &Message, field: &Field) -> bool {
    const ANYWHERE: [&str; 7] = [
        "volumeSource",
        "persistentVolumeSource",
        "ephemeralContainerCommon",
        "ingressRuleValue",
        "localObjectReference",
        "ruleWithOperations",
        "deviceConfiguration",
    ];
    const IN_MESSAGE: [(&str, &str); 2] = [
        ("api.core.v1.Probe", "handler"),
        ("api.admissionregistration.v1.RuleWithOperations", "rule"),
    ];
    ANYWHERE.contains(&field.json.as_str())
        || IN_MESSAGE
            .iter()
            .any(|(m, f)| message.name == *m && field.json == *f)
}

/// Whether a present optional field belongs in the JSON form (see [`policy`]).
fn keep_single(message: &Message, field: &Field, value: &Value) -> bool {
    if field.required || field.kind == Kind::Message {
        return true;
    }
    match (field.kind, value) {
        (Kind::String, Value::String(s)) => {
            !s.is_empty() || policy::keep_empty_string(&message.name, &field.json)
        }
        (Kind::Bytes, Value::String(s)) => !s.is_empty(),
        (Kind::Bool, Value::Bool(false)) => !policy::omit_zero(&message.name, &field.json),
        (Kind::Int32 | Kind::Int64 | Kind::Double, Value::Number(n)) if n.as_f64() == Some(0.0) => {
            !policy::omit_zero(&message.name, &field.json)
        }
        _ => true,
    }
}

fn packable(kind: Kind) -> bool {
    matches!(kind, Kind::Bool | Kind::Int32 | Kind::Int64 | Kind::Double)
}

fn unpack(kind: Kind, bytes: &[u8]) -> Result<Vec<Value>, ProtobufError> {
    if kind == Kind::Double {
        return bytes
            .chunks(8)
            .map(|c| {
                let a: [u8; 8] = c.try_into().map_err(|_| err("truncated packed double"))?;
                Ok(float(f64::from_le_bytes(a)))
            })
            .collect();
    }
    Ok(packed_varints(bytes)?
        .into_iter()
        .map(|v| varint_value(kind, v))
        .collect())
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn varint_value(kind: Kind, v: u64) -> Value {
    match kind {
        Kind::Bool => Value::Bool(v != 0),
        // Negative int32 values are sign-extended to 64 bits on the wire.
        Kind::Int32 => Value::from(v as i64 as i32),
        _ => Value::from(v as i64),
    }
}

fn value_of(schema: &Schema, field: &Field, wire: WireValue<'_>) -> Result<Value, ProtobufError> {
    let mismatch = || err(format!("field {} has the wrong wire type", field.json));
    match (field.kind, wire) {
        (Kind::String, WireValue::Bytes(b)) => {
            Ok(Value::String(String::from_utf8_lossy(b).into_owned()))
        }
        (Kind::Bytes, WireValue::Bytes(b)) => Ok(Value::String(
            base64::engine::general_purpose::STANDARD.encode(b),
        )),
        (Kind::Message, WireValue::Bytes(b)) => {
            let message = schema
                .message(&field.type_name)
                .ok_or_else(|| err(format!("unknown message type {}", field.type_name)))?;
            message_to_json(schema, message, b)
        }
        (Kind::Bool | Kind::Int32 | Kind::Int64, WireValue::Varint(v)) => {
            Ok(varint_value(field.kind, v))
        }
        (Kind::Double, WireValue::Fixed64(v)) => Ok(float(f64::from_bits(v))),
        _ => Err(mismatch()),
    }
}

fn map_entry(
    schema: &Schema,
    field: &Field,
    entry: &[u8],
) -> Result<(String, Value), ProtobufError> {
    let mut key = String::new();
    let mut value = None;
    let mut reader = Reader::new(entry);
    while let Some((tag, wire)) = reader.next_field()? {
        match (tag, wire) {
            (1, WireValue::Bytes(b)) => key = String::from_utf8_lossy(b).into_owned(),
            (2, wire) => value = Some(value_of(schema, field, wire)?),
            _ => {}
        }
    }
    let value = match value {
        Some(v) => v,
        None => match field.kind {
            Kind::String | Kind::Bytes => Value::String(String::new()),
            Kind::Bool => Value::Bool(false),
            Kind::Int32 | Kind::Int64 | Kind::Double => Value::from(0),
            Kind::Message => value_of(schema, field, WireValue::Bytes(&[]))?,
        },
    };
    Ok((key, value))
}

/// The raw fields of a small message, by tag (last value wins; repeated collected).
fn raw_fields(bytes: &[u8]) -> Result<Vec<(u32, WireValue<'_>)>, ProtobufError> {
    let mut reader = Reader::new(bytes);
    let mut out = Vec::new();
    while let Some(field) = reader.next_field()? {
        out.push(field);
    }
    Ok(out)
}

fn varint_at(fields: &[(u32, WireValue<'_>)], tag: u32) -> Option<u64> {
    fields.iter().rev().find_map(|(t, v)| match v {
        WireValue::Varint(x) if *t == tag => Some(*x),
        _ => None,
    })
}

fn bytes_at<'a>(fields: &[(u32, WireValue<'a>)], tag: u32) -> Option<&'a [u8]> {
    fields.iter().rev().find_map(|(t, v)| match v {
        WireValue::Bytes(b) if *t == tag => Some(*b),
        _ => None,
    })
}

fn strings_at(fields: &[(u32, WireValue<'_>)], tag: u32) -> Value {
    Value::Array(
        fields
            .iter()
            .filter_map(|(t, v)| match v {
                WireValue::Bytes(b) if *t == tag => {
                    Some(Value::String(String::from_utf8_lossy(b).into_owned()))
                }
                _ => None,
            })
            .collect(),
    )
}

/// Types whose JSON form is not an object of their fields.
fn special(
    schema: &Schema,
    message: &Message,
    bytes: &[u8],
) -> Result<Option<Value>, ProtobufError> {
    let name = message.name.as_str();
    let short = name.rsplit('.').next().unwrap_or(name);
    let value = if let Some(meta) = name.strip_prefix(META) {
        match meta {
            "Time" => time(bytes, false)?,
            "MicroTime" => time(bytes, true)?,
            "Duration" => {
                let fields = raw_fields(bytes)?;
                Value::String(go_duration(varint_at(&fields, 1).unwrap_or(0) as i64))
            }
            "FieldsV1" => embedded(bytes_at(&raw_fields(bytes)?, 1))?,
            "Verbs" => strings_at(&raw_fields(bytes)?, 1),
            _ => return Ok(None),
        }
    } else if name == "apimachinery.pkg.api.resource.Quantity" {
        let fields = raw_fields(bytes)?;
        let s = bytes_at(&fields, 1)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        Value::String(if s.is_empty() {
            "0".to_string()
        } else {
            s.into_owned()
        })
    } else if name == "apimachinery.pkg.util.intstr.IntOrString" {
        let fields = raw_fields(bytes)?;
        if varint_at(&fields, 1).unwrap_or(0) == 1 {
            let s = bytes_at(&fields, 3)
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            Value::String(s.into_owned())
        } else {
            Value::from(varint_at(&fields, 2).unwrap_or(0) as i64 as i32)
        }
    } else if name == "apimachinery.pkg.runtime.RawExtension" {
        embedded(bytes_at(&raw_fields(bytes)?, 1))?
    } else if name.starts_with("apiextensions_apiserver.") {
        match short.to_ascii_lowercase().as_str() {
            "json" => embedded(bytes_at(&raw_fields(bytes)?, 1))?,
            "jsonschemapropsorarray" => schema_or(schema, message, bytes, 1, 2)?,
            "jsonschemapropsorstringarray" => schema_or(schema, message, bytes, 1, 2)?,
            "jsonschemapropsorbool" => {
                let fields = raw_fields(bytes)?;
                if bytes_at(&fields, 2).is_some() {
                    schema_or(schema, message, bytes, 2, 0)?
                } else {
                    Value::Bool(varint_at(&fields, 1).unwrap_or(0) != 0)
                }
            }
            _ => return Ok(None),
        }
    } else if short == "ExtraValue" {
        strings_at(&raw_fields(bytes)?, 1)
    } else {
        return Ok(None);
    };
    Ok(Some(value))
}

/// `JSONSchemaPropsOr*`: the schema in `schema_tag` if set, else the list in `list_tag`.
fn schema_or(
    schema: &Schema,
    message: &Message,
    bytes: &[u8],
    schema_tag: u32,
    list_tag: u32,
) -> Result<Value, ProtobufError> {
    let mut single = None;
    let mut list = Vec::new();
    let mut reader = Reader::new(bytes);
    while let Some((tag, wire)) = reader.next_field()? {
        let Some(field) = message.field_index(tag).map(|i| &message.fields[i]) else {
            continue;
        };
        if tag == schema_tag {
            single = Some(value_of(schema, field, wire)?);
        } else if tag == list_tag {
            list.push(value_of(schema, field, wire)?);
        }
    }
    Ok(single.unwrap_or(Value::Array(list)))
}

/// Raw JSON bytes embedded in a message (`RawExtension`, `FieldsV1`, `JSON`).
fn embedded(raw: Option<&[u8]>) -> Result<Value, ProtobufError> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(Value::Null);
    };
    if raw.starts_with(crate::MAGIC) {
        return crate::decode(raw);
    }
    serde_json::from_slice(raw).map_err(|e| err(format!("embedded object is not json: {e}")))
}

/// `metav1.Time` (whole seconds) or `metav1.MicroTime` (microseconds), `null` when unset.
fn time(bytes: &[u8], micro: bool) -> Result<Value, ProtobufError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let fields = raw_fields(bytes)?;
    let seconds = varint_at(&fields, 1).unwrap_or(0) as i64;
    let nanos = varint_at(&fields, 2).unwrap_or(0) as i64 as i32;
    Ok(Value::String(rfc3339(seconds, micro.then_some(nanos))))
}

/// Formats a Unix time as RFC 3339 in UTC, with microseconds when `nanos` is given.
pub fn rfc3339(seconds: i64, nanos: Option<i32>) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match nanos {
        Some(n) => format!(
            "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:06}Z",
            n.clamp(0, 999_999_999) / 1000
        ),
        None => format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
    }
}

/// Formats nanoseconds like Go's `time.Duration.String` (`1h2m3.5s`, `150ms`, `0s`).
pub fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let frac = |value: u64, digits: u32| -> String {
        let scale = 10u64.pow(digits);
        let f = value % scale;
        if f == 0 {
            format!("{}", value / scale)
        } else {
            let s = format!("{f:0width$}", width = digits as usize);
            format!("{}.{}", value / scale, s.trim_end_matches('0'))
        }
    };
    if u == 0 {
        return "0s".to_string();
    }
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 6));
    }
    let secs = u / 1_000_000_000;
    let seconds = frac(u % 60_000_000_000, 9);
    let (h, m) = (secs / 3600, secs % 3600 / 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{sign}{m}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}

//! Tests of the custom-resource schema functions.

use serde_json::json;

use crate::tests::widget_schema;
use crate::{
    apply_schema_defaults, prune, schema_unknown_fields, validate_against_schema, FieldError,
};

fn err(reason: &str, field: &str, message: &str) -> FieldError {
    FieldError {
        reason: reason.into(),
        field: field.into(),
        message: message.into(),
    }
}

fn widget() -> serde_json::Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default", "labels": {"a": "b"}},
        "spec": {"size": 3, "mode": "fast", "port": "http", "labels": {"x": "y"}, "raw": {"anything": {"deep": [1]}},
                 "items": [{"name": "a"}], "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}},
                 "nested": {"deep": {"flag": true}}},
        "status": {"replicas": 1, "free": "form"}})
}

#[test]
fn schema_unknown_fields_realistic_object_reports_nothing() {
    assert_eq!(
        schema_unknown_fields(&widget_schema(), &widget()),
        Vec::<String>::new()
    );
}

#[test]
fn schema_unknown_fields_reported_at_depth() {
    let mut w = widget();
    w["spec"]["bogus"] = json!(1);
    w["spec"]["items"][0]["extra"] = json!("x");
    w["spec"]["nested"]["deep"]["nope"] = json!(true);
    w["spec"]["closed"] = json!({"k": 1});
    w["metadata"]["foo"] = json!("bar");
    w["top"] = json!({});
    assert_eq!(
        schema_unknown_fields(&widget_schema(), &w),
        vec![
            "metadata.foo",
            "spec.items[0].extra",
            "spec.nested.deep.nope",
            "spec.bogus",
            "spec.closed.k",
            "top"
        ]
    );
}

#[test]
fn prune_removes_unknown_and_keeps_preserved() {
    let mut w = widget();
    w["spec"]["bogus"] = json!(1);
    w["spec"]["items"][0]["extra"] = json!("x");
    w["top"] = json!(1);
    prune(&widget_schema(), &mut w);
    assert_eq!(w, widget());
}

#[test]
fn schema_defaults_fill_absent_fields_recursively() {
    let mut w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"mode": "slow"}});
    apply_schema_defaults(&widget_schema(), &mut w);
    assert_eq!(w["spec"], json!({"mode": "slow", "size": 3, "nested": {}}));
    let mut w = json!({"spec": {"size": 5, "nested": {"deep": {}}}});
    apply_schema_defaults(&widget_schema(), &mut w);
    assert_eq!(
        w["spec"],
        json!({"size": 5, "nested": {"deep": {"flag": false}}})
    );
}

#[test]
fn schema_validation_accepts_valid_object() {
    assert_eq!(validate_against_schema(&widget_schema(), &widget()), vec![]);
}

#[test]
fn schema_validation_type_enum_bounds_pattern_required() {
    let w = json!({"spec": {"size": 0, "mode": "medium", "port": true, "labels": {"x": 1}}});
    let errs = validate_against_schema(&widget_schema(), &w);
    assert_eq!(
        errs,
        vec![
            err("FieldValueInvalid", "spec.size", "Invalid value: 0: spec.size in body should be greater than or equal to 1"),
            err("FieldValueNotSupported", "spec.mode", "Unsupported value: \"medium\": supported values: \"fast\", \"slow\""),
            err(
                "FieldValueTypeInvalid",
                "spec.port",
                "Invalid value: true: spec.port in body must be of type integer,string: \"boolean\""
            ),
            err("FieldValueTypeInvalid", "spec.labels.x", "Invalid value: 1: spec.labels.x in body must be of type string: \"integer\""),
        ]
    );
    let missing = json!({"metadata": {"name": "w"}});
    assert_eq!(
        validate_against_schema(&widget_schema(), &missing),
        vec![err("FieldValueRequired", "spec", "Required value")]
    );
    let w = json!({"spec": {"size": "three", "mode": "FAST"}});
    let errs = validate_against_schema(&widget_schema(), &w);
    assert_eq!(
        errs[0],
        err(
            "FieldValueTypeInvalid",
            "spec.size",
            "Invalid value: \"three\": spec.size in body must be of type integer: \"string\""
        )
    );
    assert!(errs.contains(&err(
        "FieldValueInvalid",
        "spec.mode",
        "Invalid value: \"FAST\": spec.mode in body should match '^[a-z]+$'"
    )));
}

#[test]
fn schema_validation_integer_vs_number_and_nullable() {
    let schema = json!({"type": "object", "properties": {
        "i": {"type": "integer", "maximum": 5, "exclusiveMaximum": true},
        "n": {"type": "number", "minimum": 0.5},
        "s": {"type": "string", "minLength": 2, "maxLength": 25, "format": "date-time"},
        "x": {"type": "string", "nullable": true},
        "y": {"type": "string"},
        "l": {"type": "array", "minItems": 1, "maxItems": 2, "uniqueItems": true, "items": {"type": "integer"}}
    }});
    let ok = json!({"i": 4, "n": 1.5, "x": null, "l": [1], "s": "2024-01-01T00:00:00Z"});
    assert_eq!(validate_against_schema(&schema, &ok), vec![]);
    let bad =
        json!({"i": 1.5, "n": 0.25, "y": null, "l": [1, 1, 2], "s": "abcdefghijklmnopqrstuvwxyz"});
    assert_eq!(
        validate_against_schema(&schema, &bad),
        vec![
            err("FieldValueTypeInvalid", "i", "Invalid value: 1.5: i in body must be of type integer: \"number\""),
            err("FieldValueInvalid", "n", "Invalid value: 0.25: n in body should be greater than or equal to 0.5"),
            err("FieldValueTypeInvalid", "y", "Invalid value: \"null\": y in body must be of type string: \"null\""),
            err("FieldValueTooMany", "l", "Too many: 3: must have at most 2 items"),
            err("FieldValueDuplicate", "l[1]", "Duplicate value: 1"),
            err("FieldValueTooLong", "s", "Too long: may not be more than 25 bytes"),
            err("FieldValueInvalid", "s", "Invalid value: \"abcdefghijklmnopqrstuvwxyz\": s in body must be of type date-time: \"abcdefghijklmnopqrstuvwxyz\""),
        ]
    );
    let edge = json!({"i": 5, "l": []});
    assert_eq!(
        validate_against_schema(&schema, &edge),
        vec![
            err(
                "FieldValueInvalid",
                "i",
                "Invalid value: 5: i in body should be less than 5"
            ),
            err(
                "FieldValueInvalid",
                "l",
                "Invalid value: []: l in body should have at least 1 items"
            ),
        ]
    );
}

#[test]
fn schema_validation_list_map_keys_unique() {
    let w = json!({"spec": {"items": [{"name": "a"}, {"name": "a"}]}});
    let errs = validate_against_schema(&widget_schema(), &w);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec.items[1]");
    assert_eq!(errs[0].reason, "FieldValueDuplicate");
}

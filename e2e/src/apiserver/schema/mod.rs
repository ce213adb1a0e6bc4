//! Structural-schema handling of custom resources: defaulting, pruning and validation,
//! in that order, as the real apiextensions server applies them on every write.
//!
//! CEL rules (`x-kubernetes-validations`) are deliberately not evaluated: the CRD's own
//! unit tests cover them, and a CEL engine is not worth its weight in an emulator.

mod validate;

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

pub use validate::validate;

/// The parts of an OpenAPI v3 schema that structural schemas use and the server enforces.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// `type`: object, array, string, integer, number, boolean.
    pub type_: Option<String>,
    /// `properties` of an object.
    pub properties: BTreeMap<String, Schema>,
    /// `required` property names.
    pub required: Vec<String>,
    /// `items` of an array.
    pub items: Option<Box<Schema>>,
    /// `additionalProperties` given as a schema (maps).
    pub additional: Option<Box<Schema>>,
    /// `enum` values.
    pub enum_: Vec<Value>,
    /// `minimum`, `exclusiveMinimum`.
    pub minimum: Option<(f64, bool)>,
    /// `maximum`, `exclusiveMaximum`.
    pub maximum: Option<(f64, bool)>,
    /// `minLength`, `maxLength`.
    pub min_length: Option<u64>,
    /// See `min_length`.
    pub max_length: Option<u64>,
    /// `minItems`, `maxItems`.
    pub min_items: Option<u64>,
    /// See `min_items`.
    pub max_items: Option<u64>,
    /// `pattern`.
    pub pattern: Option<Regex>,
    /// `nullable`: null is a value, not an absent field.
    pub nullable: bool,
    /// `x-kubernetes-preserve-unknown-fields`: unknown fields are kept, not pruned.
    pub preserve_unknown: bool,
    /// `x-kubernetes-int-or-string`.
    pub int_or_string: bool,
    /// `x-kubernetes-embedded-resource`: apiVersion/kind/metadata are implied.
    pub embedded: bool,
    /// `default`.
    pub default: Option<Value>,
}

impl Schema {
    /// Parses an `openAPIV3Schema`. Fails on what a real server would refuse in a CRD
    /// (a pattern that does not compile, a non-object schema).
    pub fn parse(value: &Value) -> Result<Self, String> {
        let map = value.as_object().ok_or("schema must be an object")?;
        let mut schema = Schema {
            type_: map.get("type").and_then(Value::as_str).map(str::to_string),
            required: strings(map.get("required")),
            enum_: map
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            minimum: bound(map, "minimum", "exclusiveMinimum"),
            maximum: bound(map, "maximum", "exclusiveMaximum"),
            min_length: map.get("minLength").and_then(Value::as_u64),
            max_length: map.get("maxLength").and_then(Value::as_u64),
            min_items: map.get("minItems").and_then(Value::as_u64),
            max_items: map.get("maxItems").and_then(Value::as_u64),
            nullable: flag(map, "nullable"),
            preserve_unknown: flag(map, "x-kubernetes-preserve-unknown-fields"),
            int_or_string: flag(map, "x-kubernetes-int-or-string"),
            embedded: flag(map, "x-kubernetes-embedded-resource"),
            default: map.get("default").cloned(),
            ..Default::default()
        };
        if let Some(pattern) = map.get("pattern").and_then(Value::as_str) {
            schema.pattern =
                Some(Regex::new(pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?);
        }
        if let Some(Value::Object(props)) = map.get("properties") {
            for (name, prop) in props {
                schema.properties.insert(
                    name.clone(),
                    Self::parse(prop).map_err(|e| format!("{name}: {e}"))?,
                );
            }
        }
        if let Some(items) = map.get("items") {
            schema.items = Some(Box::new(Self::parse(items)?));
        }
        match map.get("additionalProperties") {
            Some(Value::Object(_)) => {
                let additional = map.get("additionalProperties").cloned().unwrap_or_default();
                schema.additional = Some(Box::new(Self::parse(&additional)?));
            }
            Some(Value::Bool(true)) => schema.preserve_unknown = true,
            _ => {}
        }
        Ok(schema)
    }

    /// Whether fields not in `properties` survive in an object of this schema.
    fn keeps_unknown(&self) -> bool {
        self.preserve_unknown || self.additional.is_some()
    }

    /// The schema of the member `key` of an object of this schema.
    fn member(&self, key: &str) -> Option<&Schema> {
        self.properties.get(key).or(self.additional.as_deref())
    }
}

/// Fills absent fields that have a `default`, and replaces nulls in non-nullable fields
/// that have one, as the server does on every write.
pub fn apply_defaults(value: &mut Value, schema: &Schema) {
    match value {
        Value::Object(map) => {
            for (key, prop) in &schema.properties {
                let absent = match map.get(key) {
                    None => true,
                    Some(Value::Null) => !prop.nullable,
                    Some(_) => false,
                };
                if absent && let Some(default) = &prop.default {
                    map.insert(key.clone(), default.clone());
                }
            }
            for (key, member) in map.iter_mut() {
                if let Some(prop) = schema.member(key) {
                    apply_defaults(member, prop);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &schema.items {
                items
                    .iter_mut()
                    .for_each(|item| apply_defaults(item, item_schema));
            }
        }
        _ => {}
    }
}

/// Removes fields the schema does not know (and nulls of non-nullable fields) and returns
/// their paths, so a `fieldValidation=Strict` request can refuse them instead.
///
/// At the root, `apiVersion`, `kind` and `metadata` are always kept: the server owns them.
pub fn prune(value: &mut Value, schema: &Schema) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Value::Object(map) = value {
        for (key, member) in map.iter_mut() {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(prop) = schema.member(key) {
                prune_at(member, prop, key, &mut unknown);
            }
        }
        retain_known(map, schema, "", &mut unknown, true);
    }
    unknown
}

fn prune_at(value: &mut Value, schema: &Schema, path: &str, unknown: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let embedded = schema.embedded;
            for (key, member) in map.iter_mut() {
                if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(prop) = schema.member(key) {
                    prune_at(member, prop, &format!("{path}.{key}"), unknown);
                }
            }
            retain_known(map, schema, path, unknown, embedded);
        }
        Value::Array(items) => {
            if let Some(item_schema) = &schema.items {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_at(item, item_schema, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn retain_known(
    map: &mut Map<String, Value>,
    schema: &Schema,
    path: &str,
    unknown: &mut Vec<String>,
    root: bool,
) {
    map.retain(|key, member| {
        let identity = root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata");
        let known = identity || schema.keeps_unknown() || schema.properties.contains_key(key);
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if !known {
            unknown.push(full);
            return false;
        }
        // A null in a field that is not nullable means "absent".
        let nullable = schema.member(key).is_none_or(|prop| prop.nullable);
        !(member.is_null() && !nullable && !identity)
    });
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn flag(map: &Map<String, Value>, key: &str) -> bool {
    map.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn bound(map: &Map<String, Value>, key: &str, exclusive: &str) -> Option<(f64, bool)> {
    Some((map.get(key)?.as_f64()?, flag(map, exclusive)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(&json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer", "default": 3},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }}
        }}))
        .unwrap()
    }

    #[test]
    fn defaults_fill_absent_fields_only() {
        let mut obj = json!({"spec": {}});
        apply_defaults(&mut obj, &schema());
        assert_eq!(obj["spec"]["replicas"], 3);
        let mut obj = json!({"spec": {"replicas": 5}});
        apply_defaults(&mut obj, &schema());
        assert_eq!(obj["spec"]["replicas"], 5);
    }

    #[test]
    fn prune_drops_unknown_fields_but_keeps_maps_and_preserved_subtrees() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"bogus": 1, "labels": {"a": "b"}, "free": {"any": {"thing": 1}}}, "extra": true});
        let unknown = prune(&mut obj, &schema());
        assert_eq!(unknown, vec!["spec.bogus".to_string(), "extra".to_string()]);
        assert_eq!(obj["spec"]["labels"]["a"], "b");
        assert_eq!(obj["spec"]["free"]["any"]["thing"], 1);
        assert_eq!(obj["metadata"]["name"], "a");
    }
}

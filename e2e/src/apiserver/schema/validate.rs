//! Value validation against a structural schema, with the real server's messages.

use serde_json::Value;

use super::Schema;
use crate::apiserver::error::Cause;

/// Every violation of `schema` in `value`. The root's `apiVersion`, `kind` and `metadata`
/// are the server's business and are not checked here.
pub fn validate(value: &Value, schema: &Schema) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Value::Object(map) = value {
        check_required(map, schema, "", &mut causes);
        for (key, member) in map {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(prop) = schema.member(key) {
                check(member, prop, key, &mut causes);
            }
        }
    }
    causes
}

fn check(value: &Value, schema: &Schema, path: &str, causes: &mut Vec<Cause>) {
    if value.is_null() {
        if !schema.nullable && schema.type_.is_some() {
            causes.push(type_cause(
                path,
                value,
                schema.type_.as_deref().unwrap_or(""),
            ));
        }
        return;
    }
    if !type_ok(value, schema) {
        let expected = if schema.int_or_string {
            "integer or string"
        } else {
            schema.type_.as_deref().unwrap_or("")
        };
        causes.push(type_cause(path, value, expected));
        return;
    }
    check_enum(value, schema, path, causes);
    check_bounds(value, schema, path, causes);
    match value {
        Value::Object(map) => {
            check_required(map, schema, path, causes);
            for (key, member) in map {
                if schema.embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(prop) = schema.member(key) {
                    check(member, prop, &format!("{path}.{key}"), causes);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &schema.items {
                for (i, item) in items.iter().enumerate() {
                    check(item, item_schema, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

fn type_ok(value: &Value, schema: &Schema) -> bool {
    if schema.int_or_string {
        return value.is_string() || value.is_i64() || value.is_u64();
    }
    match schema.type_.as_deref() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    }
}

fn type_cause(path: &str, value: &Value, expected: &str) -> Cause {
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    Cause::new(
        path,
        "FieldValueTypeInvalid",
        format!(
            "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
        ),
    )
}

fn check_required(
    map: &serde_json::Map<String, Value>,
    schema: &Schema,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    for name in &schema.required {
        if map.get(name).is_none_or(Value::is_null) {
            let field = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            causes.push(Cause::new(field, "FieldValueRequired", "Required value"));
        }
    }
}

fn check_enum(value: &Value, schema: &Schema, path: &str, causes: &mut Vec<Cause>) {
    if schema.enum_.is_empty() || schema.enum_.contains(value) {
        return;
    }
    let supported: Vec<String> = schema.enum_.iter().map(Value::to_string).collect();
    causes.push(Cause::new(
        path,
        "FieldValueNotSupported",
        format!(
            "Unsupported value: {value}: supported values: {}",
            supported.join(", ")
        ),
    ));
}

fn check_bounds(value: &Value, schema: &Schema, path: &str, causes: &mut Vec<Cause>) {
    let mut invalid =
        |reason: &'static str, message: String| causes.push(Cause::new(path, reason, message));
    if let Some(n) = value.as_f64().filter(|_| value.is_number()) {
        if let Some((min, exclusive)) = schema.minimum
            && (n < min || (exclusive && n == min))
        {
            let op = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            invalid(
                "FieldValueInvalid",
                format!("Invalid value: {value}: {path} in body should be {op} {min}"),
            );
        }
        if let Some((max, exclusive)) = schema.maximum
            && (n > max || (exclusive && n == max))
        {
            let op = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            invalid(
                "FieldValueInvalid",
                format!("Invalid value: {value}: {path} in body should be {op} {max}"),
            );
        }
    }
    if let Value::String(s) = value {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.min_length.filter(|min| len < *min) {
            invalid(
                "FieldValueInvalid",
                format!(
                    "Invalid value: {value}: {path} in body should be at least {min} chars long"
                ),
            );
        }
        if let Some(max) = schema.max_length.filter(|max| len > *max) {
            invalid(
                "FieldValueTooLong",
                format!("Too long: may not be more than {max} bytes"),
            );
        }
        if let Some(pattern) = schema.pattern.as_ref().filter(|p| !p.is_match(s)) {
            invalid(
                "FieldValueInvalid",
                format!("Invalid value: {value}: {path} in body should match '{pattern}'"),
            );
        }
    }
    if let Value::Array(items) = value {
        let len = items.len() as u64;
        if let Some(min) = schema.min_items.filter(|min| len < *min) {
            invalid(
                "FieldValueInvalid",
                format!("Invalid value: {len}: {path} in body should have at least {min} items"),
            );
        }
        if let Some(max) = schema.max_items.filter(|max| len > *max) {
            invalid(
                "FieldValueTooMany",
                format!("Too many: {len}: must have at most {max} items"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(&json!({"type": "object", "properties": {"spec": {
        "type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "minLength": 1},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
            "policy": {"type": "string", "enum": ["lru", "lfu"]},
            "port": {"x-kubernetes-int-or-string": true},
            "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}}
        }}}}))
        .unwrap()
    }

    fn fields(obj: Value) -> Vec<String> {
        validate(&obj, &schema())
            .into_iter()
            .map(|c| format!("{} {}", c.field, c.reason))
            .collect()
    }

    #[test]
    fn a_valid_object_has_no_causes() {
        assert!(
            fields(json!({"spec": {"image": "x", "replicas": 3, "policy": "lru", "port": "grpc"}}))
                .is_empty()
        );
    }

    #[test]
    fn required_type_enum_and_bounds_are_each_reported() {
        assert_eq!(
            fields(json!({"spec": {}})),
            vec!["spec.image FieldValueRequired"]
        );
        assert_eq!(
            fields(json!({"spec": {"image": "x", "replicas": "3"}})),
            vec!["spec.replicas FieldValueTypeInvalid"]
        );
        assert_eq!(
            fields(json!({"spec": {"image": "x", "policy": "fifo"}})),
            vec!["spec.policy FieldValueNotSupported"]
        );
        assert_eq!(
            fields(json!({"spec": {"image": "x", "replicas": 0}})),
            vec!["spec.replicas FieldValueInvalid"]
        );
        assert_eq!(
            fields(json!({"spec": {"image": "x", "replicas": 11}})),
            vec!["spec.replicas FieldValueInvalid"]
        );
        assert_eq!(
            fields(json!({"spec": {"image": ""}})),
            vec!["spec.image FieldValueInvalid"]
        );
        assert_eq!(
            fields(json!({"spec": {"image": "x", "tags": ["a", "b", "c"]}})),
            vec!["spec.tags FieldValueTooMany"]
        );
        assert_eq!(
            fields(json!({"spec": {"image": "x", "port": 1.5}})),
            vec!["spec.port FieldValueTypeInvalid"]
        );
    }
}

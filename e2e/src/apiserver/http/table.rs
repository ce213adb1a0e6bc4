//! `as=Table` responses (`kubectl get`): a Name column, then the kind's printer columns
//! (a CRD's `additionalPrinterColumns`), evaluated with the simple JSONPath they use.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::partial_metadata;
use crate::apiserver::resources::{Column, ResourceType};

/// What a row's `object` holds (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// From the `includeObject` query parameter.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// A Table of `objects`; `rv` is the list's resourceVersion (absent in watch events).
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    rv: Option<u64>,
    include: IncludeObject,
) -> Value {
    let columns = rt.printer_columns();
    let mut definitions = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically."
    })];
    definitions.extend(columns.iter().map(|c| {
        json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority})
    }));
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| row(&columns, obj, include))
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = rv {
        metadata["resourceVersion"] = rv.to_string().into();
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions, "rows": rows})
}

fn row(columns: &[Column], obj: &Value, include: IncludeObject) -> Value {
    let mut cells = vec![
        obj.pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
    ];
    cells.extend(columns.iter().map(|c| cell(c, obj)));
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial_metadata(obj),
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

fn cell(column: &Column, obj: &Value) -> Value {
    let Some(value) = json_path(obj, &column.json_path) else {
        return Value::Null;
    };
    match column.type_.as_str() {
        "date" => value
            .as_str()
            .and_then(|s| s.parse::<Timestamp>().ok())
            .map(|t| human_age(t).into())
            .unwrap_or(Value::Null),
        "string" => match value {
            Value::String(s) => s.into(),
            other => other.to_string().into(),
        },
        _ => value,
    }
}

/// The first result of a simple JSONPath (`.spec.replicas`, `.a[0].b`, `.a['k.x']`,
/// `.conditions[?(@.type=="Ready")].status`), as printer columns use.
pub fn json_path(obj: &Value, path: &str) -> Option<Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut current = vec![obj];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inner = &after[..end];
            rest = &after[end + 1..];
            current = step_bracket(current, inner);
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            rest = &after[end..];
            if key.is_empty() {
                continue;
            }
            current = current.into_iter().filter_map(|v| v.get(key)).collect();
        } else {
            return None;
        }
    }
    current.first().map(|v| (*v).clone())
}

fn step_bracket<'a>(current: Vec<&'a Value>, inner: &str) -> Vec<&'a Value> {
    if inner == "*" {
        return current.into_iter().flat_map(children).collect();
    }
    if let Ok(index) = inner.parse::<usize>() {
        return current.into_iter().filter_map(|v| v.get(index)).collect();
    }
    if let Some(key) = inner.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')) {
        return current.into_iter().filter_map(|v| v.get(key)).collect();
    }
    if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
        && let Some((field, expected)) = filter.split_once("==")
    {
        let expected = expected.trim().trim_matches(|c| c == '"' || c == '\'');
        let field: Vec<&str> = field.trim().split('.').collect();
        return current
            .into_iter()
            .flat_map(children)
            .filter(|item| {
                let found = field.iter().try_fold(*item, |v, k| v.get(*k));
                match found {
                    Some(Value::String(s)) => s == expected,
                    Some(other) => serde_json::to_string(other).is_ok_and(|text| text == expected),
                    None => false,
                }
            })
            .collect();
    }
    Vec::new()
}

fn children(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) => map.values().collect(),
        _ => Vec::new(),
    }
}

/// The age as kubectl and the server print it (`5s`, `3m20s`, `2d3h`).
pub fn human_age(since: Timestamp) -> String {
    let seconds = crate::apiserver::meta::now().as_second() - since.as_second();
    human_duration(seconds)
}

/// `duration.HumanDuration` of apimachinery.
fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_reads_fields_indexes_quoted_keys_and_filters() {
        let obj = json!({"spec": {"replicas": 3}, "metadata": {"labels": {"a.b/c": "x"}},
            "status": {"conditions": [{"type": "Available", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(json_path(&obj, ".spec.replicas"), Some(json!(3)));
        assert_eq!(
            json_path(&obj, ".status.conditions[1].type"),
            Some(json!("Ready"))
        );
        assert_eq!(
            json_path(&obj, ".metadata.labels['a.b/c']"),
            Some(json!("x"))
        );
        assert_eq!(
            json_path(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("True"))
        );
        assert_eq!(json_path(&obj, ".spec.missing"), None);
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(3 * 86400), "3d");
    }
}

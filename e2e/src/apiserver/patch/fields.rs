//! Field paths of an object, as server-side apply tracks ownership of them.
//!
//! A path ends at a scalar or at a list: lists are owned atomically (the emulator's
//! simplification of associative lists), maps are owned key by key. Identity fields
//! (`apiVersion`, `kind`, `metadata` other than labels, annotations, finalizers and
//! ownerReferences) belong to nobody.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// A path of object keys from the root.
pub type Path = Vec<String>;

/// The owned leaves of `obj` and their values.
pub fn leaves(obj: &Value) -> BTreeMap<Path, &Value> {
    let mut out = BTreeMap::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for owned in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(v) = value.get(owned) {
                        walk(v, vec!["metadata".into(), owned.into()], &mut out);
                    }
                }
            }
            _ => walk(value, vec![key.clone()], &mut out),
        }
    }
    out
}

fn walk<'a>(value: &'a Value, path: Path, out: &mut BTreeMap<Path, &'a Value>) {
    match value {
        Value::Object(map) => {
            for (key, member) in map {
                let mut child = path.clone();
                child.push(key.clone());
                walk(member, child, out);
            }
        }
        Value::Null => {}
        other => {
            out.insert(path, other);
        }
    }
}

/// The value at `path`, if present.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, key| v.as_object()?.get(key))
}

/// Removes the value at `path`, then any maps that removal left empty (below the top level).
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = &mut *obj;
    for key in parents {
        match current.as_object_mut().and_then(|m| m.get_mut(key)) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Some(map) = current.as_object_mut() {
        map.remove(last);
    }
    if parents.len() > 1
        && get(obj, parents).is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
    {
        remove(obj, parents);
    }
}

/// The `FieldsV1` rendering of a set of paths (`{"f:spec":{"f:replicas":{}}}`).
pub fn fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for key in path {
            let entry = node
                .entry(format!("f:{key}"))
                .or_insert_with(|| Value::Object(Map::new()));
            node = entry.as_object_mut().expect("only objects are inserted");
        }
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(parts: &[&str]) -> Path {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn leaves_stop_at_scalars_and_lists_and_skip_identity() {
        let obj = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a", "labels": {"app": "x"}},
            "spec": {"replicas": 3, "ports": [1, 2], "empty": {}}});
        let paths: Vec<Path> = leaves(&obj).into_keys().collect();
        assert_eq!(
            paths,
            vec![
                p(&["metadata", "labels", "app"]),
                p(&["spec", "ports"]),
                p(&["spec", "replicas"])
            ]
        );
    }

    #[test]
    fn remove_prunes_maps_it_emptied() {
        let mut obj = json!({"spec": {"a": {"b": 1}, "c": 2}});
        remove(&mut obj, &p(&["spec", "a", "b"]));
        assert_eq!(obj, json!({"spec": {"c": 2}}));
    }

    #[test]
    fn fields_v1_nests_prefixed_keys() {
        let set: BTreeSet<Path> = [p(&["spec", "replicas"])].into_iter().collect();
        assert_eq!(fields_v1(&set), json!({"f:spec": {"f:replicas": {}}}));
    }
}

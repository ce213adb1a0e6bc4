//! Field ownership (`managedFields`) and server-side apply.
//!
//! Rules kept from the real server (structured-merge-diff):
//! - an apply makes its manager own exactly the fields in its configuration;
//! - fields it owned before and omits now are removed, unless another manager owns them;
//! - setting a field another manager owns to a different value is a conflict (409),
//!   unless `force`, which moves the ownership;
//! - any other write (create, update, patch) makes its manager own what it changed,
//!   without conflicts, and takes those fields away from everyone else.
//!
//! kube-lease-manager's mutual exclusion rests on the conflict rule.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::fields::{self, Path};

/// Whether a manager's fields came from an apply or from another kind of write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Create, update or patch.
    Update,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `fieldManager`.
    pub manager: String,
    /// How the fields were written.
    pub operation: Operation,
    /// `""` for the main resource, `"status"` or `"scale"` for a subresource.
    pub subresource: String,
    /// The apiVersion the manager wrote with.
    pub api_version: String,
    /// When the entry last changed.
    pub time: String,
    /// The owned field paths.
    pub fields: BTreeSet<Path>,
}

impl Entry {
    fn is(&self, manager: &str, operation: Operation, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

/// All managers of one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Managed(pub Vec<Entry>);

/// Who is writing: the manager, the subresource and the apiVersion used.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// `fieldManager`.
    pub manager: &'a str,
    /// `""`, `"status"` or `"scale"`.
    pub subresource: &'a str,
    /// The served apiVersion.
    pub api_version: &'a str,
    /// The time to stamp on changed entries.
    pub time: &'a str,
}

impl Managed {
    /// Records a non-apply write from `old` to `new`: changed fields move to the writer,
    /// removed fields leave every manager.
    pub fn record_update(&mut self, writer: Writer<'_>, old: Option<&Value>, new: &Value) {
        let old_leaves = old.map(fields::leaves).unwrap_or_default();
        let new_leaves = fields::leaves(new);
        let changed: BTreeSet<Path> = new_leaves
            .iter()
            .filter(|(p, v)| old_leaves.get(*p) != Some(*v))
            .map(|(p, _)| p.clone())
            .collect();
        let removed: BTreeSet<Path> = old_leaves
            .keys()
            .filter(|p| !new_leaves.contains_key(*p))
            .cloned()
            .collect();
        for entry in &mut self.0 {
            let before = entry.fields.len();
            entry
                .fields
                .retain(|p| !removed.contains(p) && !changed.contains(p));
            if entry.fields.len() != before {
                entry.time = writer.time.to_string();
            }
        }
        if !changed.is_empty() {
            let entry = self.entry(writer, Operation::Update);
            entry.fields.extend(changed);
        }
        self.0.retain(|e| !e.fields.is_empty());
    }

    /// Server-side apply of `config` onto `live` (absent for a create). Returns the new
    /// object, or the `(manager, field)` conflicts.
    pub fn apply(
        &mut self,
        writer: Writer<'_>,
        live: Option<&Value>,
        config: &Value,
        force: bool,
    ) -> Result<Value, Vec<(String, String)>> {
        let empty = json!({});
        let live_value = live.unwrap_or(&empty);
        let applied: BTreeSet<Path> = fields::leaves(config).into_keys().collect();
        let others = |e: &Entry| !e.is(writer.manager, Operation::Apply, writer.subresource);

        let mut conflicts = Vec::new();
        for entry in self.0.iter().filter(|e| others(e)) {
            for path in entry.fields.intersection(&applied) {
                if fields::get(live_value, path) != fields::get(config, path) {
                    conflicts.push((entry.manager.clone(), format!(".{}", path.join("."))));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(conflicts);
        }
        if force {
            for entry in self.0.iter_mut().filter(|e| others(e)) {
                let before = entry.fields.len();
                entry.fields.retain(|p| {
                    !(applied.contains(p) && fields::get(live_value, p) != fields::get(config, p))
                });
                if entry.fields.len() != before {
                    entry.time = writer.time.to_string();
                }
            }
        }

        let mut result = live_value.clone();
        let previously: BTreeSet<Path> = self
            .0
            .iter()
            .find(|e| !others(e))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        for dropped in previously.difference(&applied) {
            let owned_elsewhere = self
                .0
                .iter()
                .filter(|e| others(e))
                .any(|e| e.fields.contains(dropped));
            if !owned_elsewhere {
                fields::remove(&mut result, dropped);
            }
        }
        merge_config(&mut result, config);

        let entry = self.entry(writer, Operation::Apply);
        if entry.fields != applied {
            entry.time = writer.time.to_string();
        }
        entry.fields = applied;
        self.0.retain(|e| !e.fields.is_empty());
        Ok(result)
    }

    /// The writer's entry, created if missing.
    fn entry(&mut self, writer: Writer<'_>, operation: Operation) -> &mut Entry {
        let position = self
            .0
            .iter()
            .position(|e| e.is(writer.manager, operation, writer.subresource));
        let index = position.unwrap_or_else(|| {
            self.0.push(Entry {
                manager: writer.manager.to_string(),
                operation,
                subresource: writer.subresource.to_string(),
                api_version: writer.api_version.to_string(),
                time: writer.time.to_string(),
                fields: BTreeSet::new(),
            });
            self.0.len() - 1
        });
        &mut self.0[index]
    }

    /// Ownership equal to `other`'s, ignoring timestamps (a write that changes neither the
    /// object nor ownership is a no-op and does not bump the resourceVersion).
    pub fn same_ownership(&self, other: &Managed) -> bool {
        let key = |m: &Managed| -> Vec<(String, Operation, String, BTreeSet<Path>)> {
            m.0.iter()
                .map(|e| {
                    (
                        e.manager.clone(),
                        e.operation,
                        e.subresource.clone(),
                        e.fields.clone(),
                    )
                })
                .collect()
        };
        key(self) == key(other)
    }

    /// `metadata.managedFields` as the API renders it.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|e| {
                    let mut entry = json!({
                        "manager": e.manager,
                        "operation": match e.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
                        "apiVersion": e.api_version,
                        "time": e.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": fields::fields_v1(&e.fields),
                    });
                    if !e.subresource.is_empty() {
                        entry["subresource"] = e.subresource.clone().into();
                    }
                    entry
                })
                .collect(),
        )
    }
}

/// Merges an apply configuration: maps merge key by key, anything else replaces, `null`
/// removes.
fn merge_config(target: &mut Value, config: &Value) {
    match (target.as_object_mut(), config.as_object()) {
        (Some(target_map), Some(config_map)) => {
            for (key, value) in config_map {
                if value.is_null() {
                    target_map.remove(key);
                    continue;
                }
                match target_map.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge_config(existing, value)
                    }
                    _ => {
                        target_map.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        _ => *target = config.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            subresource: "",
            api_version: "v1",
            time: "t",
        }
    }

    #[test]
    fn a_manager_that_drops_a_field_removes_it() {
        let mut managed = Managed::default();
        let live = managed
            .apply(writer("a"), None, &json!({"spec": {"x": 1, "y": 2}}), false)
            .unwrap();
        let live = managed
            .apply(writer("a"), Some(&live), &json!({"spec": {"x": 1}}), false)
            .unwrap();
        assert_eq!(live, json!({"spec": {"x": 1}}));
    }

    #[test]
    fn a_dropped_field_another_manager_owns_stays() {
        let mut managed = Managed::default();
        let live = managed
            .apply(writer("a"), None, &json!({"spec": {"x": 1, "y": 2}}), false)
            .unwrap();
        let live = managed
            .apply(writer("b"), Some(&live), &json!({"spec": {"y": 2}}), false)
            .unwrap();
        let live = managed
            .apply(writer("a"), Some(&live), &json!({"spec": {"x": 1}}), false)
            .unwrap();
        assert_eq!(live, json!({"spec": {"x": 1, "y": 2}}));
    }

    #[test]
    fn changing_another_managers_field_conflicts_unless_forced() {
        let mut managed = Managed::default();
        let live = managed
            .apply(writer("a"), None, &json!({"spec": {"holder": "a"}}), false)
            .unwrap();
        let conflicts = managed
            .apply(
                writer("b"),
                Some(&live),
                &json!({"spec": {"holder": "b"}}),
                false,
            )
            .unwrap_err();
        assert_eq!(
            conflicts,
            vec![("a".to_string(), ".spec.holder".to_string())]
        );
        let live = managed
            .apply(
                writer("b"),
                Some(&live),
                &json!({"spec": {"holder": "b"}}),
                true,
            )
            .unwrap();
        assert_eq!(live["spec"]["holder"], "b");
        assert!(managed.0.iter().all(|e| e.manager == "b"), "{managed:?}");
    }

    #[test]
    fn applying_the_same_value_shares_ownership_without_conflict() {
        let mut managed = Managed::default();
        let live = managed
            .apply(writer("a"), None, &json!({"spec": {"x": 1}}), false)
            .unwrap();
        managed
            .apply(writer("b"), Some(&live), &json!({"spec": {"x": 1}}), false)
            .unwrap();
        assert_eq!(managed.0.len(), 2);
    }

    #[test]
    fn an_update_takes_changed_fields_and_forgets_removed_ones() {
        let mut managed = Managed::default();
        let live = managed
            .apply(writer("a"), None, &json!({"spec": {"x": 1, "y": 2}}), false)
            .unwrap();
        let mut new = live.clone();
        new["spec"]["x"] = 5.into();
        new["spec"].as_object_mut().unwrap().remove("y");
        managed.record_update(writer("u"), Some(&live), &new);
        let a = managed.0.iter().find(|e| e.manager == "a");
        assert!(a.is_none(), "a lost x to u and y was removed: {managed:?}");
        // No conflict for a later apply of a field nobody owns any more.
        managed
            .apply(writer("b"), Some(&new), &json!({"spec": {"y": 3}}), false)
            .unwrap();
    }
}

//! The set of served resources: the built-in table plus what registered CRDs add.
//!
//! Why it is shaped this way: every request looks a row up, CRD writes are rare, and the
//! rows of one CRD change together. So the built-in rows, which never change, are a
//! shared slice read without a lock, and each CRD's rows are one [`DashMap`] entry keyed
//! by the CRD's name: a lookup sees a CRD's old rows or its new ones, never half of each,
//! and lookups never wait on a write to another CRD. No order across CRDs is needed (each
//! serves its own `<plural>.<group>`), which is what lets the table be split per CRD, unlike
//! the object store, whose single lock keeps one order over every kind.
//!
//! The table follows CRD writes after the store has committed them, outside the store's
//! lock, so two writes to one CRD may arrive here in either order. Each entry keeps the
//! resourceVersion of the write it reflects and an older one is ignored; a deleted CRD
//! stays as an entry with no rows (one per CRD name ever deleted), so a late update
//! cannot bring it back.

use std::sync::Arc;

use dashmap::DashMap;

use super::{ResourceType, StorageKey, builtin};

/// Served resources, looked up by URL parts or by kind. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    builtin: Arc<[Arc<ResourceType>]>,
    /// CRD name (`<plural>.<group>`) → the rows it serves.
    custom: Arc<DashMap<String, Custom>>,
}

/// What one CRD serves, as of one write to it.
#[derive(Debug)]
struct Custom {
    /// The resourceVersion of the CRD write these rows come from.
    rv: u64,
    /// One row per served version; empty once the CRD is deleted.
    rows: Vec<Arc<ResourceType>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with the built-in kinds only.
    pub fn new() -> Self {
        Self {
            builtin: builtin::all().into_iter().map(Arc::new).collect(),
            custom: Arc::default(),
        }
    }

    /// Every served resource: built-ins first, then CRDs' rows by CRD name.
    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        let mut custom: Vec<(String, Vec<Arc<ResourceType>>)> = self
            .custom
            .iter()
            .filter(|entry| !entry.rows.is_empty())
            .map(|entry| (entry.key().clone(), entry.rows.clone()))
            .collect();
        custom.sort_by(|a, b| a.0.cmp(&b.0));
        self.builtin
            .iter()
            .cloned()
            .chain(custom.into_iter().flat_map(|(_, rows)| rows))
            .collect()
    }

    /// The resource served at `group`/`version`/`plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.first(|rt| rt.group == group && rt.version == version && rt.plural == plural)
    }

    /// Any served resource stored under `key` (to name it in messages and conversions).
    pub fn by_storage(&self, key: &StorageKey) -> Option<Arc<ResourceType>> {
        self.first(|rt| &rt.storage == key && rt.form == super::Form::Native)
    }

    /// The first row that is `wanted`, built-ins before CRDs (so a CRD cannot shadow a
    /// built-in kind).
    fn first(&self, wanted: impl Fn(&ResourceType) -> bool) -> Option<Arc<ResourceType>> {
        if let Some(rt) = self.builtin.iter().find(|rt| wanted(rt)) {
            return Some(rt.clone());
        }
        self.custom
            .iter()
            .find_map(|entry| entry.rows.iter().find(|rt| wanted(rt)).cloned())
    }

    /// Replaces the rows a CRD serves (an update of the CRD may change them), unless a
    /// later write to the CRD (`rv` is this write's resourceVersion) is already applied.
    pub fn set_custom(&self, crd_name: &str, rv: u64, rows: Vec<ResourceType>) {
        self.apply(crd_name, rv, rows.into_iter().map(Arc::new).collect());
    }

    /// Stops serving what a CRD served, as of its deletion at `rv`.
    pub fn remove_custom(&self, crd_name: &str, rv: u64) {
        self.apply(crd_name, rv, Vec::new());
    }

    fn apply(&self, crd_name: &str, rv: u64, rows: Vec<Arc<ResourceType>>) {
        let mut entry = self.custom.entry(crd_name.to_string()).or_insert(Custom {
            rv: 0,
            rows: Vec::new(),
        });
        if rv >= entry.rv {
            *entry = Custom { rv, rows };
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::resources::crd;

    /// The rows of a CRD `widgets.example.io` serving `versions`.
    fn widget_rows(versions: &[&str]) -> Vec<ResourceType> {
        let versions: Vec<_> = versions
            .iter()
            .map(|v| {
                json!({"name": v, "served": true, "storage": *v == versions[0],
                "schema": {"openAPIV3Schema": {"type": "object"}}})
            })
            .collect();
        crd::rows(&json!({"metadata": {"name": "widgets.example.io"},
            "spec": {"group": "example.io", "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets"}, "versions": versions}}))
        .expect("a valid CRD")
    }

    fn served_versions(registry: &Registry) -> Vec<String> {
        ["v1", "v2"]
            .into_iter()
            .filter(|v| registry.find("example.io", v, "widgets").is_some())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_crd_update_replaces_every_row_it_served() {
        let registry = Registry::new();
        registry.set_custom("widgets.example.io", 5, widget_rows(&["v1"]));
        registry.set_custom("widgets.example.io", 6, widget_rows(&["v2"]));
        assert_eq!(served_versions(&registry), ["v2"]);
        assert_eq!(registry.all().len(), builtin::all().len() + 1);
    }

    #[test]
    fn an_older_crd_write_arriving_late_does_not_replace_a_newer_one() {
        let registry = Registry::new();
        registry.set_custom("widgets.example.io", 6, widget_rows(&["v1", "v2"]));
        registry.set_custom("widgets.example.io", 5, widget_rows(&["v1"]));
        assert_eq!(served_versions(&registry), ["v1", "v2"]);
    }

    #[test]
    fn a_deleted_crd_stays_deleted_when_an_older_update_arrives_late() {
        let registry = Registry::new();
        registry.set_custom("widgets.example.io", 5, widget_rows(&["v1"]));
        registry.remove_custom("widgets.example.io", 7);
        registry.set_custom("widgets.example.io", 6, widget_rows(&["v1"]));
        assert!(served_versions(&registry).is_empty());
        assert_eq!(registry.all().len(), builtin::all().len());
        registry.set_custom("widgets.example.io", 8, widget_rows(&["v1"]));
        assert_eq!(served_versions(&registry), ["v1"], "re-created later");
    }

    #[test]
    fn a_crd_cannot_shadow_a_built_in_kind() {
        let registry = Registry::new();
        let mut rows = widget_rows(&["v1"]);
        rows[0].group = "apps".into();
        rows[0].plural = "statefulsets".into();
        registry.set_custom("statefulsets.apps", 1, rows);
        let found = registry.find("apps", "v1", "statefulsets").expect("served");
        assert!(!found.custom, "the built-in row answers");
    }
}

//! The set of served resources: the built-in table plus what registered CRDs add.

use std::sync::Arc;

use parking_lot::RwLock;

use super::{ResourceType, StorageKey, builtin};

/// Served resources, looked up by URL parts or by kind. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Debug)]
struct Inner {
    builtin: Vec<Arc<ResourceType>>,
    /// Rows added by CRDs, keyed by the CRD's name (`<plural>.<group>`).
    custom: Vec<(String, Arc<ResourceType>)>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with the built-in kinds only.
    pub fn new() -> Self {
        let builtin = builtin::all().into_iter().map(Arc::new).collect();
        Self {
            inner: Arc::new(RwLock::new(Inner {
                builtin,
                custom: Vec::new(),
            })),
        }
    }

    /// Every served resource, built-ins first.
    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        let inner = self.inner.read();
        inner
            .builtin
            .iter()
            .cloned()
            .chain(inner.custom.iter().map(|(_, rt)| rt.clone()))
            .collect()
    }

    /// The resource served at `group`/`version`/`plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.all()
            .into_iter()
            .find(|rt| rt.group == group && rt.version == version && rt.plural == plural)
    }

    /// Any served resource stored under `key` (to name it in messages and conversions).
    pub fn by_storage(&self, key: &StorageKey) -> Option<Arc<ResourceType>> {
        self.all()
            .into_iter()
            .find(|rt| &rt.storage == key && rt.form == super::Form::Native)
    }

    /// Replaces the rows a CRD serves (an update of the CRD may change them).
    pub fn set_custom(&self, crd_name: &str, rows: Vec<ResourceType>) {
        let mut inner = self.inner.write();
        inner.custom.retain(|(name, _)| name != crd_name);
        inner.custom.extend(
            rows.into_iter()
                .map(|rt| (crd_name.to_string(), Arc::new(rt))),
        );
    }

    /// Stops serving what a CRD served.
    pub fn remove_custom(&self, crd_name: &str) {
        self.inner
            .write()
            .custom
            .retain(|(name, _)| name != crd_name);
    }
}

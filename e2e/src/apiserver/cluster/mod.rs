//! The API's semantics, independent of HTTP: create, get, list, replace, patch, apply,
//! delete and watch over the store, with the real server's rules (preconditions,
//! generation, status subresource, finalizers, field ownership, CR schemas).
//!
//! The HTTP layer is a thin edge over this; in-process controllers (the garbage
//! collector now, the StatefulSet/kubelet/EndpointSlice emulation later) call it directly.

mod admit;
mod bind;
mod create;
mod delete;
mod update;
pub mod watch;

use std::sync::Arc;

use serde_json::Value;

pub use delete::{DeleteOptions, Propagation};

use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::meta;
use crate::apiserver::resources::{Form, Registry, ResourceType, StorageKey, events};
use crate::apiserver::select::Selectors;
use crate::apiserver::store::{ObjectKey, Store};

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// The object itself: `.status` is not written when the status subresource is on.
    Main,
    /// `/status`: only `.status` is written.
    Status,
}

impl Subresource {
    /// The `subresource` of managedFields entries.
    fn as_str(self) -> &'static str {
        match self {
            Self::Main => "",
            Self::Status => "status",
        }
    }
}

/// Query options every write carries.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `fieldManager` as the request gave it; apply requires one.
    pub field_manager: Option<String>,
    /// Who non-apply writes without a `fieldManager` are attributed to: the real server
    /// derives it from the User-Agent (`kubectl/v1.32 (…)` → `kubectl`).
    pub default_manager: Option<String>,
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `force=true` for apply: take ownership of conflicting fields.
    pub force: bool,
    /// `fieldValidation=Strict`: unknown fields of custom resources are errors, not pruned.
    pub strict: bool,
}

impl WriteOptions {
    fn manager(&self) -> &str {
        self.field_manager
            .as_deref()
            .or(self.default_manager.as_deref())
            .unwrap_or("unknown")
    }
}

/// The API server's state: objects and the resource table.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Objects, resourceVersions, history.
    pub store: Arc<Store>,
    /// Served resources.
    pub registry: Registry,
}

/// The storage key of the namespaces resource, checked on every namespaced create.
fn namespaces_key() -> StorageKey {
    StorageKey::new("", "namespaces")
}

impl Cluster {
    /// A cluster with the built-in kinds and the namespaces every cluster has.
    pub fn new(history_capacity: usize) -> ApiResult<Self> {
        let cluster = Self {
            store: Arc::new(Store::new(history_capacity)),
            registry: Registry::new(),
        };
        let namespaces = cluster.resource("", "v1", "namespaces")?;
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let options = WriteOptions {
                field_manager: Some("kube-apiserver".into()),
                ..Default::default()
            };
            cluster.create(&namespaces, None, ns, &options)?;
        }
        Ok(cluster)
    }

    /// The served resource at `group`/`version`/`plural`, or 404.
    pub fn resource(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> ApiResult<Arc<ResourceType>> {
        self.registry
            .find(group, version, plural)
            .ok_or_else(|| ApiError::no_route(&format!("{group}/{version}/{plural}")))
    }

    /// One object, served form, or 404.
    pub fn get(&self, rt: &ResourceType, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let stored = self
            .store
            .get(&rt.storage, &object_key(rt, namespace, name))
            .ok_or_else(|| not_found(rt, name))?;
        Ok(to_served(rt, &stored.object))
    }

    /// Matching objects (served form, sorted by namespace and name) and the list's
    /// resourceVersion, which is never empty: the watcher relists forever without one.
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        selectors: &Selectors,
    ) -> (Vec<Value>, u64) {
        let (objects, rv) = self.store.list(&rt.storage, namespace);
        let items = objects
            .iter()
            .map(|o| to_served(rt, o))
            .filter(|o| selectors.matches(o))
            .collect();
        (items, rv)
    }
}

/// The store key of an object of `rt`.
pub fn object_key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> ObjectKey {
    let ns = if rt.namespaced {
        namespace.unwrap_or_default()
    } else {
        ""
    };
    (ns.to_string(), name.to_string())
}

/// 404 for an object of `rt`.
pub fn not_found(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::not_found((&rt.group, &rt.plural, name))
}

/// A stored object as `rt` serves it.
pub fn to_served(rt: &ResourceType, stored: &Value) -> Value {
    match rt.form {
        Form::EventsV1 => events::to_v1(stored),
        Form::Native => {
            let mut obj = stored.clone();
            if let Value::Object(map) = &mut obj {
                map.insert("apiVersion".into(), rt.api_version().into());
                map.insert("kind".into(), rt.kind.clone().into());
            }
            obj
        }
    }
}

/// A served-form object as it is stored.
fn to_storage(rt: &ResourceType, served: Value) -> Value {
    match rt.form {
        Form::EventsV1 => events::to_core(&served),
        Form::Native => served,
    }
}

/// 400 unless the body's `apiVersion`/`kind` (when present, or always for apply) are `rt`'s.
fn check_type(rt: &ResourceType, body: &Value, required: bool) -> ApiResult<()> {
    let api_version = body.get("apiVersion").and_then(Value::as_str);
    let kind = body.get("kind").and_then(Value::as_str);
    if required && (api_version.is_none() || kind.is_none()) {
        return Err(ApiError::bad_request(
            "apiVersion and kind must be set in an apply configuration",
        ));
    }
    if let Some(v) = api_version.filter(|v| *v != rt.api_version()) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if let Some(k) = kind.filter(|k| *k != rt.kind) {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

/// 400 unless the body names the same object as the URL; fills the name in when absent.
fn check_name(body: &mut Value, name: &str) -> ApiResult<()> {
    match meta::name(body) {
        Some(n) if n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        Some(_) => Ok(()),
        None => {
            meta::meta_mut(body).insert("name".into(), name.into());
            Ok(())
        }
    }
}

/// 400 unless the body's namespace (if any) is the URL's; sets or clears it per scope.
fn check_namespace(rt: &ResourceType, body: &mut Value, namespace: Option<&str>) -> ApiResult<()> {
    let metadata = meta::meta_mut(body);
    if !rt.namespaced {
        metadata.remove("namespace");
        return Ok(());
    }
    let url_ns = namespace.ok_or_else(|| {
        ApiError::bad_request("a namespace is required for a namespaced resource")
    })?;
    match metadata.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != url_ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            metadata.insert("namespace".into(), url_ns.into());
            Ok(())
        }
    }
}

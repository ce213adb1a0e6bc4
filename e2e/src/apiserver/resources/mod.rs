//! The resource table: every kind the emulator serves, built-in or from a CRD.
//!
//! One generic store and one set of handlers serve all kinds; what differs between kinds
//! is data in [`ResourceType`] (scope, subresources, printer columns, schema), which is
//! why adding a built-in kind is one line in [`builtin`] and a CRD is a row added at run time.

pub mod builtin;
pub mod crd;
pub mod events;
mod registry;

use std::sync::Arc;

use serde_json::Value;

pub use registry::Registry;

use crate::apiserver::schema::Schema;

/// Where objects of a resource live in the store: `(group, plural)`. Several served
/// resources may share one storage (core and `events.k8s.io` Events; the versions of a CRD).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey {
    /// API group, empty for the core group.
    pub group: String,
    /// Plural resource name.
    pub plural: String,
}

impl StorageKey {
    /// The key for `group`/`plural`.
    pub fn new(group: &str, plural: &str) -> Self {
        Self {
            group: group.into(),
            plural: plural.into(),
        }
    }
}

/// How a served resource's objects relate to the stored ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Served as stored, with `apiVersion` set to the served group/version.
    Native,
    /// `events.k8s.io/v1` Events, converted to and from the stored core Events.
    EventsV1,
}

/// Paths of the scale subresource, as a CRD's `subresources.scale` names them.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePaths {
    /// `.spec.replicas` — where `Scale.spec.replicas` reads and writes.
    pub spec_replicas: String,
    /// `.status.replicas` — where `Scale.status.replicas` reads.
    pub status_replicas: String,
    /// Where `Scale.status.selector` reads; a string, or (built-ins) a LabelSelector object.
    pub label_selector: Option<String>,
}

/// A printer column for Table output (`kubectl get`).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Header, e.g. `Replicas`.
    pub name: String,
    /// OpenAPI type: `integer`, `number`, `string`, `boolean`, `date`.
    pub type_: String,
    /// OpenAPI format hint, often empty.
    pub format: String,
    /// Shown by `kubectl get -o wide` only when > 0.
    pub priority: i64,
    /// A simple JSONPath into the object.
    pub json_path: String,
    /// Column description.
    pub description: String,
}

impl Column {
    /// A column from static parts, for the built-in table.
    pub fn new(name: &str, type_: &str, json_path: &str) -> Self {
        Self {
            name: name.into(),
            type_: type_.into(),
            format: String::new(),
            priority: 0,
            json_path: json_path.into(),
            description: String::new(),
        }
    }

    /// The `Age` column the real server adds for kinds without their own columns.
    pub fn age() -> Self {
        let mut age = Self::new("Age", "date", ".metadata.creationTimestamp");
        age.description = "CreationTimestamp is a timestamp representing the server time when this object was created.".into();
        age
    }
}

/// Checks a built-in object by decoding it into its k8s-openapi type, so a field of the
/// wrong type is refused with 400 as the real server's decoder would.
pub type TypedCheck = fn(&Value) -> Result<(), String>;

/// One served resource: a (group, version, plural).
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: String,
    /// Served version.
    pub version: String,
    /// Kind, e.g. `ConfigMap`.
    pub kind: String,
    /// Plural resource name used in URLs.
    pub plural: String,
    /// Singular name, for discovery.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl (`kc`, `cm`).
    pub short_names: Vec<String>,
    /// Categories for kubectl (`all`).
    pub categories: Vec<String>,
    /// Whether the status subresource is on: `.status` is then only written through it.
    pub status: bool,
    /// The scale subresource, if on.
    pub scale: Option<ScalePaths>,
    /// Whether the server maintains `metadata.generation` for this kind.
    pub generation: bool,
    /// Whether a PUT without `metadata.resourceVersion` is allowed (false for CRs, Leases).
    pub unconditional_update: bool,
    /// Where objects are stored.
    pub storage: StorageKey,
    /// How served objects map to stored ones.
    pub form: Form,
    /// Printer columns after `Name`.
    pub columns: Vec<Column>,
    /// Field selectors this kind supports besides `metadata.name`/`metadata.namespace`.
    pub field_labels: Vec<String>,
    /// Structural schema of a custom resource.
    pub schema: Option<Arc<Schema>>,
    /// Typed decode check of a built-in kind.
    pub typed_check: Option<TypedCheck>,
    /// Custom resource: strategic merge patch is refused (415), as the real server does.
    pub custom: bool,
}

impl ResourceType {
    /// `apiVersion` of served objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `group/version` path prefix: `/api/v1` or `/apis/<group>/<version>`.
    pub fn path_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The list kind (`ConfigMapList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether this kind supports `field` in a field selector.
    pub fn supports_field(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace")
            || self.field_labels.iter().any(|f| f == field)
    }

    /// Printer columns, with the default `Age` when the kind declares none.
    pub fn printer_columns(&self) -> Vec<Column> {
        if self.columns.is_empty() {
            vec![Column::age()]
        } else {
            self.columns.clone()
        }
    }
}

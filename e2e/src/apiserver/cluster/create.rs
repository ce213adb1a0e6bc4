//! Create: a new object gets its identity (uid, creationTimestamp, generation) here.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use super::admit::admit;
use super::{
    Cluster, WriteOptions, check_namespace, check_type, namespaces_key, object_key, to_served,
    to_storage,
};
use crate::apiserver::error::{ApiError, ApiResult, Cause};
use crate::apiserver::meta;
use crate::apiserver::patch::apply::{Managed, Writer};
use crate::apiserver::resources::{ResourceType, crd};
use crate::apiserver::store::{Committed, EventType, Stored, Write};

/// Metadata only the server sets; whatever a client sends there on create is dropped.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
    "selfLink",
];

/// Next fake ClusterIP (10.96.0.10 and up). Services get one as on a real cluster; no
/// traffic goes to it, the kcache clients use the headless Service's pod addresses.
static NEXT_CLUSTER_IP: AtomicU32 = AtomicU32::new(10);

impl Cluster {
    /// POST: creates `body` (served form); 409 AlreadyExists if the name is taken.
    pub fn create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        body: Value,
        options: &WriteOptions,
    ) -> ApiResult<Value> {
        self.require_namespace(rt, namespace)?;
        let mut obj = new_object(rt, namespace, body, options)?;
        let name = meta::name(&obj).unwrap_or_default().to_string();
        let mut managed = Managed::default();
        let time = meta::now_time();
        let writer = Writer {
            manager: options.manager(),
            subresource: "",
            api_version: &rt.api_version(),
            time: &time,
        };
        managed.record_update(writer, None, &obj);
        stamp_managed(&mut obj, &managed);
        let id = object_key(rt, namespace, &name);
        let committed = self
            .store
            .mutate(&rt.storage, &id, options.dry_run, |current| {
                if current.is_some() {
                    return Err(ApiError::already_exists((&rt.group, &rt.plural, &name)));
                }
                Ok(Write::Put(Stored {
                    object: obj,
                    managed,
                }))
            })?;
        self.after_write(rt, &committed);
        Ok(to_served(rt, &committed.object))
    }

    /// 404 when a namespaced object's namespace does not exist, as the real server's
    /// admission answers.
    pub(super) fn require_namespace(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
    ) -> ApiResult<()> {
        match namespace.filter(|_| rt.namespaced) {
            Some(ns)
                if self
                    .store
                    .get(&namespaces_key(), &(String::new(), ns.to_string()))
                    .is_none() =>
            {
                Err(ApiError::not_found(("", "namespaces", ns)))
            }
            _ => Ok(()),
        }
    }

    /// Keeps the resource table in step with CRD writes.
    pub(super) fn after_write(&self, rt: &ResourceType, committed: &Committed) {
        if rt.group != "apiextensions.k8s.io" || rt.plural != "customresourcedefinitions" {
            return;
        }
        let Some(name) = meta::name(&committed.object) else {
            return;
        };
        // The write's own version: the registry may see two writes to a CRD out of order.
        let rv = meta::meta_str(&committed.object, "resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or_default();
        match committed.event {
            Some(EventType::Deleted) => self.registry.remove_custom(name, rv),
            Some(_) => {
                if let Ok(rows) = crd::rows(&committed.object) {
                    self.registry.set_custom(name, rv, rows);
                }
            }
            None => {}
        }
    }
}

/// The storage form of a new object: checked, named, with its server-set metadata.
/// Does not touch the store (it runs inside `Store::mutate` for apply-creates).
pub(super) fn new_object(
    rt: &ResourceType,
    namespace: Option<&str>,
    mut body: Value,
    options: &WriteOptions,
) -> ApiResult<Value> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    check_type(rt, &body, false)?;
    check_namespace(rt, &mut body, namespace)?;
    let metadata = meta::meta_mut(&mut body);
    if metadata
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        let prefix = metadata
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if prefix.is_empty() {
            let cause = Cause::new(
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            );
            return Err(ApiError::invalid(&rt.kind, &rt.group, "", vec![cause]));
        }
        metadata.insert(
            "name".into(),
            format!("{prefix}{}", meta::random_suffix()).into(),
        );
    }
    for field in SERVER_METADATA {
        metadata.remove(*field);
    }
    metadata.insert("uid".into(), meta::new_uid().into());
    metadata.insert("creationTimestamp".into(), meta::now_time().into());
    if rt.generation {
        metadata.insert("generation".into(), 1.into());
    }
    if rt.status
        && let Value::Object(map) = &mut body
    {
        map.remove("status");
    }
    let mut obj = to_storage(rt, body);
    if rt.group.is_empty() && rt.plural == "services" {
        default_service(&mut obj);
    }
    admit(rt, &mut obj, options.strict)?;
    Ok(obj)
}

/// Writes `managedFields` into the object's metadata (dropped when nobody owns anything).
pub(super) fn stamp_managed(obj: &mut Value, managed: &Managed) {
    let metadata = meta::meta_mut(obj);
    if managed.0.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert("managedFields".into(), managed.to_json());
    }
}

/// `spec.type` defaults to ClusterIP, and non-headless Services get an address.
fn default_service(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let type_ = spec
        .entry("type")
        .or_insert_with(|| "ClusterIP".into())
        .as_str()
        .unwrap_or_default()
        .to_string();
    if type_ == "ExternalName"
        || spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .is_some_and(|ip| !ip.is_empty())
    {
        if let Some(ip) = spec.get("clusterIP").cloned() {
            spec.entry("clusterIPs")
                .or_insert_with(|| Value::Array(vec![ip]));
        }
        return;
    }
    let n = NEXT_CLUSTER_IP.fetch_add(1, Ordering::Relaxed);
    let ip = format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff);
    spec.insert("clusterIP".into(), ip.clone().into());
    spec.insert("clusterIPs".into(), Value::Array(vec![ip.into()]));
}

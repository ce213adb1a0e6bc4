//! Replace (PUT), patches and server-side apply, all ending in [`Cluster::finish_update`]
//! so the same rules hold for every kind of write.

use serde_json::{Map, Value};

use super::admit::admit;
use super::create::{new_object, stamp_managed};
use super::{
    Cluster, Subresource, WriteOptions, check_name, check_namespace, check_type, not_found,
    object_key, to_served, to_storage,
};
use crate::apiserver::error::{ApiError, ApiResult, Cause};
use crate::apiserver::meta;
use crate::apiserver::patch::apply::{Managed, Writer};
use crate::apiserver::patch::{self, PatchType};
use crate::apiserver::resources::ResourceType;
use crate::apiserver::store::{EventType, Stored, Write};

/// Metadata an update cannot change: it is copied from the stored object.
const KEPT_METADATA: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
    "selfLink",
];

/// How the new object's ownership is known.
enum Ownership {
    /// A non-apply write: diff old and new.
    Update,
    /// An apply: already computed.
    Applied(Managed),
}

impl Cluster {
    /// PUT. A stale `metadata.resourceVersion` is 409; a missing one is 422 for kinds
    /// that require it (custom resources, Leases).
    pub fn replace(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        mut body: Value,
        sub: Subresource,
        options: &WriteOptions,
    ) -> ApiResult<Value> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        check_type(rt, &body, false)?;
        check_name(&mut body, name)?;
        check_namespace(rt, &mut body, namespace)?;
        if meta::meta_str(&body, "resourceVersion").is_none_or(str::is_empty)
            && !rt.unconditional_update
        {
            let cause = Cause::new(
                "metadata.resourceVersion",
                "FieldValueInvalid",
                "Invalid value: 0x0: must be specified for an update",
            );
            return Err(ApiError::invalid(&rt.kind, &rt.group, name, vec![cause]));
        }
        let new = to_storage(rt, body);
        let committed = self.store.mutate(
            &rt.storage,
            &object_key(rt, namespace, name),
            options.dry_run,
            |current| {
                let current = current.ok_or_else(|| not_found(rt, name))?;
                finish_update(rt, current, new, sub, options, Ownership::Update)
            },
        )?;
        self.after_write(rt, &committed);
        Ok(to_served(rt, &committed.object))
    }

    /// PATCH of any type. Returns the object and whether it was created (apply only).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: Value,
        sub: Subresource,
        options: &WriteOptions,
    ) -> ApiResult<(Value, bool)> {
        match patch_type {
            PatchType::Apply => return self.apply(rt, namespace, name, body, sub, options),
            PatchType::Strategic if rt.custom => {
                return Err(ApiError::unsupported_media_type(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            _ => {}
        }
        let committed = self.store.mutate(
            &rt.storage,
            &object_key(rt, namespace, name),
            options.dry_run,
            |current| {
                let current = current.ok_or_else(|| not_found(rt, name))?;
                let mut doc = to_served(rt, &current.object);
                match patch_type {
                    PatchType::Json => patch::json(&mut doc, &body)?,
                    _ => patch::merge(&mut doc, &body)?,
                }
                check_name(&mut doc, name)?;
                check_namespace(rt, &mut doc, namespace)?;
                finish_update(
                    rt,
                    current,
                    to_storage(rt, doc),
                    sub,
                    options,
                    Ownership::Update,
                )
            },
        )?;
        self.after_write(rt, &committed);
        Ok((to_served(rt, &committed.object), false))
    }

    /// Server-side apply: creates when absent (201), merges with field ownership otherwise.
    fn apply(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        mut config: Value,
        sub: Subresource,
        options: &WriteOptions,
    ) -> ApiResult<(Value, bool)> {
        let manager = options
            .field_manager
            .as_deref()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                let cause = Cause::new(
                    "fieldManager",
                    "FieldValueRequired",
                    "Required value: is required for apply patch",
                );
                ApiError::invalid("PatchOptions", "meta.k8s.io", "", vec![cause])
            })?;
        if !config.is_object() {
            return Err(ApiError::bad_request(
                "an apply configuration must be an object",
            ));
        }
        check_type(rt, &config, true)?;
        check_name(&mut config, name)?;
        check_namespace(rt, &mut config, namespace)?;
        let config = scope_to_subresource(rt, config, sub);
        self.require_namespace(rt, namespace)?;
        let time = meta::now_time();
        let api_version = rt.api_version();
        let writer = Writer {
            manager,
            subresource: sub.as_str(),
            api_version: &api_version,
            time: &time,
        };
        let subject = (rt.group.as_str(), rt.plural.as_str(), name);
        let committed = self.store.mutate(
            &rt.storage,
            &object_key(rt, namespace, name),
            options.dry_run,
            |current| {
                let Some(current) = current else {
                    if sub == Subresource::Status {
                        return Err(not_found(rt, name));
                    }
                    let mut managed = Managed::default();
                    let applied = managed
                        .apply(writer, None, &config, options.force)
                        .map_err(|c| ApiError::apply_conflict(subject, &c))?;
                    let mut obj = new_object(rt, namespace, applied, options)?;
                    stamp_managed(&mut obj, &managed);
                    return Ok(Write::Put(Stored {
                        object: obj,
                        managed,
                    }));
                };
                let live = to_served(rt, &current.object);
                let mut managed = current.managed.clone();
                let applied = managed
                    .apply(writer, Some(&live), &config, options.force)
                    .map_err(|c| ApiError::apply_conflict(subject, &c))?;
                finish_update(
                    rt,
                    current,
                    to_storage(rt, applied),
                    sub,
                    options,
                    Ownership::Applied(managed),
                )
            },
        )?;
        self.after_write(rt, &committed);
        let created = committed.event == Some(EventType::Added);
        Ok((to_served(rt, &committed.object), created))
    }
}

/// An apply to the main resource does not write `.status` when the status subresource is
/// on; an apply to `/status` writes nothing else.
fn scope_to_subresource(rt: &ResourceType, mut config: Value, sub: Subresource) -> Value {
    let Value::Object(map) = &mut config else {
        return config;
    };
    match sub {
        Subresource::Main if rt.status => {
            map.remove("status");
        }
        Subresource::Status => {
            map.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
                metadata
                    .retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "resourceVersion"));
            }
        }
        Subresource::Main => {}
    }
    config
}

/// The rules every update obeys, then the decision for the store.
fn finish_update(
    rt: &ResourceType,
    current: &Stored,
    mut new: Value,
    sub: Subresource,
    options: &WriteOptions,
    ownership: Ownership,
) -> ApiResult<Write> {
    let old = &current.object;
    let name = meta::name(old).unwrap_or_default().to_string();
    let old_rv = meta::meta_str(old, "resourceVersion").unwrap_or_default();
    if meta::meta_str(&new, "resourceVersion").is_some_and(|rv| !rv.is_empty() && rv != old_rv) {
        return Err(ApiError::conflict(
            (&rt.group, &rt.plural, &name),
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    // A uid names one incarnation of the object: an update that carries another one
    // (written for an object since deleted and re-created) is refused, as the real
    // server's immutable-uid check does.
    if let Some(uid) = meta::meta_str(&new, "uid").filter(|u| !u.is_empty())
        && Some(uid) != meta::uid(old)
    {
        let cause = Cause::new(
            "metadata.uid",
            "FieldValueInvalid",
            format!("Invalid value: {uid:?}: field is immutable"),
        );
        return Err(ApiError::invalid(&rt.kind, &rt.group, &name, vec![cause]));
    }
    match sub {
        Subresource::Status => {
            let status = new.get("status").cloned();
            new = old.clone();
            set_or_remove(&mut new, "status", status);
        }
        Subresource::Main if rt.status => {
            set_or_remove(&mut new, "status", old.get("status").cloned());
        }
        Subresource::Main => {}
    }
    keep_server_metadata(old, &mut new);
    check_finalizers(rt, old, &new, &name)?;
    admit(rt, &mut new, options.strict)?;
    if rt.generation && sub == Subresource::Main && spec_of(old, rt) != spec_of(&new, rt) {
        let generation = meta::meta(old)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta::meta_mut(&mut new).insert("generation".into(), (generation + 1).into());
    }
    let managed = match ownership {
        Ownership::Applied(managed) => managed,
        Ownership::Update => {
            let time = meta::now_time();
            let api_version = rt.api_version();
            let writer = Writer {
                manager: options.manager(),
                subresource: sub.as_str(),
                api_version: &api_version,
                time: &time,
            };
            let mut managed = current.managed.clone();
            managed.record_update(writer, Some(old), &new);
            managed
        }
    };
    if comparable(&new) == comparable(old) && managed.same_ownership(&current.managed) {
        return Ok(Write::Keep);
    }
    stamp_managed(&mut new, &managed);
    if meta::meta_str(&new, "deletionTimestamp").is_some() && meta::finalizers(&new).is_empty() {
        return Ok(Write::Delete(new));
    }
    Ok(Write::Put(Stored {
        object: new,
        managed,
    }))
}

fn set_or_remove(obj: &mut Value, key: &str, value: Option<Value>) {
    if let Value::Object(map) = obj {
        match value {
            Some(v) => {
                map.insert(key.into(), v);
            }
            None => {
                map.remove(key);
            }
        }
    }
}

fn keep_server_metadata(old: &Value, new: &mut Value) {
    let old_meta = meta::meta(old).cloned().unwrap_or_default();
    let new_meta = meta::meta_mut(new);
    for field in KEPT_METADATA {
        match old_meta.get(*field) {
            Some(v) => new_meta.insert(field.to_string(), v.clone()),
            None => new_meta.remove(*field),
        };
    }
    new_meta.insert(
        "resourceVersion".into(),
        old_meta.get("resourceVersion").cloned().unwrap_or_default(),
    );
}

/// Once `deletionTimestamp` is set, finalizers may only be removed.
fn check_finalizers(rt: &ResourceType, old: &Value, new: &Value, name: &str) -> ApiResult<()> {
    if meta::meta_str(old, "deletionTimestamp").is_none() {
        return Ok(());
    }
    let before = meta::finalizers(old);
    if meta::finalizers(new).iter().all(|f| before.contains(f)) {
        return Ok(());
    }
    let cause = Cause::new(
        "metadata.finalizers",
        "FieldValueForbidden",
        "Forbidden: no new finalizers can be added if the object is being deleted",
    );
    Err(ApiError::invalid(&rt.kind, &rt.group, name, vec![cause]))
}

/// Everything but metadata (and status, when it has its own subresource): a change here
/// bumps `metadata.generation`.
fn spec_of(obj: &Value, rt: &ResourceType) -> Map<String, Value> {
    let mut map = obj.as_object().cloned().unwrap_or_default();
    map.remove("metadata");
    map.remove("apiVersion");
    map.remove("kind");
    if rt.status {
        map.remove("status");
    }
    map
}

/// An object without the fields a no-op write may still change.
fn comparable(obj: &Value) -> Value {
    let mut obj = obj.clone();
    let metadata = meta::meta_mut(&mut obj);
    metadata.remove("managedFields");
    metadata.remove("resourceVersion");
    obj
}

//! Delete: preconditions, finalizers (deletionTimestamp first, removal when the last
//! finalizer goes), and the propagation policy that tells the garbage collector what to
//! do with dependents.

use serde::Deserialize;
use serde_json::Value;

use super::create::stamp_managed;
use super::{Cluster, not_found, object_key, to_served};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::meta;
use crate::apiserver::resources::ResourceType;
use crate::apiserver::select::Selectors;
use crate::apiserver::store::{EventType, ObjectKey, Write};

/// The finalizer a foreground deletion holds until the object's dependents are gone.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// `DeleteOptions`, as kube and kubectl send them in the DELETE body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    /// Conditions the object must meet to be deleted.
    pub preconditions: Option<Preconditions>,
    /// What happens to dependents.
    pub propagation_policy: Option<Propagation>,
    /// The legacy spelling of `propagationPolicy: Orphan`.
    pub orphan_dependents: Option<bool>,
    /// `["All"]` for a dry run.
    #[serde(default)]
    pub dry_run: Vec<String>,
    /// How long a pod's kubelet may take to stop it; 0 removes it at once.
    pub grace_period_seconds: Option<i64>,
}

/// `DeleteOptions.preconditions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    /// The object's uid must be this.
    pub uid: Option<String>,
    /// The object's resourceVersion must be this.
    pub resource_version: Option<String>,
}

/// `DeleteOptions.propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Propagation {
    /// Dependents lose their owner reference and stay.
    Orphan,
    /// The object goes now; the garbage collector deletes dependents after.
    Background,
    /// Dependents go first; the object waits with a `foregroundDeletion` finalizer.
    Foreground,
}

impl DeleteOptions {
    fn propagation(&self) -> Propagation {
        match (self.propagation_policy, self.orphan_dependents) {
            (Some(p), _) => p,
            (None, Some(true)) => Propagation::Orphan,
            _ => Propagation::Background,
        }
    }
}

impl Cluster {
    /// DELETE. Returns the object and whether it is gone (200) or waits for finalizers (202).
    pub fn delete(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> ApiResult<(Value, bool)> {
        let (obj, gone) = self.delete_key(rt, &object_key(rt, namespace, name), options)?;
        Ok((to_served(rt, &obj), gone))
    }

    /// DELETE of a collection: every matching object, as one DELETE each.
    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        selectors: &Selectors,
        options: &DeleteOptions,
    ) -> ApiResult<(Vec<Value>, u64)> {
        let (items, _) = self.list(rt, namespace, selectors);
        let mut deleted = Vec::new();
        for item in items {
            let Some(name) = meta::name(&item) else {
                continue;
            };
            match self.delete(rt, meta::namespace(&item), name, options) {
                Ok((obj, _)) => deleted.push(obj),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok((deleted, self.store.current_rv()))
    }

    /// DELETE by store key (storage form in and out); the garbage collector uses it too.
    pub(crate) fn delete_key(
        &self,
        rt: &ResourceType,
        id: &ObjectKey,
        options: &DeleteOptions,
    ) -> ApiResult<(Value, bool)> {
        let propagation = options.propagation();
        let existing = self
            .store
            .get(&rt.storage, id)
            .ok_or_else(|| not_found(rt, &id.1))?;
        let uid = meta::uid(&existing.object).unwrap_or_default().to_string();
        let has_dependents = !self.store.dependents_of(&uid).is_empty();
        if propagation == Propagation::Orphan && options.dry_run.is_empty() {
            self.orphan_dependents(&uid);
        }
        let dry_run = !options.dry_run.is_empty();
        let committed = self.store.mutate(&rt.storage, id, dry_run, |current| {
            let current = current.ok_or_else(|| not_found(rt, &id.1))?;
            check_preconditions(rt, &current.object, options)?;
            if let Some(write) = graceful_pod_delete(rt, current, options) {
                return Ok(write);
            }
            let mut obj = current.object.clone();
            let mut finalizers = meta::finalizers(&obj);
            let deleting = meta::meta_str(&obj, "deletionTimestamp").is_some();
            if propagation == Propagation::Foreground
                && has_dependents
                && !deleting
                && !finalizers.iter().any(|f| f == FOREGROUND_FINALIZER)
            {
                finalizers.push(FOREGROUND_FINALIZER.into());
                meta::meta_mut(&mut obj).insert("finalizers".into(), finalizers.clone().into());
            }
            if finalizers.is_empty() {
                return Ok(Write::Delete(obj));
            }
            if deleting {
                return Ok(Write::Keep);
            }
            let metadata = meta::meta_mut(&mut obj);
            metadata.insert("deletionTimestamp".into(), meta::now_time().into());
            metadata.insert("deletionGracePeriodSeconds".into(), 0.into());
            if rt.generation {
                let generation = metadata
                    .get("generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                metadata.insert("generation".into(), (generation + 1).into());
            }
            let managed = current.managed.clone();
            stamp_managed(&mut obj, &managed);
            Ok(Write::Put(crate::apiserver::store::Stored {
                object: obj,
                managed,
            }))
        })?;
        self.after_write(rt, &committed);
        let gone = committed.event == Some(EventType::Deleted)
            || (dry_run && meta::finalizers(&committed.object).is_empty());
        Ok((committed.object, gone))
    }

    /// Removes owner references to `uid` from every dependent, as the garbage collector
    /// does for `propagationPolicy: Orphan`.
    pub(crate) fn orphan_dependents(&self, uid: &str) {
        for (key, id) in self.store.dependents_of(uid) {
            let _ = self.store.mutate(&key, &id, false, |current| {
                let Some(current) = current else {
                    return Ok(Write::Keep);
                };
                let mut stored = current.clone();
                let metadata = meta::meta_mut(&mut stored.object);
                if let Some(Value::Array(refs)) = metadata.get_mut("ownerReferences") {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                    if refs.is_empty() {
                        metadata.remove("ownerReferences");
                    }
                }
                Ok(Write::Put(stored))
            });
        }
    }
}

/// Graceful deletion of a pod bound to a node, as the real pod registry does it: the pod
/// stays, marked with `deletionTimestamp` (now + grace) and `deletionGracePeriodSeconds`,
/// until its kubelet has stopped the containers and deletes it again with grace 0.
/// `None` when the delete goes ahead now (not a pod, unbound, or grace 0).
fn graceful_pod_delete(
    rt: &ResourceType,
    current: &crate::apiserver::store::Stored,
    options: &DeleteOptions,
) -> Option<Write> {
    if !rt.group.is_empty() || rt.plural != "pods" {
        return None;
    }
    let obj = &current.object;
    meta::get_path(obj, &["spec", "nodeName"]).and_then(Value::as_str)?;
    // A pod that never ran (or has stopped for good) has nothing to wait for.
    if matches!(
        meta::get_path(obj, &["status", "phase"]).and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let grace = options
        .grace_period_seconds
        .or_else(|| {
            meta::get_path(obj, &["spec", "terminationGracePeriodSeconds"]).and_then(Value::as_i64)
        })
        .unwrap_or(DEFAULT_POD_GRACE_SECONDS)
        .max(0);
    if grace == 0 {
        return None;
    }
    let current_grace = meta::meta(obj)
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64);
    if current_grace.is_some_and(|g| g <= grace) {
        return Some(Write::Keep);
    }
    let mut stored = current.clone();
    let metadata = meta::meta_mut(&mut stored.object);
    metadata.insert(
        "deletionTimestamp".into(),
        meta::time_in(grace.unsigned_abs()).into(),
    );
    metadata.insert("deletionGracePeriodSeconds".into(), grace.into());
    Some(Write::Put(stored))
}

/// The pod grace period when neither the delete nor the pod names one (the API default).
pub const DEFAULT_POD_GRACE_SECONDS: i64 = 30;

fn check_preconditions(rt: &ResourceType, obj: &Value, options: &DeleteOptions) -> ApiResult<()> {
    let Some(pre) = &options.preconditions else {
        return Ok(());
    };
    let name = meta::name(obj).unwrap_or_default();
    let subject = (rt.group.as_str(), rt.plural.as_str(), name);
    if let Some(uid) = pre.uid.as_deref().filter(|u| Some(*u) != meta::uid(obj)) {
        return Err(ApiError::conflict(
            subject,
            format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta::uid(obj).unwrap_or_default()
            ),
        ));
    }
    let rv = meta::meta_str(obj, "resourceVersion").unwrap_or_default();
    if let Some(want) = pre.resource_version.as_deref().filter(|want| *want != rv) {
        return Err(ApiError::conflict(
            subject,
            format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
            ),
        ));
    }
    Ok(())
}

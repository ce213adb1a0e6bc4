//! The garbage collector: owner references, namespace deletion and CRD deletion.
//!
//! - An object all of whose owners (by uid) are gone is deleted (background cascade).
//! - An object deleted in the foreground waits with the `foregroundDeletion` finalizer
//!   until its dependents are gone.
//! - Deleting a Namespace deletes everything in it; deleting a CRD deletes its objects.
//!
//! Like the real one it is asynchronous: a client sees dependents disappear shortly after
//! the owner, not in the same response.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::apiserver::cluster::{Cluster, DeleteOptions, Subresource, WriteOptions};
use crate::apiserver::meta;
use crate::apiserver::patch::PatchType;
use crate::apiserver::resources::StorageKey;
use crate::apiserver::store::{Event, EventType, ObjectKey};

const FOREGROUND: &str = "foregroundDeletion";
const MANAGER: &str = "garbage-collector";

/// Runs until the task is dropped.
pub async fn run(cluster: Cluster) {
    let mut subscription = cluster.store.subscribe(cluster.store.current_rv());
    sweep(&cluster);
    loop {
        match subscription.next_batch().await {
            Some(Ok(events)) => events.iter().for_each(|event| handle(&cluster, event)),
            // Fell behind the history, or the store restarted: look at everything.
            Some(Err(_)) | None => {
                subscription = cluster.store.subscribe(cluster.store.current_rv());
                sweep(&cluster);
            }
        }
    }
}

fn handle(cluster: &Cluster, event: &Arc<Event>) {
    let object = event.object.as_ref();
    match event.type_ {
        EventType::Deleted => {
            if let Some(uid) = meta::uid(object) {
                for (key, id) in cluster.store.dependents_of(uid) {
                    collect_if_orphaned(cluster, &key, &id);
                }
            }
            for owner in meta::owner_uids(object) {
                finish_foreground(cluster, &owner);
            }
            match (event.key.group.as_str(), event.key.plural.as_str()) {
                ("", "namespaces") => {
                    delete_namespace_contents(cluster, meta::name(object).unwrap_or_default())
                }
                ("apiextensions.k8s.io", "customresourcedefinitions") => {
                    delete_custom_objects(cluster, object)
                }
                _ => {}
            }
        }
        EventType::Added | EventType::Modified => {
            if meta::finalizers(object).iter().any(|f| f == FOREGROUND)
                && meta::meta_str(object, "deletionTimestamp").is_some()
            {
                let uid = meta::uid(object).unwrap_or_default().to_string();
                for (key, id) in cluster.store.dependents_of(&uid) {
                    delete(cluster, &key, &id);
                }
                finish_foreground(cluster, &uid);
            }
            if !meta::owner_uids(object).is_empty() {
                let id = (
                    meta::namespace(object).unwrap_or_default().to_string(),
                    meta::name(object).unwrap_or_default().to_string(),
                );
                collect_if_orphaned(cluster, &event.key, &id);
            }
        }
    }
}

/// Everything at once: after a restart or when events were missed.
fn sweep(cluster: &Cluster) {
    for (key, id, owners) in cluster.store.owned_objects() {
        if owners
            .iter()
            .all(|uid| cluster.store.locate_uid(uid).is_none())
        {
            delete(cluster, &key, &id);
        }
    }
}

fn collect_if_orphaned(cluster: &Cluster, key: &StorageKey, id: &ObjectKey) {
    let Some(stored) = cluster.store.get(key, id) else {
        return;
    };
    let owners = meta::owner_uids(&stored.object);
    if !owners.is_empty()
        && owners
            .iter()
            .all(|uid| cluster.store.locate_uid(uid).is_none())
    {
        delete(cluster, key, id);
    }
}

/// Removes the foreground finalizer from the owner `uid` once it has no dependents left.
fn finish_foreground(cluster: &Cluster, uid: &str) {
    let Some((key, id)) = cluster.store.locate_uid(uid) else {
        return;
    };
    let Some(stored) = cluster.store.get(&key, &id) else {
        return;
    };
    let finalizers = meta::finalizers(&stored.object);
    if !finalizers.iter().any(|f| f == FOREGROUND) || !cluster.store.dependents_of(uid).is_empty() {
        return;
    }
    let Some(rt) = cluster.registry.by_storage(&key) else {
        return;
    };
    let remaining: Vec<Value> = finalizers
        .into_iter()
        .filter(|f| f != FOREGROUND)
        .map(Value::from)
        .collect();
    let patch = json!({"metadata": {"finalizers": remaining}});
    let options = WriteOptions {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let namespace = Some(id.0.as_str()).filter(|ns| !ns.is_empty());
    if let Err(e) = cluster.patch(
        &rt,
        namespace,
        &id.1,
        PatchType::Merge,
        patch,
        Subresource::Main,
        &options,
    ) {
        tracing::debug!(error = %e, "garbage collector could not finish a foreground deletion");
    }
}

fn delete_namespace_contents(cluster: &Cluster, namespace: &str) {
    for (key, id) in cluster.store.in_namespace(namespace) {
        delete(cluster, &key, &id);
    }
}

fn delete_custom_objects(cluster: &Cluster, crd: &Value) {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let key = StorageKey::new(group, plural);
    for id in cluster.store.keys_of(&key) {
        // The CRD no longer serves the resource, so there is no row to go through.
        let _ = cluster.store.mutate(&key, &id, false, |current| {
            Ok(match current {
                Some(stored) => crate::apiserver::store::Write::Delete(stored.object.clone()),
                None => crate::apiserver::store::Write::Keep,
            })
        });
    }
}

fn delete(cluster: &Cluster, key: &StorageKey, id: &ObjectKey) {
    let Some(rt) = cluster.registry.by_storage(key) else {
        return;
    };
    match cluster.delete_key(&rt, id, &DeleteOptions::default()) {
        Ok(_) => {}
        Err(e) if e.code == 404 => {}
        Err(e) => tracing::warn!(error = %e, object = %id.1, "garbage collector could not delete"),
    }
}

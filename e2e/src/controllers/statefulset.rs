//! The StatefulSet controller, as kube-controller-manager's behaves for what kcache uses:
//! pods `<name>-<ordinal>` with stable hostnames under the governing Service, OrderedReady
//! and Parallel management, scale-down from the highest ordinal, RollingUpdate (with
//! partition) and OnDelete, ControllerRevisions per template, and the status fields the
//! real one reports.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use super::{pod_ready, run_loop, selector_matches, wake_on_changes};

/// Label with the pod's name, which the real controller sets (per-pod Services use it).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label with the name of the ControllerRevision a pod was created from (the real
/// controller's value: `<set>-<hash>`).
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// Label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Runs the controller until `stop` is set.
pub async fn run(client: Client, stop: tokio::sync::watch::Receiver<bool>) {
    let notify = Arc::new(Notify::new());
    let watches = [
        wake_on_changes(Api::<StatefulSet>::all(client.clone()), notify.clone()),
        wake_on_changes(Api::<Pod>::all(client.clone()), notify.clone()),
    ];
    run_loop("statefulset", notify, stop, || reconcile_all(&client)).await;
    for w in watches {
        w.abort();
    }
}

async fn reconcile_all(client: &Client) -> Result<(), kube::Error> {
    let sets = Api::<StatefulSet>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    for set in sets {
        if set.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Err(e) = reconcile(client, &set).await {
            tracing::warn!(statefulset = %set.name_any(), error = %e, "reconcile failed");
        }
    }
    Ok(())
}

/// The revision hash of a pod template: stable for the same template.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    // FNV-1a: stable across runs and builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| alphabet[((hash >> (i * 6)) % alphabet.len() as u64) as usize] as char)
        .collect()
}

fn owner(set: &StatefulSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: set.name_any(),
        uid: set.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn ordinal_of(set_name: &str, pod: &Pod) -> Option<i32> {
    pod.name_any()
        .strip_prefix(set_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn running_and_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Running") && super::condition_true(s, "Ready"))
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.labels().get(REVISION_LABEL).map(String::as_str)
}

async fn reconcile(client: &Client, set: &StatefulSet) -> Result<(), kube::Error> {
    let ns = set.namespace().unwrap_or_else(|| "default".into());
    let name = set.name_any();
    let Some(spec) = set.spec.as_ref() else {
        return Ok(());
    };
    let uid = set.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let revisions_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);

    // Revisions: one per distinct template, the newest is the update revision.
    let update_hash = template_hash(&spec.template);
    let update_revision = format!("{name}-{update_hash}");
    let revisions: Vec<ControllerRevision> = revisions_api
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    if !revisions.iter().any(|r| r.name_any() == update_revision) {
        let next = revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
        let mut labels = spec.selector.match_labels.clone().unwrap_or_default();
        labels.insert(REVISION_LABEL.into(), update_revision.clone());
        let revision: ControllerRevision = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": update_revision, "namespace": ns, "labels": labels,
                         "ownerReferences": [owner(set)]},
            "data": {"spec": {"template": spec.template, "$patch": "replace"}},
            "revision": next,
        }))
        .map_err(kube::Error::SerdeError)?;
        match revisions_api
            .create(&PostParams::default(), &revision)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let status = set.status.clone().unwrap_or_default();
    let current_revision = status
        .current_revision
        .clone()
        .unwrap_or_else(|| update_revision.clone());
    let current_template = if current_revision == update_revision {
        spec.template.clone()
    } else {
        revisions
            .iter()
            .find(|r| r.name_any() == current_revision)
            .and_then(|r| r.data.as_ref())
            .and_then(|d| d.0.pointer("/spec/template").cloned())
            .and_then(|t| serde_json::from_value(t).ok())
            .unwrap_or_else(|| spec.template.clone())
    };

    let replicas = spec.replicas.unwrap_or(1);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0);

    let mut pods: BTreeMap<i32, Pod> = BTreeMap::new();
    for pod in pods_api.list(&ListParams::default()).await? {
        let owned = pod.owner_references().iter().any(|o| o.uid == uid);
        if owned
            && selector_matches(&spec.selector, pod.labels())
            && let Some(ordinal) = ordinal_of(&name, &pod)
        {
            pods.insert(ordinal, pod);
        }
    }

    // Pods that ended (Failed or Succeeded) are replaced.
    for pod in pods.values() {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let ended = matches!(phase, Some("Failed" | "Succeeded"));
        if ended && pod.metadata.deletion_timestamp.is_none() {
            pods_api
                .delete(&pod.name_any(), &DeleteParams::default())
                .await?;
        }
    }

    // Create what is missing; OrderedReady waits for every lower ordinal to be ready.
    for ordinal in 0..replicas {
        if pods.contains_key(&ordinal) {
            continue;
        }
        if !parallel && !(0..ordinal).all(|o| pods.get(&o).is_some_and(pod_ready)) {
            break;
        }
        let use_current = !on_delete && ordinal < partition;
        let (template, hash) = if use_current {
            (&current_template, &current_revision)
        } else {
            (&spec.template, &update_revision)
        };
        let pod = new_pod(set, template, hash, ordinal)?;
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(pod) => {
                pods.insert(ordinal, pod);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
        if !parallel {
            break;
        }
    }

    // Scale down from the highest ordinal; OrderedReady one at a time, after the rest
    // are ready and nothing else is terminating.
    let condemned: Vec<&Pod> = pods.range(replicas..).rev().map(|(_, p)| p).collect();
    for pod in &condemned {
        if pod.metadata.deletion_timestamp.is_some() {
            if !parallel {
                break;
            }
            continue;
        }
        if !parallel && !pods.range(..replicas).all(|(_, p)| pod_ready(p)) {
            break;
        }
        pods_api
            .delete(&pod.name_any(), &DeleteParams::default())
            .await?;
        if !parallel {
            break;
        }
    }

    // RollingUpdate: once every wanted pod is there and ready, replace the highest
    // out-of-date ordinal at or above the partition, one at a time.
    let wanted_all_ready = (0..replicas).all(|o| pods.get(&o).is_some_and(pod_ready));
    if !on_delete
        && wanted_all_ready
        && condemned.is_empty()
        && let Some(pod) = pods
            .iter()
            .rev()
            .filter(|(ordinal, _)| **ordinal >= partition && **ordinal < replicas)
            .map(|(_, p)| p)
            .find(|p| revision_of(p) != Some(update_revision.as_str()))
    {
        pods_api
            .delete(&pod.name_any(), &DeleteParams::default())
            .await?;
    }

    // Status, as the real controller computes it.
    let mut next = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: Some(status.collision_count.unwrap_or(0)),
        ..Default::default()
    };
    let (mut ready, mut current, mut updated) = (0, 0, 0);
    for pod in pods.values() {
        next.replicas += 1;
        // As the real controller counts: Running and Ready, terminating or not.
        if running_and_ready(pod) {
            ready += 1;
        }
        if pod.metadata.deletion_timestamp.is_none() {
            if revision_of(pod) == Some(current_revision.as_str()) {
                current += 1;
            }
            if revision_of(pod) == Some(update_revision.as_str()) {
                updated += 1;
            }
        }
    }
    let rollout_done = updated == replicas && ready == replicas && next.replicas == replicas;
    next.ready_replicas = Some(ready);
    next.available_replicas = Some(ready);
    next.current_replicas = Some(if rollout_done { updated } else { current });
    next.updated_replicas = Some(updated);
    next.current_revision = Some(if rollout_done {
        update_revision.clone()
    } else {
        current_revision
    });
    next.update_revision = Some(update_revision);
    if set.status.as_ref() != Some(&next) {
        Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": next})),
            )
            .await?;
    }
    Ok(())
}

/// The pod for `ordinal` from `template`, as the real controller names and labels it.
fn new_pod(
    set: &StatefulSet,
    template: &PodTemplateSpec,
    revision: &str,
    ordinal: i32,
) -> Result<Pod, kube::Error> {
    let set_name = set.name_any();
    let name = format!("{set_name}-{ordinal}");
    let mut metadata = template.metadata.clone().unwrap_or_default();
    let labels = metadata.labels.get_or_insert_with(Default::default);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(REVISION_LABEL.into(), revision.into());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    metadata.name = Some(name.clone());
    metadata.namespace = set.namespace();
    metadata.owner_references = Some(vec![owner(set)]);
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name);
    spec.subdomain = set.spec.as_ref().and_then(|s| s.service_name.clone());
    Ok(Pod {
        metadata,
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_hash_is_stable_and_changes_with_the_template() {
        let mut template = PodTemplateSpec::default();
        let a = template_hash(&template);
        assert_eq!(a, template_hash(&template.clone()));
        assert_eq!(a.len(), 10);
        template.metadata = Some(Default::default());
        template
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .get_or_insert_default()
            .insert("x".into(), "y".into());
        assert_ne!(a, template_hash(&template));
    }
}

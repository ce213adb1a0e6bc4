//! The controllers a local cluster needs and the emulator lacks: StatefulSets and
//! EndpointSlices. Unlike [`crate::apiserver::controllers`] they are ordinary API clients
//! (kube-rs over a kubeconfig), so they could run against any API server; against a real
//! one kube-controller-manager's own controllers do this work instead.
//!
//! Both are level-triggered, as Kubernetes' are: any change to a watched kind (or a
//! periodic resync) wakes the controller, which reconciles every object it manages from
//! a fresh list.

pub mod endpointslice;
pub mod statefulset;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// How often a controller reconciles even when nothing changed: it repairs anything a
/// missed event or a failed write left behind.
pub const RESYNC: Duration = Duration::from_secs(5);

/// Wakes `notify` on every change of `K` (and on every relist), until the process ends.
pub fn wake_on_changes<K>(api: Api<K>, notify: Arc<Notify>) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            if let Err(e) = event {
                tracing::debug!(error = %e, "watch error (retrying)");
            }
            notify.notify_one();
        }
    })
}

/// Runs `reconcile` whenever `notify` fires or [`RESYNC`] passes, until `stop` is set.
pub async fn run_loop<F, Fut>(
    name: &'static str,
    notify: Arc<Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut reconcile: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    loop {
        if *stop.borrow() {
            return;
        }
        if let Err(e) = reconcile().await {
            tracing::warn!(controller = name, error = %e, "reconcile failed (retrying)");
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
            _ = stop.changed() => return,
        }
        // Let a burst of events settle into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a pod is Running with condition Ready True (and not terminating).
pub fn pod_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .is_some_and(|s| s.phase.as_deref() == Some("Running") && condition_true(s, "Ready"))
}

/// Whether the pod status has condition `type_` True.
pub fn condition_true(status: &k8s_openapi::api::core::v1::PodStatus, type_: &str) -> bool {
    status
        .conditions
        .as_ref()
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether every label of `selector` (matchLabels and matchExpressions) holds on `labels`.
pub fn selector_matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

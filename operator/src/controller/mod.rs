//! The kube-runtime Controller on CacheClusters and the context it reconciles with.
//!
//! The operator's ServiceAccount needs, cluster-wide: get/list/watch on
//! cacheclusters and patch on cacheclusters/status; get/list/watch/create/patch/delete
//! on statefulsets, services, serviceaccounts, roles, rolebindings,
//! poddisruptionbudgets and networkpolicies (a server-side apply that creates an
//! object is authorized as `create`); get/create/patch/delete on servicemonitors and
//! prometheusrules; create/patch on events.k8s.io events; get/patch/update on its
//! coordination.k8s.io Lease; and list/watch on endpointslices (RBAC lets it grant the
//! nodes only what it holds itself). The chart's ClusterRole
//! (charts/kcache-operator/templates/rbac.yaml) is the list that is tested.

mod apply;
mod backoff;
mod discovery;
mod events;
mod reconcile;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kcache_crd::CacheCluster;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::{Controller, watcher};

pub use backoff::{BASE_DELAY, Backoff, MAX_DELAY};
pub use discovery::{DISCOVERY_TTL, MonitoringDiscovery, MonitoringKinds};
pub use events::{Events, REPORTER};
pub use reconcile::{RESYNC_INTERVAL, error_policy, reconcile};

use crate::Error;
use crate::build::BuildOptions;
use crate::build::meta::managed_by_selector;
use crate::metrics::Metrics;

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub options: BuildOptions,
    events: Events,
    discovery: MonitoringDiscovery,
    backoff: Backoff,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("options", &self.options)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for an operator instance named `instance` (its pod name).
    pub fn new(client: Client, metrics: Metrics, options: BuildOptions, instance: &str) -> Self {
        Self {
            events: Events::new(client.clone(), instance),
            client,
            metrics,
            options,
            discovery: MonitoringDiscovery::default(),
            backoff: Backoff::default(),
        }
    }
}

/// Runs the controller until `shutdown` resolves (then finishes the reconciliations
/// under way). Fails at once if the CRD is not installed.
///
/// Any change of a CacheCluster or of an owned object (a pod turning ready, someone
/// editing or deleting an object) triggers a reconciliation. The operator's own
/// status write triggers one more, which finds nothing to change and writes
/// nothing, so it ends there. (Filtering on the generation would save that round,
/// but needs kube-runtime's unstable stream API.)
pub async fn run(
    client: Client,
    metrics: Metrics,
    options: BuildOptions,
    instance: &str,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let clusters = Api::<CacheCluster>::all(client.clone());
    clusters
        .list(&ListParams::default().limit(1))
        .await
        .map_err(Error::CrdMissing)?;
    let owned = watcher::Config::default().labels(&managed_by_selector());
    let controller = Controller::new(clusters, watcher::Config::default().any_semantic())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<ServiceAccount>::all(client.clone()), owned.clone())
        .owns(Api::<Role>::all(client.clone()), owned.clone())
        .owns(Api::<RoleBinding>::all(client.clone()), owned.clone())
        .owns(
            Api::<PodDisruptionBudget>::all(client.clone()),
            owned.clone(),
        )
        .owns(Api::<NetworkPolicy>::all(client.clone()), owned)
        .graceful_shutdown_on(shutdown);
    let store = controller.store();
    let context = Arc::new(Context::new(client, metrics.clone(), options, instance));
    tracing::info!("controller started");
    controller
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            // Counted here, not in reconcile, so a deletion counts too: collecting
            // the deleted cluster's objects triggers one more round, which ends in
            // an ObjectNotFound error.
            metrics.set_managed_clusters(store.state().len());
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object, "reconciled"),
                Err(error) => tracing::warn!(%error, "controller"),
            }
            std::future::ready(())
        })
        .await;
    tracing::info!("controller stopped");
    Ok(())
}

//! Pure functions from a CacheCluster to the objects that run it. Nothing here talks
//! to the API server: the reconciler applies what these return, and `render` prints
//! it, so both always agree and every object is unit-tested without a cluster.

mod disruption;
pub mod meta;
mod monitoring;
mod network;
pub mod node;
pub mod peer_token;
mod rbac;
mod services;
pub mod settings;
pub mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kcache_crd::{AuthSpec, CacheCluster};
use kube::ResourceExt;
use kube::core::DynamicObject;

pub use monitoring::{
    MONITORING_GROUP_VERSION, prometheus_rule_resource, service_monitor_resource,
};
pub use settings::{NodeSettings, SpecProblem};

/// The kcache-node image used when a spec names none: the one released with this
/// operator, so an operator upgrade rolls the nodes to the matching version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/kcache/kcache-node:", env!("CARGO_PKG_VERSION"));

/// Settings of the operator itself that shape the objects it builds.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Image of clusters whose spec sets none.
    pub default_image: String,
    /// The cluster's DNS domain, for the client endpoint in the status.
    pub cluster_domain: String,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            default_image: DEFAULT_IMAGE.to_owned(),
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}

/// A CacheCluster whose spec resolved, with everything the builders need.
#[derive(Debug)]
pub struct Cluster<'a> {
    /// The resource, for its spec and (for owner references) its uid.
    pub resource: &'a CacheCluster,
    pub name: String,
    pub namespace: String,
    pub settings: NodeSettings,
    pub options: &'a BuildOptions,
    /// The authentication the nodes run with: spec.auth, or, while spec.auth is being
    /// turned off, the one the running nodes have (see [`peer_token::retiring`]).
    pub auth: Option<AuthSpec>,
    /// With `auth`: what nodes still admit besides their tokens while the running
    /// ones may lack them (see [`peer_token::migration`]). The reconciler sets it
    /// from the running StatefulSet; a new cluster never needs it.
    pub migration: peer_token::Migration,
}

impl<'a> Cluster<'a> {
    /// Resolves a CacheCluster, or names every spec field that cannot work.
    /// A resource without a namespace (read from a file) is placed in `default`.
    pub fn new(
        resource: &'a CacheCluster,
        options: &'a BuildOptions,
    ) -> Result<Self, Vec<SpecProblem>> {
        Ok(Self {
            resource,
            name: resource.name_any(),
            namespace: resource.namespace().unwrap_or_else(|| "default".to_owned()),
            settings: NodeSettings::resolve(&resource.spec)?,
            options,
            auth: resource.spec.auth.clone(),
            migration: peer_token::Migration::Done,
        })
    }

    /// The image the nodes run.
    pub fn image(&self) -> &str {
        self.resource
            .spec
            .image
            .as_deref()
            .unwrap_or(&self.options.default_image)
    }
}

/// Everything the operator applies for one cluster. Optional objects are `None` when
/// the spec turns them off (the reconciler then deletes any it created earlier).
#[derive(Debug, Clone)]
pub struct Desired {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub headless_service: Service,
    pub client_service: Service,
    pub stateful_set: StatefulSet,
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    pub network_policy: Option<NetworkPolicy>,
    pub service_monitor: Option<DynamicObject>,
    pub prometheus_rule: Option<DynamicObject>,
}

impl Desired {
    /// Builds every object of the cluster.
    pub fn build(cluster: &Cluster<'_>) -> Self {
        let monitoring = &cluster.resource.spec.monitoring;
        Self {
            service_account: rbac::service_account(cluster),
            role: rbac::role(cluster),
            role_binding: rbac::role_binding(cluster),
            headless_service: services::headless(cluster),
            client_service: services::client(cluster),
            stateful_set: statefulset::stateful_set(cluster),
            pod_disruption_budget: cluster
                .resource
                .spec
                .pod_disruption_budget
                .enabled
                .then(|| disruption::pod_disruption_budget(cluster)),
            network_policy: cluster
                .resource
                .spec
                .network_policy
                .enabled
                .then(|| network::network_policy(cluster)),
            service_monitor: monitoring
                .service_monitor
                .enabled
                .then(|| monitoring::service_monitor(cluster)),
            prometheus_rule: monitoring
                .prometheus_rule
                .enabled
                .then(|| monitoring::prometheus_rule(cluster)),
        }
    }

    /// Every object as JSON, in the order the reconciler applies them: identity and
    /// permissions first, so the pods can watch EndpointSlices from their first start.
    pub fn to_json(&self) -> Vec<serde_json::Value> {
        fn json<T: serde::Serialize>(object: &T) -> serde_json::Value {
            serde_json::to_value(object).expect("Kubernetes objects always serialize")
        }
        let mut objects = vec![
            json(&self.service_account),
            json(&self.role),
            json(&self.role_binding),
            json(&self.headless_service),
            json(&self.client_service),
            json(&self.stateful_set),
        ];
        objects.extend(self.pod_disruption_budget.as_ref().map(json));
        objects.extend(self.network_policy.as_ref().map(json));
        objects.extend(self.service_monitor.as_ref().map(json));
        objects.extend(self.prometheus_rule.as_ref().map(json));
        objects
    }
}

#[cfg(test)]
mod tests;

//! The PodDisruptionBudget: voluntary disruptions (node drains, cluster upgrades)
//! evict cache nodes no faster than they can hand their keys over.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Cluster;
use super::meta::{owned_meta, selector_labels};

/// The cluster's PodDisruptionBudget; one node at a time unless the spec says
/// otherwise.
pub fn pod_disruption_budget(cluster: &Cluster<'_>) -> PodDisruptionBudget {
    let wanted = &cluster.resource.spec.pod_disruption_budget;
    let max_unavailable = match (&wanted.min_available, &wanted.max_unavailable) {
        (None, None) => Some(IntOrString::Int(1)),
        (_, max) => max.clone(),
    };
    PodDisruptionBudget {
        metadata: owned_meta(cluster, cluster.name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&cluster.name)),
                match_expressions: None,
            }),
            max_unavailable,
            min_available: wanted.min_available.clone(),
            // A node that is not ready holds no traffic and hands nothing over, so
            // evicting it is harmless; counting it would block drains forever.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
        }),
        status: None,
    }
}

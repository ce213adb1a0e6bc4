//! The StatefulSet of cache nodes. A StatefulSet, not a Deployment, because a node's
//! member id is its pod name: a restarted `demo-2` is still `demo-2` and owns the
//! same keys, so a restart moves no data.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::Cluster;
use super::meta::{ADMIN_PORT, common_labels, headless_service_name, owned_meta, selector_labels};
use super::node::{self, RUN_AS};

/// Seconds the kubelet waits beyond drainTimeout before it kills a stopping node:
/// time for the node to notice the drain deadline, close its streams and exit, so a
/// drain that uses its full budget still ends on the node's terms.
pub const GRACE_MARGIN_SECONDS: i64 = 10;

/// The StatefulSet of a cluster.
pub fn stateful_set(cluster: &Cluster<'_>) -> StatefulSet {
    StatefulSet {
        metadata: owned_meta(cluster, cluster.name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(cluster.resource.spec.replicas),
            service_name: Some(headless_service_name(&cluster.name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&cluster.name)),
                match_expressions: None,
            },
            // Nodes do not need each other to start: starting them all at once makes
            // creation and scale-up as fast as one pod start.
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    max_unavailable: None,
                }),
            }),
            template: pod_template(cluster),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

fn pod_template(cluster: &Cluster<'_>) -> PodTemplateSpec {
    let spec = &cluster.resource.spec;
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels(cluster)),
            annotations: Some(pod_annotations(cluster)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![node::container(cluster)],
            volumes: node::volumes(cluster),
            service_account_name: Some(cluster.name.clone()),
            // The node reads EndpointSlices with this account's token.
            automount_service_account_token: Some(true),
            // Service environment variables are noise to a node and grow with the
            // namespace; discovery goes through the API.
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(
                i64::try_from(cluster.settings.drain_timeout.as_secs()).unwrap_or(i64::MAX / 2)
                    + GRACE_MARGIN_SECONDS,
            ),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            affinity: Some(
                spec.affinity
                    .clone()
                    .unwrap_or_else(|| default_affinity(&cluster.name)),
            ),
            node_selector: spec.node_selector.clone(),
            tolerations: spec.tolerations.clone(),
            topology_spread_constraints: spec.topology_spread_constraints.clone(),
            image_pull_secrets: spec.image_pull_secrets.clone(),
            ..PodSpec::default()
        }),
    }
}

/// The user's pod labels under the operator's: the selector labels must win, or
/// the StatefulSet would not own its own pods.
fn pod_labels(cluster: &Cluster<'_>) -> BTreeMap<String, String> {
    let mut labels = cluster.resource.spec.pod_labels.clone().unwrap_or_default();
    labels.extend(common_labels(&cluster.name));
    labels
}

/// Scrape hints for a Prometheus without the Prometheus Operator, under the
/// user's annotations (which win).
fn pod_annotations(cluster: &Cluster<'_>) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), ADMIN_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ]);
    annotations.extend(
        cluster
            .resource
            .spec
            .pod_annotations
            .clone()
            .unwrap_or_default(),
    );
    annotations
}

/// Prefer putting a cluster's nodes on different machines. Preferred, not
/// required: a three-node cache on a two-machine test cluster should still run.
pub fn default_affinity(cluster: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(cluster)),
                            match_expressions: None,
                        }),
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            required_during_scheduling_ignored_during_execution: None,
        }),
        ..Affinity::default()
    }
}

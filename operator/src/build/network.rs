//! The NetworkPolicy: the cache port admits the cluster's own nodes (replication,
//! forwarding, handoff) and the listed clients, the Redis port (when enabled) the
//! listed clients; the admin port admits the listed scrapers. Everything else is
//! dropped by the network plugin.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Cluster;
use super::meta::{ADMIN_PORT, GRPC_PORT, owned_meta, selector_labels};

/// The cluster's NetworkPolicy.
pub fn network_policy(cluster: &Cluster<'_>) -> NetworkPolicy {
    let wanted = &cluster.resource.spec.network_policy;
    let nodes = NetworkPolicyPeer {
        pod_selector: Some(pods(&cluster.name)),
        ..NetworkPolicyPeer::default()
    };
    let clients = wanted
        .allowed_clients
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| {
            vec![NetworkPolicyPeer {
                pod_selector: Some(LabelSelector::default()),
                ..NetworkPolicyPeer::default()
            }]
        });
    let scrapers = wanted.allowed_scrapers.clone().filter(|s| !s.is_empty());
    let redis = &cluster.resource.spec.redis;
    let redis_rule = redis
        .enabled
        .then(|| rule(redis.port, Some(clients.clone())));
    NetworkPolicy {
        metadata: owned_meta(cluster, cluster.name.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods(&cluster.name)),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(
                [
                    rule(GRPC_PORT, Some(vec![nodes])),
                    rule(GRPC_PORT, Some(clients)),
                    // No `from`: any source, so a Prometheus in another namespace scrapes.
                    rule(ADMIN_PORT, scrapers),
                ]
                .into_iter()
                .chain(redis_rule)
                .collect(),
            ),
            egress: None,
        }),
    }
}

fn pods(cluster: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(cluster)),
        match_expressions: None,
    }
}

fn rule(port: i32, from: Option<Vec<NetworkPolicyPeer>>) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from,
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(port)),
            protocol: Some("TCP".to_owned()),
            end_port: None,
        }]),
    }
}

//! Names, labels, ports and metadata shared by every object of a cluster, so that
//! selectors, Services and monitors agree on them by construction.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use super::Cluster;

/// The one field manager of every server-side apply the operator makes, so the API
/// server attributes (and on conflict, hands back) exactly the fields it set.
pub const FIELD_MANAGER: &str = "kcache-operator";

/// The node's gRPC port (kcache.v1.Cache, the Peer service, health, reflection).
pub const GRPC_PORT: i32 = 7000;
/// The node's admin HTTP port (/metrics, /healthz, /readyz).
pub const ADMIN_PORT: i32 = 7001;
/// Port names, referenced by the Services, the ServiceMonitor and the NetworkPolicy.
pub const GRPC_PORT_NAME: &str = "grpc";
pub const ADMIN_PORT_NAME: &str = "admin";
/// The Redis-protocol port's name (its number is `spec.redis.port`, 6379 by default).
pub const REDIS_PORT_NAME: &str = "redis";

/// Standard Kubernetes labels: the application and the cluster (instance).
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of `app.kubernetes.io/name` on everything of a kcache cluster.
pub const APP_NAME: &str = "kcache";
/// The value of `app.kubernetes.io/managed-by`; the operator's watches select on it.
pub const MANAGED_BY: &str = "kcache-operator";
/// Tells the headless (discovery) Service from the client Service, so a
/// ServiceMonitor selects exactly one of them and scrapes each node once.
pub const SERVICE_ROLE_LABEL: &str = "kcache.io/service";

/// The labels that select a cluster's pods. Never change them: a StatefulSet's
/// selector is immutable.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), APP_NAME.to_owned()),
        (INSTANCE_LABEL.to_owned(), cluster.to_owned()),
    ])
}

/// The selector labels in string form, for the scale subresource and for HPAs.
pub fn selector_string(cluster: &str) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels on every object the operator owns.
pub fn common_labels(cluster: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert(COMPONENT_LABEL.to_owned(), "cache".to_owned());
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    labels
}

/// The label selector of the operator's watches on owned objects.
pub fn managed_by_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// The discovery and client entry point: nodes watch its EndpointSlices, clients
/// resolve its DNS name to every ready node.
pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}-headless")
}

/// Where clients connect, as shown in the CacheCluster's status.
pub fn client_endpoint(cluster: &str, namespace: &str, cluster_domain: &str) -> String {
    format!(
        "{}.{namespace}.svc.{cluster_domain}:{GRPC_PORT}",
        headless_service_name(cluster)
    )
}

/// Metadata of an owned object: in the cluster's namespace, with the common labels
/// and a controller owner reference, so deleting the CacheCluster lets the garbage
/// collector delete it. Without a uid (render from a file) there is no owner yet.
pub fn owned_meta(cluster: &Cluster<'_>, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(cluster.namespace.clone()),
        labels: Some(common_labels(&cluster.name)),
        owner_references: cluster
            .resource
            .controller_owner_ref(&())
            .map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_string_matches_the_selector_labels() {
        assert_eq!(
            selector_string("demo"),
            "app.kubernetes.io/instance=demo,app.kubernetes.io/name=kcache"
        );
    }

    #[test]
    fn clients_connect_to_the_headless_service_on_the_grpc_port() {
        assert_eq!(
            client_endpoint("demo", "apps", "cluster.local"),
            "demo-headless.apps.svc.cluster.local:7000"
        );
    }
}

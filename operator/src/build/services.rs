//! The two Services of a cluster. The headless one is the entry point: nodes watch
//! its EndpointSlices for membership, and its DNS name answers with every ready
//! node, which gRPC's `round_robin` policy and the kcache client balance over. The
//! ClusterIP one gives tools that want a single stable address (a port-forward, a
//! quick grpcurl) one to use.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Cluster;
use super::meta::{
    ADMIN_PORT, ADMIN_PORT_NAME, GRPC_PORT, GRPC_PORT_NAME, REDIS_PORT_NAME, SERVICE_ROLE_LABEL,
    headless_service_name, owned_meta, selector_labels,
};

/// The value of [`SERVICE_ROLE_LABEL`] on the headless Service.
pub const HEADLESS_ROLE: &str = "headless";
/// The value of [`SERVICE_ROLE_LABEL`] on the ClusterIP Service.
pub const CLIENT_ROLE: &str = "client";

/// `<name>-headless`: no cluster IP, and only ready nodes published, so a node
/// that is starting or draining is neither a member nor a DNS answer.
pub fn headless(cluster: &Cluster<'_>) -> Service {
    let mut meta = owned_meta(cluster, headless_service_name(&cluster.name));
    meta.labels
        .get_or_insert_default()
        .insert(SERVICE_ROLE_LABEL.to_owned(), HEADLESS_ROLE.to_owned());
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(false),
            selector: Some(selector_labels(&cluster.name)),
            ports: Some([vec![grpc_port(), admin_port()], redis_port(cluster)].concat()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// `<name>`: one virtual IP in front of every ready node.
pub fn client(cluster: &Cluster<'_>) -> Service {
    let mut meta = owned_meta(cluster, cluster.name.clone());
    meta.labels
        .get_or_insert_default()
        .insert(SERVICE_ROLE_LABEL.to_owned(), CLIENT_ROLE.to_owned());
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(selector_labels(&cluster.name)),
            ports: Some([vec![grpc_port()], redis_port(cluster)].concat()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn grpc_port() -> ServicePort {
    ServicePort {
        name: Some(GRPC_PORT_NAME.to_owned()),
        port: GRPC_PORT,
        target_port: Some(IntOrString::String(GRPC_PORT_NAME.to_owned())),
        protocol: Some("TCP".to_owned()),
        // gRPC over cleartext HTTP/2, so service meshes and gateways treat it as such.
        app_protocol: Some("kubernetes.io/h2c".to_owned()),
        ..ServicePort::default()
    }
}

/// The Redis-protocol port, when `spec.redis` enables it.
fn redis_port(cluster: &Cluster<'_>) -> Vec<ServicePort> {
    let redis = &cluster.resource.spec.redis;
    if !redis.enabled {
        return Vec::new();
    }
    vec![ServicePort {
        name: Some(REDIS_PORT_NAME.to_owned()),
        port: redis.port,
        target_port: Some(IntOrString::String(REDIS_PORT_NAME.to_owned())),
        protocol: Some("TCP".to_owned()),
        app_protocol: Some("redis".to_owned()),
        ..ServicePort::default()
    }]
}

fn admin_port() -> ServicePort {
    ServicePort {
        name: Some(ADMIN_PORT_NAME.to_owned()),
        port: ADMIN_PORT,
        target_port: Some(IntOrString::String(ADMIN_PORT_NAME.to_owned())),
        protocol: Some("TCP".to_owned()),
        app_protocol: Some("http".to_owned()),
        ..ServicePort::default()
    }
}

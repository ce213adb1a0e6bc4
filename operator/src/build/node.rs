//! The kcache-node container: its flags (the node's interface, see DESIGN.md), the
//! downward-API environment, probes, ports and a restricted security context.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, GRPCAction, ObjectFieldSelector,
    Probe, SeccompProfile, SecurityContext,
};
use kcache_crd::units;

use super::Cluster;
use super::meta::{ADMIN_PORT, ADMIN_PORT_NAME, GRPC_PORT, GRPC_PORT_NAME, headless_service_name};

/// The container's name; `kubectl logs pod -c node`.
pub const CONTAINER_NAME: &str = "node";
/// The gRPC service whose health the readiness probe checks. The node marks it
/// NOT_SERVING when it starts draining, so a stopping node leaves the EndpointSlices
/// (and thus every peer's membership and every client's DNS answer) first.
pub const READINESS_SERVICE: &str = "kcache.v1.Cache";
/// An unprivileged uid and gid (the distroless `nonroot` user), for the restricted
/// Pod Security Standard.
pub const RUN_AS: i64 = 65532;

/// The kcache-node container of a cluster.
pub fn container(cluster: &Cluster<'_>) -> Container {
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(cluster.image().to_owned()),
        image_pull_policy: cluster
            .resource
            .spec
            .image_pull_policy
            .map(|p| p.as_str().to_owned()),
        command: Some(vec!["kcache-node".to_owned()]),
        args: Some(args(cluster)),
        // POD_NAME and POD_NAMESPACE feed the flags below; POD_IP is the address the
        // node advertises to peers (its default for --advertise-addr).
        env: Some(vec![
            downward_env("POD_NAME", "metadata.name"),
            downward_env("POD_NAMESPACE", "metadata.namespace"),
            downward_env("POD_IP", "status.podIP"),
        ]),
        ports: Some(vec![
            port(GRPC_PORT_NAME, GRPC_PORT),
            port(ADMIN_PORT_NAME, ADMIN_PORT),
        ]),
        readiness_probe: Some(grpc_probe(Some(READINESS_SERVICE), 5, 2)),
        // The empty service name is the server's overall health, which stays SERVING
        // while the node drains: a draining node is not ready but must not be killed.
        liveness_probe: Some(grpc_probe(None, 10, 3)),
        resources: cluster.resource.spec.resources.clone(),
        security_context: Some(restricted_security_context()),
        ..Container::default()
    }
}

/// The node's flags. `$(POD_NAME)` and `$(POD_NAMESPACE)` are expanded by the
/// kubelet from the downward-API environment, so the member id is the pod name
/// (stable across restarts, which keeps each key's placement).
pub fn args(cluster: &Cluster<'_>) -> Vec<String> {
    let spec = &cluster.resource.spec;
    let settings = &cluster.settings;
    let mut args = vec![
        format!("--grpc-addr=0.0.0.0:{GRPC_PORT}"),
        format!("--admin-addr=0.0.0.0:{ADMIN_PORT}"),
        "--node-id=$(POD_NAME)".to_owned(),
        "--discovery=kubernetes".to_owned(),
        format!("--service={}", headless_service_name(&cluster.name)),
        "--namespace=$(POD_NAMESPACE)".to_owned(),
        format!("--replication-factor={}", spec.replication_factor),
        format!("--max-memory={}", units::node_bytes(settings.max_memory)),
        format!(
            "--max-value-size={}",
            units::node_bytes(settings.max_value_size)
        ),
    ];
    if let Some(ttl) = settings.default_ttl {
        args.push(format!("--default-ttl={}", units::node_duration(ttl)));
    }
    args.push(format!(
        "--drain-timeout={}",
        units::node_duration(settings.drain_timeout)
    ));
    args.push("--log-format=json".to_owned());
    args
}

fn downward_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                api_version: Some("v1".to_owned()),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// A probe of the standard gRPC health service (grpc.health.v1) on the gRPC port.
fn grpc_probe(service: Option<&str>, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: GRPC_PORT,
            service: service.map(str::to_owned),
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(1),
        ..Probe::default()
    }
}

/// Everything the restricted Pod Security Standard asks of a container.
fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

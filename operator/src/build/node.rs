//! The kcache-node container: its flags (the node's interface, see DESIGN.md), the
//! downward-API environment, probes, ports and a restricted security context.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, GRPCAction, HTTPGetAction,
    KeyToPath, ObjectFieldSelector, Probe, SeccompProfile, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kcache_crd::units;

use super::meta::{
    ADMIN_PORT, ADMIN_PORT_NAME, GRPC_PORT, GRPC_PORT_NAME, REDIS_PORT_NAME, headless_service_name,
};
use super::{Cluster, peer_token};

/// The container's name; `kubectl logs pod -c node`.
pub const CONTAINER_NAME: &str = "node";
/// The gRPC service whose health the readiness probe checks. The node marks it
/// NOT_SERVING when it starts draining, so a stopping node leaves the EndpointSlices
/// (and thus every peer's membership and every client's DNS answer) first.
pub const READINESS_SERVICE: &str = "kcache.v1.Cache";
/// An unprivileged uid and gid (the distroless `nonroot` user), for the restricted
/// Pod Security Standard.
pub const RUN_AS: i64 = 65532;
/// Where spec.tls's Secret is mounted (tls.crt, tls.key, ca.crt).
pub const TLS_DIR: &str = "/etc/kcache/tls";
/// Where spec.auth's Secret is mounted; its key is the file `token`.
pub const AUTH_DIR: &str = "/etc/kcache/auth";
/// Where the peer token's Secret is mounted (with spec.auth).
pub const PEER_AUTH_DIR: &str = "/etc/kcache/peer-auth";
/// The volumes of those Secrets.
pub const TLS_VOLUME: &str = "tls";
pub const AUTH_VOLUME: &str = "auth";
pub const PEER_AUTH_VOLUME: &str = "peer-auth";
/// Secret files readable by the node's group only (the pod's fsGroup), not by
/// every user in the container.
const SECRET_MODE: i32 = 0o440;

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
        ports: Some(ports(cluster)),
        readiness_probe: Some(readiness_probe(cluster)),
        liveness_probe: Some(liveness_probe(cluster)),
        volume_mounts: mounts(cluster),
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
    if let Some(tls) = &spec.tls {
        args.push(format!("--tls-cert-file={TLS_DIR}/tls.crt"));
        args.push(format!("--tls-key-file={TLS_DIR}/tls.key"));
        // Peers check each other against the CA, under the headless Service's name
        // (the node's default with --discovery kubernetes).
        args.push(format!("--tls-ca-file={TLS_DIR}/ca.crt"));
        if tls.require_client_certificate {
            args.push(format!("--tls-client-ca-file={TLS_DIR}/ca.crt"));
        }
    }
    if cluster.auth.is_some() {
        args.push(format!("{}={AUTH_DIR}/token", peer_token::AUTH_FLAG));
        args.push(format!(
            "{}={PEER_AUTH_DIR}/{}",
            peer_token::FILE_FLAG,
            peer_token::KEY
        ));
        args.extend(cluster.migration.flags().iter().map(|f| (*f).to_owned()));
    }
    let redis = &spec.redis;
    if redis.enabled {
        args.push(format!("--redis-addr=0.0.0.0:{}", redis.port));
        args.push(format!(
            "--redis-cluster-mode={}",
            redis.cluster_mode.as_flag()
        ));
    }
    args.push("--log-format=json".to_owned());
    args
}

/// The Secret volumes of spec.tls and spec.auth. Mounted whole (never with
/// subPath, which the kubelet does not update), so a rotated Secret reaches the
/// running node, which re-reads it; only a different Secret name changes the pod
/// template and rolls the nodes.
pub fn volumes(cluster: &Cluster<'_>) -> Option<Vec<Volume>> {
    let spec = &cluster.resource.spec;
    let secret = |volume: &str, name: &str, items: Option<Vec<KeyToPath>>| Volume {
        name: volume.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.to_owned()),
            items,
            default_mode: Some(SECRET_MODE),
            optional: Some(false),
        }),
        ..Volume::default()
    };
    let mut volumes = Vec::new();
    if let Some(tls) = &spec.tls {
        volumes.push(secret(TLS_VOLUME, &tls.secret_name, None));
    }
    if let Some(auth) = &cluster.auth {
        let item = KeyToPath {
            key: auth.key.clone(),
            path: "token".to_owned(),
            mode: None,
        };
        volumes.push(secret(AUTH_VOLUME, &auth.secret_name, Some(vec![item])));
        let name = peer_token::secret_name(&cluster.name);
        volumes.push(secret(PEER_AUTH_VOLUME, &name, None));
    }
    (!volumes.is_empty()).then_some(volumes)
}

fn mounts(cluster: &Cluster<'_>) -> Option<Vec<VolumeMount>> {
    let spec = &cluster.resource.spec;
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let mut mounts = Vec::new();
    if spec.tls.is_some() {
        mounts.push(mount(TLS_VOLUME, TLS_DIR));
    }
    if cluster.auth.is_some() {
        mounts.push(mount(AUTH_VOLUME, AUTH_DIR));
        mounts.push(mount(PEER_AUTH_VOLUME, PEER_AUTH_DIR));
    }
    (!mounts.is_empty()).then_some(mounts)
}

/// Ready: the Cache service is SERVING over gRPC health; with TLS, where the
/// kubelet's gRPC probe cannot connect, the same answer from /readyz on the
/// plaintext admin port. The node marks both not ready when it starts draining, so
/// a stopping node leaves the EndpointSlices (and thus every peer's membership and
/// every client's DNS answer) first.
fn readiness_probe(cluster: &Cluster<'_>) -> Probe {
    if cluster.resource.spec.tls.is_some() {
        http_probe("/readyz", 5, 2)
    } else {
        grpc_probe(Some(READINESS_SERVICE), 5, 2)
    }
}

/// Alive: the server's overall health (the empty gRPC service name), or /healthz
/// with TLS. Both stay good while the node drains: a draining node is not ready but
/// must not be killed.
fn liveness_probe(cluster: &Cluster<'_>) -> Probe {
    if cluster.resource.spec.tls.is_some() {
        http_probe("/healthz", 10, 3)
    } else {
        grpc_probe(None, 10, 3)
    }
}

/// A probe of an admin HTTP endpoint.
fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(ADMIN_PORT),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(1),
        ..Probe::default()
    }
}

/// gRPC and admin, and the Redis port when enabled.
fn ports(cluster: &Cluster<'_>) -> Vec<ContainerPort> {
    let mut ports = vec![
        port(GRPC_PORT_NAME, GRPC_PORT),
        port(ADMIN_PORT_NAME, ADMIN_PORT),
    ];
    let redis = &cluster.resource.spec.redis;
    if redis.enabled {
        ports.push(port(REDIS_PORT_NAME, redis.port));
    }
    ports
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

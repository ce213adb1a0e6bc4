//! The operator and the node agree on the node's interface: the command line the
//! operator renders for each example parses with the node's own flag parser into the
//! settings the CacheCluster asked for.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::time::Duration;

use clap::Parser;
use kcache_node::config::Args;
use kcache_node::server::Discovery;
use kcache_operator::build::BuildOptions;
use kcache_operator::render::render;
use serde_json::Value;

/// The node container's command line from rendered YAML, with the downward-API
/// variables expanded as the kubelet would.
fn node_command_line(rendered: &str) -> Vec<String> {
    let statefulset = rendered
        .split("---\n")
        .map(|doc| serde_yaml::from_str::<Value>(doc).unwrap())
        .find(|doc| doc["kind"] == "StatefulSet")
        .expect("a StatefulSet is rendered");
    let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let namespace = statefulset["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_owned();
    strings(&container["command"])
        .into_iter()
        .chain(strings(&container["args"]))
        .map(|arg| {
            arg.replace("$(POD_NAME)", "sessions-0")
                .replace("$(POD_NAMESPACE)", &namespace)
                .replace("$(POD_IP)", "10.1.2.3")
        })
        .collect()
}

#[test]
fn the_production_example_renders_a_command_line_the_node_accepts() {
    let rendered = render(
        include_str!("../../examples/cachecluster-production.yaml"),
        &BuildOptions::default(),
    )
    .unwrap();
    let args = Args::try_parse_from(node_command_line(&rendered)).unwrap();
    let limits = args.limits().unwrap();
    assert_eq!(limits.max_memory, 3 << 30);
    assert_eq!(limits.max_value_size, 1 << 20);
    assert_eq!(limits.default_ttl, Some(Duration::from_secs(24 * 3600)));
    assert_eq!(args.replication_factor, 2);
    assert_eq!(args.drain_timeout, Duration::from_secs(120));
    assert_eq!(args.node_id(), "sessions-0");
    assert_eq!(args.redis_addr, Some("0.0.0.0:6379".parse().unwrap()));
    assert_eq!(
        args.redis_cluster_mode,
        kcache_node::resp::ClusterMode::Standalone
    );
    match args.discovery().unwrap() {
        Discovery::Kubernetes { service, namespace } => {
            assert_eq!(
                (service.as_str(), namespace.as_str()),
                ("sessions-headless", "cache")
            );
        }
        other => panic!("expected kubernetes discovery, got {other:?}"),
    }
}

#[test]
fn the_minimal_example_renders_a_command_line_the_node_accepts() {
    let rendered = render(
        include_str!("../../examples/cachecluster-minimal.yaml"),
        &BuildOptions::default(),
    )
    .unwrap();
    let args = Args::try_parse_from(node_command_line(&rendered)).unwrap();
    assert!(args.limits().is_ok());
    assert_eq!(
        args.redis_addr, None,
        "the Redis port is off unless asked for"
    );
    assert!(matches!(
        args.discovery().unwrap(),
        Discovery::Kubernetes { .. }
    ));
}

#[test]
fn the_secure_example_hands_the_node_its_secrets_files() {
    let rendered = render(
        include_str!("../../examples/cachecluster-secure.yaml"),
        &BuildOptions::default(),
    )
    .unwrap();
    let args = Args::try_parse_from(node_command_line(&rendered)).unwrap();
    let security = args.security(&args.discovery().unwrap());
    let tls = security.tls.expect("TLS files");
    assert_eq!(tls.cert.to_str(), Some("/etc/kcache/tls/tls.crt"));
    assert_eq!(tls.key.to_str(), Some("/etc/kcache/tls/tls.key"));
    assert_eq!(
        tls.client_ca.as_deref().and_then(|p| p.to_str()),
        Some("/etc/kcache/tls/ca.crt")
    );
    assert_eq!(
        tls.peer_ca.as_deref().and_then(|p| p.to_str()),
        Some("/etc/kcache/tls/ca.crt")
    );
    assert_eq!(
        security.token_file.as_deref().and_then(|p| p.to_str()),
        Some("/etc/kcache/auth/token")
    );
    // The name the example's comment tells cert-manager to put in the certificate
    // (rendered without a namespace, the example lands in "default").
    assert_eq!(
        security.peer_server_name.as_deref(),
        Some("secure-headless.default.svc")
    );
}

#[test]
fn every_redis_cluster_mode_of_the_crd_is_one_the_node_accepts() {
    use kcache_crd::RedisClusterMode;
    use kcache_node::resp::ClusterMode;
    for (mode, expected) in [
        (RedisClusterMode::Standalone, ClusterMode::Standalone),
        (RedisClusterMode::Emulated, ClusterMode::Emulated),
        (RedisClusterMode::Cluster, ClusterMode::Cluster),
    ] {
        let flag = format!("--redis-cluster-mode={}", mode.as_flag());
        let args = Args::try_parse_from(["kcache-node", flag.as_str()]).unwrap();
        assert_eq!(args.redis_cluster_mode, expected, "{mode:?}");
    }
}

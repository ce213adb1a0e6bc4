//! What the built objects must hold, object by object.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kcache_crd::CacheCluster;
use serde_json::json;

use super::meta::{INSTANCE_LABEL, NAME_LABEL};
use super::{BuildOptions, Cluster, DEFAULT_IMAGE, Desired};
use crate::fixtures::cluster;

fn desired(cc: &CacheCluster) -> Desired {
    let options = BuildOptions::default();
    Desired::build(&Cluster::new(cc, &options).unwrap())
}

fn built(spec: serde_json::Value) -> Desired {
    desired(&cluster(spec))
}

fn pod(sts: &StatefulSet) -> &PodSpec {
    sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn node(sts: &StatefulSet) -> &Container {
    &pod(sts).containers[0]
}

fn args(spec: serde_json::Value) -> Vec<String> {
    node(&built(spec).stateful_set).args.clone().unwrap()
}

#[test]
fn the_node_runs_with_the_flags_of_the_node_interface() {
    let args = args(json!({
        "replicas": 5, "replicationFactor": 2, "maxMemory": "512Mi",
        "maxValueSize": "2Mi", "defaultTTL": "10m", "drainTimeout": "1m",
    }));
    for flag in [
        "--grpc-addr=0.0.0.0:7000",
        "--admin-addr=0.0.0.0:7001",
        "--node-id=$(POD_NAME)",
        "--discovery=kubernetes",
        "--service=demo-headless",
        "--namespace=$(POD_NAMESPACE)",
        "--replication-factor=2",
        "--max-memory=512MiB",
        "--max-value-size=2MiB",
        "--default-ttl=600s",
        "--drain-timeout=60s",
    ] {
        assert!(
            args.iter().any(|a| a == flag),
            "{flag} missing from {args:?}"
        );
    }
}

#[test]
fn without_a_default_ttl_the_node_is_given_none() {
    assert!(
        !args(json!({}))
            .iter()
            .any(|a| a.starts_with("--default-ttl"))
    );
}

#[test]
fn a_derived_memory_limit_reaches_the_node_flag() {
    let args = args(json!({"resources": {"limits": {"memory": "2Gi"}}}));
    assert!(
        args.contains(&"--max-memory=1536MiB".to_owned()),
        "{args:?}"
    );
}

#[test]
fn pod_name_namespace_and_ip_come_from_the_downward_api() {
    let sts = built(json!({})).stateful_set;
    let env = node(&sts).env.clone().unwrap();
    let field = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.clone())
            .and_then(|v| v.field_ref)
            .map(|f| f.field_path)
    };
    assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(
        field("POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    assert_eq!(field("POD_IP").as_deref(), Some("status.podIP"));
}

#[test]
fn readiness_probes_the_cache_service_and_liveness_the_whole_server_over_grpc() {
    let sts = built(json!({})).stateful_set;
    let readiness = node(&sts).readiness_probe.clone().unwrap().grpc.unwrap();
    let liveness = node(&sts).liveness_probe.clone().unwrap().grpc.unwrap();
    assert_eq!(
        (readiness.port, readiness.service.as_deref()),
        (7000, Some("kcache.v1.Cache"))
    );
    assert_eq!((liveness.port, liveness.service), (7000, None));
}

#[test]
fn pods_meet_the_restricted_pod_security_standard() {
    let sts = built(json!({})).stateful_set;
    let container = node(&sts).security_context.clone().unwrap();
    assert_eq!(container.allow_privilege_escalation, Some(false));
    assert_eq!(container.read_only_root_filesystem, Some(true));
    assert_eq!(container.run_as_non_root, Some(true));
    assert_eq!(container.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert_eq!(container.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let pod = pod(&sts).security_context.clone().unwrap();
    assert_eq!(pod.run_as_non_root, Some(true));
    assert_eq!(pod.seccomp_profile.unwrap().type_, "RuntimeDefault");
}

#[test]
fn the_grace_period_covers_the_drain_timeout_plus_a_margin() {
    let sts = built(json!({"drainTimeout": "2m"})).stateful_set;
    assert_eq!(pod(&sts).termination_grace_period_seconds, Some(130));
}

#[test]
fn the_statefulset_rolls_updates_in_parallel_pods_behind_the_headless_service() {
    let sts = built(json!({"replicas": 4})).stateful_set;
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(4));
    assert_eq!(spec.service_name.as_deref(), Some("demo-headless"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.update_strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
}

#[test]
fn without_an_affinity_nodes_prefer_different_machines() {
    let sts = built(json!({})).stateful_set;
    let anti = pod(&sts)
        .affinity
        .clone()
        .unwrap()
        .pod_anti_affinity
        .unwrap();
    let term = &anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap()[0];
    assert_eq!(
        term.pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    let selector = term
        .pod_affinity_term
        .label_selector
        .clone()
        .unwrap()
        .match_labels
        .unwrap();
    assert_eq!(selector[INSTANCE_LABEL], "demo");
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none()
    );
}

#[test]
fn a_given_affinity_and_scheduling_fields_pass_through() {
    let sts = built(json!({
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["cache"]}]}]}}},
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "cache", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
        "imagePullSecrets": [{"name": "registry"}],
    }))
    .stateful_set;
    let pod = pod(&sts);
    let affinity = pod.affinity.clone().unwrap();
    assert!(affinity.node_affinity.is_some() && affinity.pod_anti_affinity.is_none());
    assert_eq!(pod.node_selector.clone().unwrap()["disk"], "ssd");
    assert_eq!(
        pod.tolerations.clone().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert_eq!(
        pod.topology_spread_constraints.clone().unwrap()[0].topology_key,
        "zone"
    );
    assert_eq!(pod.image_pull_secrets.clone().unwrap()[0].name, "registry");
}

#[test]
fn user_pod_labels_cannot_take_the_pods_out_of_their_statefulset() {
    let sts = built(json!({
        "podLabels": {"team": "web", "app.kubernetes.io/instance": "other"},
        "podAnnotations": {"prometheus.io/scrape": "false"},
    }))
    .stateful_set;
    let meta = sts.spec.unwrap().template.metadata.unwrap();
    let labels = meta.labels.unwrap();
    assert_eq!(labels["team"], "web");
    assert_eq!(labels[INSTANCE_LABEL], "demo");
    assert_eq!(labels[NAME_LABEL], "kcache");
    assert_eq!(meta.annotations.unwrap()["prometheus.io/scrape"], "false");
}

#[test]
fn the_image_defaults_to_the_release_of_the_operator() {
    assert_eq!(
        node(&built(json!({})).stateful_set).image.as_deref(),
        Some(DEFAULT_IMAGE)
    );
    let sts =
        built(json!({"image": "registry.local/kcache-node:dev", "imagePullPolicy": "Always"}))
            .stateful_set;
    assert_eq!(
        node(&sts).image.as_deref(),
        Some("registry.local/kcache-node:dev")
    );
    assert_eq!(node(&sts).image_pull_policy.as_deref(), Some("Always"));
}

#[test]
fn the_headless_service_publishes_only_ready_nodes() {
    let svc = built(json!({})).headless_service;
    assert_eq!(svc.metadata.name.as_deref(), Some("demo-headless"));
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(false));
    let ports: Vec<i32> = spec.ports.unwrap().iter().map(|p| p.port).collect();
    assert_eq!(ports, [7000, 7001]);
}

#[test]
fn the_client_service_has_a_cluster_ip_on_the_grpc_port() {
    let spec = built(json!({})).client_service.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.ports.unwrap()[0].port, 7000);
    assert_eq!(spec.selector.unwrap()[INSTANCE_LABEL], "demo");
}

#[test]
fn nodes_may_list_and_watch_endpointslices_and_nothing_else() {
    let d = built(json!({}));
    let rules = d.role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&["discovery.k8s.io".to_owned()][..])
    );
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["endpointslices".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["list", "watch"]);
    let subject = &d.role_binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", "demo")
    );
    assert_eq!(
        pod(&d.stateful_set).service_account_name.as_deref(),
        Some("demo")
    );
}

#[test]
fn every_object_is_controlled_by_its_cachecluster() {
    let d = built(json!({
        "networkPolicy": {"enabled": true},
        "monitoring": {"serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}},
    }));
    let objects = d.to_json();
    assert_eq!(objects.len(), 10);
    for object in objects {
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "CacheCluster", "{}", object["kind"]);
        assert_eq!(owner["name"], "demo");
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["uid"], "9b0c5a4e-0000-4000-8000-000000000001");
        assert_eq!(object["metadata"]["namespace"], "apps");
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "kcache-operator"
        );
    }
}

#[test]
fn optional_objects_are_built_only_when_enabled() {
    let d = built(json!({"podDisruptionBudget": {"enabled": false}}));
    assert!(d.pod_disruption_budget.is_none());
    assert!(d.network_policy.is_none());
    assert!(d.service_monitor.is_none());
    assert!(d.prometheus_rule.is_none());
}

#[test]
fn the_disruption_budget_allows_one_node_down_unless_told_otherwise() {
    let spec = built(json!({}))
        .pod_disruption_budget
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(
        spec.unhealthy_pod_eviction_policy.as_deref(),
        Some("AlwaysAllow")
    );
    let spec = built(json!({"podDisruptionBudget": {"minAvailable": "60%"}}))
        .pod_disruption_budget
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.min_available, Some(IntOrString::String("60%".into())));
    assert_eq!(spec.max_unavailable, None);
}

#[test]
fn the_network_policy_admits_peers_listed_clients_and_scrapers() {
    let policy = built(json!({"networkPolicy": {
        "enabled": true,
        "allowedClients": [{"namespaceSelector": {"matchLabels": {"team": "web"}}}],
    }}))
    .network_policy
    .unwrap();
    let rules = policy.spec.unwrap().ingress.unwrap();
    let port = |i: usize| rules[i].ports.clone().unwrap()[0].port.clone();
    assert_eq!(port(0), Some(IntOrString::Int(7000)));
    let peers = rules[0].from.clone().unwrap();
    assert_eq!(
        peers[0].pod_selector.clone().unwrap().match_labels.unwrap()[INSTANCE_LABEL],
        "demo"
    );
    let clients = rules[1].from.clone().unwrap();
    assert!(clients[0].namespace_selector.is_some());
    assert_eq!(port(2), Some(IntOrString::Int(7001)));
    assert!(
        rules[2].from.is_none(),
        "metrics open to any scraper when none are listed"
    );
}

#[test]
fn the_service_monitor_scrapes_each_node_once_through_the_headless_service() {
    let monitor = built(json!({"monitoring": {"serviceMonitor": {
        "enabled": true, "interval": "15s", "labels": {"release": "prometheus"}}}}))
    .service_monitor
    .unwrap();
    assert_eq!(monitor.types.as_ref().unwrap().kind, "ServiceMonitor");
    assert_eq!(
        monitor.metadata.labels.as_ref().unwrap()["release"],
        "prometheus"
    );
    let spec = &monitor.data["spec"];
    assert_eq!(
        spec["selector"]["matchLabels"]["kcache.io/service"],
        "headless"
    );
    assert_eq!(spec["endpoints"][0]["port"], "admin");
    assert_eq!(spec["endpoints"][0]["interval"], "15s");
}

#[test]
fn alert_rules_only_look_at_this_clusters_series() {
    let rule = built(json!({"monitoring": {"prometheusRule": {"enabled": true}}}))
        .prometheus_rule
        .unwrap();
    let rules = rule.data["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .clone();
    // Every alert of the chart's shared file (ten today), none dropped on the way.
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    let in_file: Vec<&str> = super::monitoring::NODE_ALERTS
        .lines()
        .filter_map(|line| line.strip_prefix("- alert: "))
        .map(str::trim)
        .collect();
    assert_eq!(names, in_file);
    assert_eq!(names.len(), 10);
    for r in rules {
        let expr = r["expr"].as_str().unwrap();
        assert!(
            expr.contains(r#"namespace="apps", service="demo-headless""#),
            "{expr}"
        );
    }
}

#[test]
fn objects_come_out_in_apply_order_with_permissions_before_pods() {
    let kinds: Vec<String> = built(json!({}))
        .to_json()
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Service",
            "Service",
            "StatefulSet",
            "PodDisruptionBudget"
        ]
    );
}

#[test]
fn a_spec_that_cannot_work_builds_nothing_and_names_the_field() {
    let cc = cluster(json!({"replicas": 1, "replicationFactor": 3}));
    let options = BuildOptions::default();
    let problems = Cluster::new(&cc, &options).unwrap_err();
    assert_eq!(problems[0].field, "spec.replicationFactor");
}

#[test]
fn tls_mounts_the_secret_passes_its_files_and_probes_over_http() {
    let sts = built(json!({"tls": {"secretName": "demo-tls", "requireClientCertificate": true}}))
        .stateful_set;
    let args = node(&sts).args.clone().unwrap();
    for flag in [
        "--tls-cert-file=/etc/kcache/tls/tls.crt",
        "--tls-key-file=/etc/kcache/tls/tls.key",
        "--tls-ca-file=/etc/kcache/tls/ca.crt",
        "--tls-client-ca-file=/etc/kcache/tls/ca.crt",
    ] {
        assert!(
            args.iter().any(|a| a == flag),
            "{flag} missing from {args:?}"
        );
    }
    let volumes = pod(&sts).volumes.clone().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].name, "tls");
    let secret = volumes[0].secret.clone().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("demo-tls"));
    assert_eq!(
        secret.items, None,
        "every key of the Secret, ca.crt included"
    );
    assert_eq!(secret.default_mode, Some(0o440));
    let mounts = node(&sts).volume_mounts.clone().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
        ("tls", "/etc/kcache/tls")
    );
    assert_eq!(mounts[0].read_only, Some(true));
    // A subPath mount would never see a renewed certificate.
    assert_eq!(mounts[0].sub_path, None);
    // The kubelet's gRPC probes cannot speak TLS: probe the plaintext admin port.
    let readiness = node(&sts).readiness_probe.clone().unwrap();
    let liveness = node(&sts).liveness_probe.clone().unwrap();
    assert!(readiness.grpc.is_none() && liveness.grpc.is_none());
    let readiness = readiness.http_get.unwrap();
    let liveness = liveness.http_get.unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    assert_eq!(liveness.path.as_deref(), Some("/healthz"));
    for probe in [readiness, liveness] {
        assert_eq!(probe.port, IntOrString::Int(7001));
    }
}

#[test]
fn tls_without_client_certificates_demands_none() {
    let args = args(json!({"tls": {"secretName": "demo-tls"}}));
    assert!(
        args.iter()
            .any(|a| a == "--tls-ca-file=/etc/kcache/tls/ca.crt")
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--tls-client-ca-file")),
        "{args:?}"
    );
}

#[test]
fn auth_mounts_the_secret_key_as_the_token_file_and_keeps_grpc_probes() {
    let sts =
        built(json!({"auth": {"secretName": "demo-tokens", "key": "api-tokens"}})).stateful_set;
    let args = node(&sts).args.clone().unwrap();
    assert!(
        args.iter()
            .any(|a| a == "--auth-token-file=/etc/kcache/auth/token")
    );
    assert!(!args.iter().any(|a| a.starts_with("--tls-")), "{args:?}");
    let volumes = pod(&sts).volumes.clone().unwrap();
    let secret = volumes[0].secret.clone().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("demo-tokens"));
    let items = secret.items.unwrap();
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("api-tokens", "token")
    );
    let mounts = node(&sts).volume_mounts.clone().unwrap();
    assert_eq!(mounts[0].mount_path, "/etc/kcache/auth");
    assert_eq!(mounts[0].sub_path, None);
    // Health stays open to tokenless gRPC probes.
    assert!(node(&sts).readiness_probe.clone().unwrap().grpc.is_some());

    // And the peer token the operator generates, which the nodes alone hold; a new
    // cluster never admits peers without it.
    assert!(
        args.iter()
            .any(|a| a == "--peer-token-file=/etc/kcache/peer-auth/token"),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a == "--peer-accepts-app-tokens"));
    let peer = volumes[1].secret.clone().unwrap();
    assert_eq!(peer.secret_name.as_deref(), Some("demo-peer-token"));
    assert_eq!(peer.items, None);
    assert_eq!(volumes[1].name, mounts[1].name);
    assert_eq!(mounts[1].mount_path, "/etc/kcache/peer-auth");
}

#[test]
fn while_peer_tokens_roll_out_the_nodes_admit_peers_without_one() {
    let cc = cluster(json!({"auth": {"secretName": "demo-tokens"}}));
    let options = BuildOptions::default();
    let mut resolved = Cluster::new(&cc, &options).unwrap();
    resolved.migration = super::peer_token::Migration::AppTokens;
    let sts = Desired::build(&resolved).stateful_set;
    let args = node(&sts).args.clone().unwrap();
    assert!(
        args.iter().any(|a| a == "--peer-accepts-app-tokens"),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a == "--auth-accepts-anonymous"));
}

#[test]
fn while_auth_itself_rolls_out_the_nodes_admit_callers_without_a_token() {
    let cc = cluster(json!({"auth": {"secretName": "demo-tokens"}}));
    let options = BuildOptions::default();
    let mut resolved = Cluster::new(&cc, &options).unwrap();
    resolved.migration = super::peer_token::Migration::Anonymous;
    let sts = Desired::build(&resolved).stateful_set;
    let args = node(&sts).args.clone().unwrap();
    for flag in ["--peer-accepts-app-tokens", "--auth-accepts-anonymous"] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    // Without spec.auth there is nothing to migrate to.
    let open = cluster(json!({}));
    let mut resolved = Cluster::new(&open, &options).unwrap();
    resolved.migration = super::peer_token::Migration::Anonymous;
    let args = node(&Desired::build(&resolved).stateful_set)
        .args
        .clone()
        .unwrap();
    assert!(!args.iter().any(|a| a.starts_with("--auth")), "{args:?}");
}

#[test]
fn the_peer_token_secret_holds_the_token_and_is_owned_by_the_cluster() {
    let cc = cluster(json!({"auth": {"secretName": "demo-tokens"}}));
    let options = BuildOptions::default();
    let resolved = Cluster::new(&cc, &options).unwrap();
    let secret = super::peer_token::secret(&resolved, "abc123");
    assert_eq!(secret.metadata.name.as_deref(), Some("demo-peer-token"));
    assert_eq!(
        secret.data.unwrap()["token"].0,
        b"abc123\n",
        "the node reads a token a line"
    );
    let owner = &secret.metadata.owner_references.unwrap()[0];
    assert_eq!(owner.kind, "CacheCluster");
    assert_eq!(owner.controller, Some(true));
}

#[test]
fn only_a_new_secret_name_changes_the_pod_template() {
    let template = |tls: &str, auth: &str| {
        let sts = built(json!({
            "tls": {"secretName": tls},
            "auth": {"secretName": auth},
        }))
        .stateful_set;
        serde_json::to_value(sts.spec.unwrap().template).unwrap()
    };
    // Renewed contents under the same names: the same template, so no roll (the
    // nodes re-read the files).
    assert_eq!(template("tls-a", "auth-a"), template("tls-a", "auth-a"));
    // Another Secret: a new template, which the StatefulSet rolls out.
    assert_ne!(template("tls-a", "auth-a"), template("tls-b", "auth-a"));
    assert_ne!(template("tls-a", "auth-a"), template("tls-a", "auth-b"));
}

#[test]
fn without_tls_or_auth_the_pods_mount_no_secrets() {
    let sts = built(json!({})).stateful_set;
    assert_eq!(pod(&sts).volumes, None);
    assert_eq!(node(&sts).volume_mounts, None);
}

#[test]
fn an_enabled_redis_port_reaches_the_flag_the_container_the_services_and_the_policy() {
    assert!(
        !args(json!({}))
            .iter()
            .any(|a| a.starts_with("--redis-addr"))
    );
    let spec = json!({
        "redis": {"enabled": true, "port": 6380, "clusterMode": "Emulated"},
        "networkPolicy": {"enabled": true},
    });
    let flags = args(spec.clone());
    assert!(flags.contains(&"--redis-addr=0.0.0.0:6380".to_owned()));
    assert!(flags.contains(&"--redis-cluster-mode=emulated".to_owned()));
    let cluster = args(json!({"redis": {"enabled": true, "clusterMode": "Cluster"}}));
    assert!(cluster.contains(&"--redis-cluster-mode=cluster".to_owned()));
    let d = built(spec);
    let container_ports: Vec<(String, i32)> = node(&d.stateful_set)
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.container_port))
        .collect();
    assert!(container_ports.contains(&("redis".to_owned(), 6380)));
    for svc in [&d.headless_service, &d.client_service] {
        let ports = svc.spec.clone().unwrap().ports.unwrap();
        let redis = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("redis"))
            .unwrap();
        assert_eq!(redis.port, 6380);
        assert_eq!(redis.target_port, Some(IntOrString::String("redis".into())));
    }
    let rules = d.network_policy.unwrap().spec.unwrap().ingress.unwrap();
    let redis_rule = rules
        .iter()
        .find(|r| r.ports.clone().unwrap()[0].port == Some(IntOrString::Int(6380)))
        .expect("a rule for the redis port");
    assert!(redis_rule.from.is_some(), "only the allowed clients");
}

//! The parts of the spec that switch optional behaviour or objects on and off:
//! eviction, image pulls, the PodDisruptionBudget, monitoring, TLS, auth, the
//! NetworkPolicy and the Redis-protocol port.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{DURATION_PATTERN, MAX_SHORT_STRING};

/// What a node drops when it is full. LFU: the least frequently used of a sample of
/// entries.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// Evict the least frequently used of a sample of entries, with frequencies from
    /// a TinyLFU-style sketch that also remembers recently evicted keys: a better hit
    /// ratio than LRU on skewed traffic. The policy kcache-node implements.
    #[default]
    #[serde(rename = "LFU")]
    Lfu,
}

/// When the kubelet pulls the image: Always, IfNotPresent or Never. Unset means
/// Kubernetes' default (Always for a :latest tag, IfNotPresent otherwise).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the node lacks the image.
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The value Kubernetes' pod spec takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// The cluster's PodDisruptionBudget. Set at most one of minAvailable and
/// maxUnavailable; with neither, maxUnavailable is 1, so a node drain stops one cache
/// node at a time and each hands its keys over before the next goes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))")
    .message("set at most one of minAvailable and maxUnavailable")
    .reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Create the PodDisruptionBudget.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Cache nodes that may be down through voluntary disruptions at once, a number
    /// or a percentage of replicas. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Cache nodes that must stay up through voluntary disruptions, a number or a
    /// percentage of replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: None,
            min_available: None,
        }
    }
}

fn enabled() -> bool {
    true
}

/// Prometheus Operator objects. Each is created only when enabled and when its CRD
/// (monitoring.coreos.com/v1) is installed; otherwise the operator reports a warning
/// event and carries on.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// A ServiceMonitor that scrapes every node's /metrics on the admin port (7001).
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
    /// A PrometheusRule with the kcache alerts (node down, error rate, latency).
    #[serde(default)]
    pub prometheus_rule: PrometheusRuleSpec,
}

/// The ServiceMonitor of the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create the ServiceMonitor.
    #[serde(default)]
    pub enabled: bool,
    /// How often Prometheus scrapes each node, as a duration (e.g. 30s).
    #[serde(default = "default_scrape_interval")]
    #[schemars(pattern(DURATION_PATTERN), length(max = MAX_SHORT_STRING))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')")
        .message("interval must be at least 1s"))]
    pub interval: String,
    /// Labels on the ServiceMonitor, for the Prometheus that selects monitors by label
    /// (e.g. release: prometheus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

impl Default for ServiceMonitorSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: default_scrape_interval(),
            labels: None,
        }
    }
}

fn default_scrape_interval() -> String {
    "30s".to_owned()
}

/// The PrometheusRule of the cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRuleSpec {
    /// Create the PrometheusRule.
    #[serde(default)]
    pub enabled: bool,
    /// Labels on the PrometheusRule, for the Prometheus that selects rules by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// TLS for client and peer traffic on the gRPC port. The Secret is mounted into every
/// node and re-read when it changes, so renewing the certificate (cert-manager does
/// so before it expires) needs no restart; pointing secretName at another Secret rolls
/// the nodes. The certificate must be valid for the names clients dial (for example
/// `<name>.<namespace>.svc` and `<name>-headless.<namespace>.svc.cluster.local`) and
/// for `<name>-headless.<namespace>.svc`, the name nodes check each other against.
/// The admin port (metrics, probes) stays plaintext; the kubelet then probes
/// readiness and liveness over HTTP on it, since gRPC probes cannot speak TLS.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret of type kubernetes.io/tls in the cluster's namespace, in
    /// cert-manager's layout: tls.crt (the nodes' certificate chain), tls.key and
    /// ca.crt (the CA nodes check each other's certificates against; required).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Mutual TLS: clients and nodes must present a certificate signed by the
    /// Secret's ca.crt, or the connection is refused during the handshake.
    #[serde(default)]
    pub require_client_certificate: bool,
}

/// Token authentication: every call to the cache (and between nodes) must carry
/// `authorization: Bearer <token>` with a token from the Secret, or it is answered
/// UNAUTHENTICATED. gRPC health and reflection stay open. The Secret is re-read when
/// it changes: to rotate, put the new token on a second line (both are accepted),
/// then on the first (nodes send the first to each other), then remove the old one.
/// The nodes' internal Peer service wants a token only the nodes hold instead: the
/// operator generates it once in the Secret `<name>-peer-token`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// A Secret in the cluster's namespace holding the accepted tokens.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// The key in the Secret that holds the tokens, one a line.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253), pattern("^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_token_key() -> String {
    "token".to_owned()
}

/// The cluster's NetworkPolicy. When enabled, the cache port (7000) admits the
/// cluster's own nodes and the listed clients only, and the admin port (7001, metrics)
/// admits the listed scrapers only.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy.
    #[serde(default)]
    pub enabled: bool,
    /// Who may reach the cache port 7000 besides the nodes themselves. Empty: every
    /// pod in the cluster's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_clients: Option<Vec<NetworkPolicyPeer>>,
    /// Who may reach the admin port 7001 (/metrics). Empty: any source, so a
    /// Prometheus in another namespace can scrape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_scrapers: Option<Vec<NetworkPolicyPeer>>,
}

/// The Redis-protocol port (RESP2 and RESP3) of every node, beside gRPC: any Redis
/// client reads and writes the whole cluster through any node, which forwards each key
/// to its owner. Off unless enabled: a second protocol is a second surface to secure.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Serve the Redis protocol; the port is then named `redis` in the Services and
    /// admitted by the NetworkPolicy like the gRPC port.
    #[serde(default)]
    pub enabled: bool,
    /// The Redis port on the pods and the Services.
    #[serde(default = "default_redis_port")]
    #[schemars(range(min = 1, max = 65535))]
    #[x_kube(validation = Rule::new("self != 7000 && self != 7001")
        .message("redis.port must differ from the gRPC (7000) and admin (7001) ports"))]
    pub port: i32,
    /// How the port presents the cluster: Standalone, a plain Redis server (CLUSTER
    /// commands are refused); Emulated, also a one-shard Redis Cluster of the node a client
    /// reached, so Redis Cluster clients connect as well (either way any node serves
    /// any key, forwarding it to its owner); Cluster, a real Redis Cluster: CLUSTER SLOTS
    /// reports each slot's owners at their pod IPs and this port, and a node answers
    /// MOVED for a key it is not the primary of, so cluster clients go straight to
    /// owners (plain clients then get MOVED too).
    #[serde(default)]
    pub cluster_mode: RedisClusterMode,
}

/// How the Redis port presents the cluster (the node's `--redis-cluster-mode`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedisClusterMode {
    /// A plain Redis server.
    #[default]
    Standalone,
    /// A plain Redis server that also answers CLUSTER as a one-shard cluster.
    Emulated,
    /// A Redis Cluster: the real slot table, and MOVED to a slot's primary.
    Cluster,
}

impl RedisClusterMode {
    /// The value of the node's `--redis-cluster-mode`.
    pub fn as_flag(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Emulated => "emulated",
            Self::Cluster => "cluster",
        }
    }
}

fn default_redis_port() -> i32 {
    6379
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            port: default_redis_port(),
            cluster_mode: RedisClusterMode::Standalone,
        }
    }
}

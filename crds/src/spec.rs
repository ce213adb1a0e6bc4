//! The desired state of a CacheCluster. Every doc comment on a field here becomes the
//! schema description `kubectl explain cachecluster.spec` prints, so they are written
//! for the person filling the spec in.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::options::{
    AuthSpec, EvictionPolicy, ImagePullPolicy, MonitoringSpec, NetworkPolicySpec,
    PodDisruptionBudgetSpec, RedisSpec, TlsSpec,
};
use crate::schema::{DURATION_PATTERN, MAX_SHORT_STRING, QUANTITY_PATTERN};
use crate::status::CacheClusterStatus;

/// Most nodes a cluster may have. Keys are placed by Redis's 16,384 hash slots, so at
/// 256 members each holds about 64 slots and balance gets coarse, and every membership
/// change rebuilds the slot table in time proportional to the members; shard into
/// several clusters instead.
pub const MAX_REPLICAS: i32 = 256;
/// Most copies of a key. Every write goes to each owner; beyond five copies the
/// extra write traffic and memory buy no availability a cache needs.
pub const MAX_REPLICATION_FACTOR: i32 = 5;

/// Desired state of a kcache cluster: how many nodes, how much memory each, how many
/// copies of each key, and how the pods are scheduled, disrupted and monitored. The
/// nodes find each other through the headless Service `<name>-headless` and spread
/// keys over themselves by hash slot (rendezvous hashing of slots, with bounded loads).
// The printer columns repeat `type_ = "integer"`, which the lint mistakes for a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kcache.io",
    version = "v1alpha1",
    kind = "CacheCluster",
    plural = "cacheclusters",
    namespaced,
    shortname = "kc",
    category = "kcache",
    status = "CacheClusterStatus",
    derive = "PartialEq",
    doc = "A kcache cluster: a StatefulSet of gRPC cache nodes reconciled by the kcache operator. Clients connect to <name>-headless.<namespace>.svc.cluster.local:7000.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired cache nodes"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Cache nodes that pass their readiness probe"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Scaling, Updating or Degraded"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.replicationFactor <= self.replicas")
    .message("replicationFactor must not exceed replicas: a key cannot have more owners than there are nodes")
    .field_path(".replicationFactor")
    .reason(Reason::FieldValueInvalid))]
#[x_kube(validation = Rule::new("!has(self.maxMemory) || quantity(self.maxValueSize).compareTo(quantity(self.maxMemory)) <= 0")
    .message("maxValueSize must not exceed maxMemory: such a value could never be stored")
    .field_path(".maxValueSize")
    .reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct CacheClusterSpec {
    /// Number of cache nodes (pods). Keys are spread over all of them; scaling hands
    /// keys over to their new owners, so it loses none. `kubectl scale` and a
    /// HorizontalPodAutoscaler change this field through the scale subresource.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub replicas: i32,

    /// Container image of kcache-node. Defaults to the kcache-node image released with
    /// the operator, so upgrading the operator upgrades the nodes (a rolling update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// When the kubelet pulls the image: Always, IfNotPresent or Never. Unset means
    /// Kubernetes' default (Always for a :latest tag, IfNotPresent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Secrets with credentials for a private registry, passed to the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// Copies of each key, each on a different node (1 = no replication). A write is
    /// sent to every copy; reads fall back to the next copy when a node is down, so up
    /// to replicationFactor-1 nodes can fail without losing keys. At most replicas.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = MAX_REPLICATION_FACTOR))]
    pub replication_factor: i32,

    /// Memory each node may use for keys, values and per-entry overhead, as a
    /// Kubernetes quantity (e.g. 256Mi, 2Gi); beyond it the node evicts. Must be below
    /// resources.limits.memory (the operator checks it and reports Degraded naming this
    /// field). Defaults to 75% of the memory limit (the rest is for connections and
    /// buffers), or 256Mi when no limit is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUANTITY_PATTERN), length(max = MAX_SHORT_STRING))]
    #[x_kube(validation = Rule::new("quantity(self).compareTo(quantity('1Mi')) >= 0")
        .message("maxMemory must be at least 1Mi"))]
    pub max_memory: Option<String>,

    /// What a node drops when it reaches maxMemory. LFU (the only policy so far): the
    /// least frequently used of a sample of entries, with frequencies from a
    /// TinyLFU-style sketch that also remembers evicted keys, which keeps a better hit
    /// ratio than LRU on skewed traffic.
    #[serde(default)]
    pub eviction_policy: EvictionPolicy,

    /// Time to live of writes that do not set their own, as a duration (e.g. 10m,
    /// 1h30m; at most 8760h). Unset or 0s: such entries live until evicted.
    #[serde(
        rename = "defaultTTL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(pattern(DURATION_PATTERN), length(max = MAX_SHORT_STRING))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('8760h')")
        .message("defaultTTL must be at most 8760h (365 days)"))]
    pub default_ttl: Option<String>,

    /// Largest value a node accepts, as a quantity (e.g. 1Mi); larger writes fail
    /// with INVALID_ARGUMENT. At most maxMemory.
    #[serde(default = "default_max_value_size")]
    #[schemars(pattern(QUANTITY_PATTERN), length(max = MAX_SHORT_STRING))]
    #[x_kube(validation = Rule::new("quantity(self).compareTo(quantity('1')) >= 0")
        .message("maxValueSize must be at least 1 byte"))]
    pub max_value_size: String,

    /// CPU and memory of each node's container. Set limits.memory: maxMemory is
    /// derived from it, and without it a busy node may be killed by the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Scheduling constraints of the node pods. Defaults to a preferred pod
    /// anti-affinity that spreads a cluster's nodes over Kubernetes nodes, so one
    /// machine going down takes as few copies of a key with it as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Labels a Kubernetes node must have for the cache pods to run on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Taints the cache pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// How the cache pods spread over zones or nodes (passed to the pod spec as is;
    /// give each constraint a labelSelector matching app.kubernetes.io/instance=<name>).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,

    /// The PodDisruptionBudget that keeps voluntary disruptions (node drains,
    /// upgrades) from taking down more nodes at once than the cluster tolerates.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,

    /// How long a stopping node may spend handing its keys to the nodes that remain
    /// (a duration, 5s to 1h). The pod's termination grace period is this plus a
    /// margin, so the kubelet does not kill a node mid-handoff.
    #[serde(default = "default_drain_timeout")]
    #[schemars(pattern(DURATION_PATTERN), length(max = MAX_SHORT_STRING))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5s') && duration(self) <= duration('1h')")
        .message("drainTimeout must be between 5s and 1h"))]
    pub drain_timeout: String,

    /// Prometheus Operator objects for the cluster. Created only when enabled here and
    /// when the Prometheus Operator's CRDs are installed.
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// TLS for client and peer traffic, from a Secret of type kubernetes.io/tls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Token authentication of clients and of nodes to each other, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// A NetworkPolicy that admits only the listed clients (and the nodes themselves)
    /// to the cache port.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// The Redis-protocol port: Redis clients (redis-cli, redis-py, go-redis, ...) use
    /// the cluster through it, beside the gRPC API.
    #[serde(default)]
    pub redis: RedisSpec,

    /// Extra labels on the cache pods (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,

    /// Extra annotations on the cache pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
}

fn default_replicas() -> i32 {
    3
}

fn default_replication_factor() -> i32 {
    1
}

fn default_max_value_size() -> String {
    "1Mi".to_owned()
}

fn default_drain_timeout() -> String {
    "30s".to_owned()
}

impl Default for CacheClusterSpec {
    /// The spec the API server stores for `spec: {}`: every schema default applied.
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({}))
            .expect("every CacheClusterSpec field has a default")
    }
}

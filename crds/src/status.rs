//! The observed state of a CacheCluster, written only by the operator and computed
//! from what the cluster reports (the StatefulSet's status), never from what was
//! merely requested.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::conditions_list_map;

/// Condition type: enough nodes are ready that every key has a reachable copy.
pub const AVAILABLE: &str = "Available";
/// Condition type: the StatefulSet is creating, replacing or removing nodes.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: the cluster cannot reach or keep its desired state (a spec that
/// cannot work, or nodes lost after the cluster had been available).
pub const DEGRADED: &str = "Degraded";
/// Condition type: membership is changing, so nodes are handing keys over.
pub const REBALANCING: &str = "Rebalancing";

/// What the operator last observed of the cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheClusterStatus {
    /// A one-word summary: Pending, Running, Scaling, Updating or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Cache node pods that exist, as the StatefulSet reports them.
    #[serde(default)]
    pub replicas: i32,
    /// Cache node pods that pass their readiness probe (they serve and are members).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the cache pods, in string form, for the scale subresource
    /// (a HorizontalPodAutoscaler finds the pods with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Available, Progressing, Degraded and Rebalancing, with reasons and messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = conditions_list_map)]
    pub conditions: Vec<Condition>,
    /// Where clients connect: host:port of the headless Service, which resolves to
    /// every ready node (use round-robin balancing, e.g. gRPC's dns:/// resolver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The memory limit each node runs with (spec.maxMemory, or the value derived
    /// from the container's memory limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<String>,
}

/// A one-word summary of the cluster for `kubectl get`: Pending (no node ready yet),
/// Running (every node ready and up to date), Scaling (nodes being added or removed),
/// Updating (a rolling update), Degraded (see the Degraded condition).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Created, and no node has been ready yet.
    Pending,
    /// Every desired node is ready and up to date.
    Running,
    /// Nodes are being added or removed.
    Scaling,
    /// A rolling update is replacing nodes.
    Updating,
    /// See the Degraded condition for why.
    Degraded,
}

impl CacheClusterStatus {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the condition of the given type is present and True.
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

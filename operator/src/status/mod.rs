//! The CacheCluster status, computed only from what the cluster reports: the
//! StatefulSet's own status (pods that exist, are ready, run the current template)
//! and whether the operator could apply the spec at all. Nothing is reported ready
//! because it was asked for.

mod conditions;
pub mod notices;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::Timestamp;
use kcache_crd::status::{AVAILABLE, DEGRADED, PROGRESSING, REBALANCING};
use kcache_crd::{CacheCluster, CacheClusterStatus, Phase, units};

use crate::build::SpecProblem;
use conditions::Computed;

/// Why the operator did not apply a cluster's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// Fields that passed the schema but cannot work.
    InvalidSpec(Vec<SpecProblem>),
    /// The API server refused an object built from the spec (HTTP 422), e.g. a pod
    /// template the StatefulSet validation rejects.
    Rejected { object: String, message: String },
}

impl Blocker {
    /// The Degraded condition's reason, also the Warning event's.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::Rejected { .. } => "Rejected",
        }
    }

    /// A message naming what to fix.
    pub fn message(&self) -> String {
        match self {
            Self::InvalidSpec(problems) => problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            Self::Rejected { object, message } => {
                format!("the API server rejected {object}: {message}")
            }
        }
    }
}

/// Everything the status is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The StatefulSet as the API server last returned it, if it exists.
    pub stateful_set: Option<&'a StatefulSet>,
    /// Why the spec was not applied, if it was not.
    pub blocker: Option<&'a Blocker>,
    /// The memory limit the nodes were given, when the spec resolved.
    pub max_memory: Option<u64>,
    /// Where clients connect.
    pub endpoint: &'a str,
    /// The label selector of the pods.
    pub selector: &'a str,
}

/// The StatefulSet's report, reduced to what the conditions need.
#[derive(Debug, Clone, Copy, Default)]
struct Facts {
    exists: bool,
    /// Pods the StatefulSet is asked to run.
    target: i32,
    /// Pods that exist.
    replicas: i32,
    ready: i32,
    /// Pods running the current template.
    updated: i32,
    /// The StatefulSet has not finished rolling out its latest template.
    rollout_pending: bool,
}

impl Facts {
    fn of(sts: Option<&StatefulSet>) -> Self {
        let Some(sts) = sts else {
            return Self::default();
        };
        let target = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = sts.status.clone().unwrap_or_default();
        let observed = status.observed_generation.unwrap_or(0);
        let generation = sts.metadata.generation.unwrap_or(0);
        let updated = status.updated_replicas.unwrap_or(0);
        let revisions_differ = matches!(
            (&status.current_revision, &status.update_revision),
            (Some(current), Some(update)) if current != update
        );
        Self {
            exists: true,
            target,
            replicas: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated,
            rollout_pending: observed < generation || revisions_differ || updated < target,
        }
    }

    fn scaling(&self) -> bool {
        self.exists && self.replicas != self.target
    }
}

/// The status of `cluster` given what was observed, at time `now`.
pub fn compute(
    cluster: &CacheCluster,
    observed: Observed<'_>,
    now: Timestamp,
) -> CacheClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let facts = Facts::of(observed.stateful_set);
    let replication = cluster.spec.replication_factor.max(1);
    // Every key has replicationFactor copies on distinct nodes, so with at most
    // replicationFactor-1 nodes missing every key still has a ready copy.
    let needed = (facts.target - (replication - 1)).max(1);
    let available = facts.exists && facts.target > 0 && facts.ready >= needed;
    let was_available = previous.is_true(AVAILABLE)
        || previous
            .condition(DEGRADED)
            .is_some_and(|c| c.status == "True" && c.reason == "ReplicasUnavailable");

    // Nodes missing because a scale-up or rolling update is under way are expected;
    // nodes missing from a settled StatefulSet were lost.
    let settled = facts.exists && !facts.scaling() && !facts.rollout_pending;
    let lost = was_available && !available && settled;
    let available_c = available_condition(&facts, available, needed, replication);
    let degraded_c = degraded_condition(observed.blocker, lost, &available_c);
    let phase = phase(&facts, degraded_c.status, available || was_available);
    let computed = [
        available_c,
        progressing_condition(&facts, observed.blocker),
        degraded_c,
        rebalancing_condition(&facts),
    ];
    let generation = cluster.metadata.generation;
    CacheClusterStatus {
        phase: Some(phase),
        replicas: facts.replicas,
        ready_replicas: facts.ready,
        selector: Some(observed.selector.to_owned()),
        observed_generation: generation,
        conditions: computed
            .into_iter()
            .map(|c| c.into_condition(&previous.conditions, generation, now))
            .collect(),
        endpoint: Some(observed.endpoint.to_owned()),
        max_memory: observed
            .max_memory
            .map(units::quantity_string)
            .or(previous.max_memory),
    }
}

fn available_condition(facts: &Facts, available: bool, needed: i32, replication: i32) -> Computed {
    let Facts { ready, target, .. } = *facts;
    if !facts.exists {
        Computed::new(
            AVAILABLE,
            false,
            "NotCreated",
            "the StatefulSet does not exist yet",
        )
    } else if available {
        Computed::new(
            AVAILABLE,
            true,
            "EnoughNodesReady",
            format!("{ready}/{target} nodes ready"),
        )
    } else {
        Computed::new(
            AVAILABLE,
            false,
            "NotEnoughNodesReady",
            format!(
                "{ready}/{target} nodes ready; {needed} needed so that every key has a ready copy (replicationFactor {replication})"
            ),
        )
    }
}

fn progressing_condition(facts: &Facts, blocker: Option<&Blocker>) -> Computed {
    let Facts {
        ready,
        target,
        replicas,
        updated,
        ..
    } = *facts;
    match () {
        _ if !facts.exists && blocker.is_some() => Computed::new(
            PROGRESSING,
            false,
            "Blocked",
            "nothing is created until the spec is fixed (see Degraded)",
        ),
        _ if !facts.exists => {
            Computed::new(PROGRESSING, true, "Creating", "creating the StatefulSet")
        }
        _ if facts.scaling() => Computed::new(
            PROGRESSING,
            true,
            if replicas < target {
                "ScalingUp"
            } else {
                "ScalingDown"
            },
            format!("{replicas} -> {target} nodes"),
        ),
        _ if facts.rollout_pending => Computed::new(
            PROGRESSING,
            true,
            "RollingUpdate",
            format!("{updated}/{target} nodes run the current template"),
        ),
        _ if ready < target => Computed::new(
            PROGRESSING,
            true,
            "WaitingForReadiness",
            format!("{ready}/{target} nodes ready"),
        ),
        _ => Computed::new(
            PROGRESSING,
            false,
            "Complete",
            format!("{target} nodes ready and up to date"),
        ),
    }
}

fn degraded_condition(
    blocker: Option<&Blocker>,
    lost_availability: bool,
    available: &Computed,
) -> Computed {
    if let Some(blocker) = blocker {
        Computed::new(DEGRADED, true, blocker.reason(), blocker.message())
    } else if lost_availability {
        Computed::new(
            DEGRADED,
            true,
            "ReplicasUnavailable",
            available.message.clone(),
        )
    } else {
        Computed::new(
            DEGRADED,
            false,
            "AsExpected",
            "the cluster runs as specified",
        )
    }
}

/// Membership changes whenever nodes come, go or are replaced, and every change
/// makes the nodes hand keys to their new owners. The operator sees the change, not
/// the handoff itself (that shows in the nodes' handoff metrics).
fn rebalancing_condition(facts: &Facts) -> Computed {
    let changing = facts.exists
        && facts.ready > 0
        && (facts.scaling() || facts.rollout_pending || facts.ready < facts.target);
    if changing {
        Computed::new(
            REBALANCING,
            true,
            "MembershipChanging",
            format!(
                "{}/{} nodes ready; nodes hand keys to their new owners",
                facts.ready, facts.target
            ),
        )
    } else {
        Computed::new(
            REBALANCING,
            false,
            "MembershipStable",
            "membership is stable",
        )
    }
}

fn phase(facts: &Facts, degraded: bool, has_been_available: bool) -> Phase {
    if degraded {
        Phase::Degraded
    } else if !facts.exists || !has_been_available {
        Phase::Pending
    } else if facts.scaling() {
        Phase::Scaling
    } else if facts.rollout_pending {
        Phase::Updating
    } else {
        Phase::Running
    }
}

#[cfg(test)]
mod tests;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::Timestamp;
use kcache_crd::status::{AVAILABLE, DEGRADED, PROGRESSING, REBALANCING};
use kcache_crd::{CacheCluster, CacheClusterStatus, Phase};
use serde_json::json;

use super::{Blocker, Observed, compute};
use crate::build::SpecProblem;
use crate::fixtures::{cluster, sts, with_status};

fn observe(
    cc: &CacheCluster,
    sts: Option<&StatefulSet>,
    blocker: Option<&Blocker>,
) -> CacheClusterStatus {
    let observed = Observed {
        stateful_set: sts,
        blocker,
        max_memory: Some(256 << 20),
        endpoint: "demo-headless.apps.svc.cluster.local:7000",
        selector: "app.kubernetes.io/instance=demo,app.kubernetes.io/name=kcache",
    };
    compute(cc, observed, Timestamp::UNIX_EPOCH)
}

fn reason(status: &CacheClusterStatus, type_: &str) -> (String, String) {
    let c = status.condition(type_).unwrap();
    (c.status.clone(), c.reason.clone())
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_owned(), reason.to_owned())
}

#[test]
fn a_new_cluster_without_a_statefulset_is_pending_and_creating() {
    let status = observe(&cluster(json!({})), None, None);
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(status.ready_replicas, 0);
    assert_eq!(reason(&status, AVAILABLE), pair("False", "NotCreated"));
    assert_eq!(reason(&status, PROGRESSING), pair("True", "Creating"));
    assert_eq!(reason(&status, DEGRADED), pair("False", "AsExpected"));
    assert_eq!(
        status.endpoint.as_deref(),
        Some("demo-headless.apps.svc.cluster.local:7000")
    );
    assert_eq!(status.max_memory.as_deref(), Some("256Mi"));
    assert_eq!(status.observed_generation, Some(1));
}

#[test]
fn pods_that_exist_but_are_not_ready_are_not_reported_ready() {
    let sts = sts(3).ready(1).build();
    let status = observe(&cluster(json!({})), Some(&sts), None);
    assert_eq!(status.replicas, 3);
    assert_eq!(status.ready_replicas, 1);
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(
        reason(&status, AVAILABLE),
        pair("False", "NotEnoughNodesReady")
    );
    assert_eq!(
        reason(&status, PROGRESSING),
        pair("True", "WaitingForReadiness")
    );
    // Not degraded: the cluster has never been available, it is still starting.
    assert_eq!(reason(&status, DEGRADED), pair("False", "AsExpected"));
}

#[test]
fn all_nodes_ready_and_current_is_running() {
    let sts = sts(3).build();
    let status = observe(&cluster(json!({})), Some(&sts), None);
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(reason(&status, AVAILABLE), pair("True", "EnoughNodesReady"));
    assert_eq!(reason(&status, PROGRESSING), pair("False", "Complete"));
    assert_eq!(
        reason(&status, REBALANCING),
        pair("False", "MembershipStable")
    );
}

#[test]
fn with_two_copies_one_lost_node_leaves_the_cluster_available_and_rebalancing() {
    let cc = cluster(json!({"replicas": 3, "replicationFactor": 2}));
    let sts = sts(3).ready(2).build();
    let status = observe(&cc, Some(&sts), None);
    assert_eq!(reason(&status, AVAILABLE), pair("True", "EnoughNodesReady"));
    assert_eq!(
        reason(&status, REBALANCING),
        pair("True", "MembershipChanging")
    );
}

#[test]
fn losing_nodes_after_being_available_is_degraded() {
    let running = observe(&cluster(json!({})), Some(&sts(3).build()), None);
    let cc = with_status(cluster(json!({})), running);
    let status = observe(&cc, Some(&sts(3).ready(2).build()), None);
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(
        reason(&status, DEGRADED),
        pair("True", "ReplicasUnavailable")
    );
    assert!(
        status
            .condition(DEGRADED)
            .unwrap()
            .message
            .contains("2/3 nodes ready")
    );
}

#[test]
fn scaling_up_reports_scaling_until_the_statefulset_has_the_new_pods() {
    let running = observe(&cluster(json!({})), Some(&sts(3).build()), None);
    let cc = with_status(cluster(json!({"replicas": 5})), running);
    let status = observe(
        &cc,
        Some(&sts(5).replicas(3).ready(3).updated(3).build()),
        None,
    );
    assert_eq!(status.phase, Some(Phase::Scaling));
    assert_eq!(reason(&status, DEGRADED), pair("False", "AsExpected"));
    assert_eq!(reason(&status, PROGRESSING), pair("True", "ScalingUp"));
    assert_eq!(
        reason(&status, REBALANCING),
        pair("True", "MembershipChanging")
    );
    assert_eq!(status.replicas, 3);
}

#[test]
fn a_crashed_node_during_a_rolling_update_is_not_reported_as_degraded_yet() {
    let running = observe(&cluster(json!({})), Some(&sts(3).build()), None);
    let cc = with_status(cluster(json!({})), running);
    let status = observe(
        &cc,
        Some(&sts(3).rolling().updated(1).ready(2).build()),
        None,
    );
    assert_eq!(status.phase, Some(Phase::Updating));
    assert_eq!(reason(&status, DEGRADED), pair("False", "AsExpected"));
    assert_eq!(
        reason(&status, AVAILABLE),
        pair("False", "NotEnoughNodesReady")
    );
}

#[test]
fn a_template_change_not_yet_observed_is_an_update_in_progress() {
    let running = observe(&cluster(json!({})), Some(&sts(3).build()), None);
    let cc = with_status(cluster(json!({})), running);
    let status = observe(&cc, Some(&sts(3).unobserved().build()), None);
    assert_eq!(status.phase, Some(Phase::Updating));
    assert_eq!(reason(&status, PROGRESSING), pair("True", "RollingUpdate"));
    let status = observe(&cc, Some(&sts(3).rolling().updated(1).build()), None);
    assert_eq!(status.phase, Some(Phase::Updating));
}

#[test]
fn a_blocked_spec_is_degraded_with_the_field_in_the_message() {
    let blocker = Blocker::InvalidSpec(vec![SpecProblem {
        field: "spec.maxMemory".into(),
        message: "must be below resources.limits.memory (1Gi)".into(),
    }]);
    let status = observe(&cluster(json!({})), None, Some(&blocker));
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(reason(&status, DEGRADED), pair("True", "InvalidSpec"));
    assert!(
        status
            .condition(DEGRADED)
            .unwrap()
            .message
            .starts_with("spec.maxMemory: ")
    );
    assert_eq!(reason(&status, PROGRESSING), pair("False", "Blocked"));
}

#[test]
fn a_blocked_update_keeps_reporting_the_nodes_that_still_run() {
    let running = observe(&cluster(json!({})), Some(&sts(3).build()), None);
    let cc = with_status(cluster(json!({})), running);
    let blocker = Blocker::Rejected {
        object: "StatefulSet demo".into(),
        message: "spec.template: invalid".into(),
    };
    let observed = Observed {
        stateful_set: Some(&sts(3).build()),
        blocker: Some(&blocker),
        max_memory: None,
        endpoint: "e",
        selector: "s",
    };
    let status = compute(&cc, observed, Timestamp::UNIX_EPOCH);
    assert_eq!(status.ready_replicas, 3);
    assert_eq!(reason(&status, AVAILABLE), pair("True", "EnoughNodesReady"));
    assert_eq!(reason(&status, DEGRADED), pair("True", "Rejected"));
    // The nodes still run with the memory limit they were given.
    assert_eq!(status.max_memory.as_deref(), Some("256Mi"));
}

//! The events a status change deserves: a person running `kubectl describe` should
//! see when the cluster became ready, started scaling or updating, degraded and
//! recovered, without one event per reconcile.

use kcache_crd::status::DEGRADED;
use kcache_crd::{CacheClusterStatus, Phase};

/// An event to publish on the CacheCluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

impl Notice {
    fn normal(reason: &str, note: String) -> Self {
        Self {
            warning: false,
            reason: reason.to_owned(),
            note,
        }
    }
}

/// What changed between two statuses that a person should hear about.
pub fn between(previous: Option<&CacheClusterStatus>, next: &CacheClusterStatus) -> Vec<Notice> {
    let mut notices = Vec::new();
    let was = |f: fn(&CacheClusterStatus) -> Option<(String, String, String)>| previous.and_then(f);
    let degraded = |s: &CacheClusterStatus| {
        s.condition(DEGRADED)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let now_degraded = degraded(next);
    if now_degraded != was(degraded) {
        match (&now_degraded, was(degraded)) {
            (Some((status, reason, message)), _) if status == "True" => notices.push(Notice {
                warning: true,
                reason: reason.clone(),
                note: message.clone(),
            }),
            (_, Some((status, _, _))) if status == "True" => notices.push(Notice::normal(
                "Recovered",
                "the cluster runs as specified again".to_owned(),
            )),
            _ => {}
        }
    }
    if next.phase != previous.and_then(|p| p.phase) {
        let (ready, total) = (next.ready_replicas, next.replicas);
        match next.phase {
            Some(Phase::Running) => {
                notices.push(Notice::normal(
                    "Running",
                    format!("{ready}/{total} nodes ready"),
                ));
            }
            Some(Phase::Scaling) => notices.push(Notice::normal(
                "Scaling",
                format!("{total} nodes exist; scaling to the spec's replica count"),
            )),
            Some(Phase::Updating) => notices.push(Notice::normal(
                "Updating",
                "rolling update: nodes are replaced one at a time".to_owned(),
            )),
            _ => {}
        }
    }
    notices
}

/// The event for having applied a spec: Created the first time, Updated when the
/// generation moved on since the status last described it.
pub fn applied(
    previous: Option<&CacheClusterStatus>,
    generation: Option<i64>,
    replicas: i32,
) -> Option<Notice> {
    match previous {
        None => Some(Notice::normal(
            "Created",
            format!("applied the StatefulSet, Services and RBAC of {replicas} cache nodes"),
        )),
        Some(p) if p.observed_generation != generation => Some(Notice::normal(
            "Updated",
            format!(
                "applied generation {} of the spec",
                generation.unwrap_or_default()
            ),
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn status(phase: Phase, degraded: Option<(&str, &str)>) -> CacheClusterStatus {
        CacheClusterStatus {
            phase: Some(phase),
            replicas: 3,
            ready_replicas: 3,
            conditions: degraded
                .map(|(reason, message)| Condition {
                    type_: DEGRADED.to_owned(),
                    status: "True".to_owned(),
                    reason: reason.to_owned(),
                    message: message.to_owned(),
                    observed_generation: None,
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                })
                .into_iter()
                .collect(),
            ..CacheClusterStatus::default()
        }
    }

    #[test]
    fn becoming_ready_is_announced_once() {
        let running = status(Phase::Running, None);
        let first = between(Some(&status(Phase::Pending, None)), &running);
        assert_eq!(first, [Notice::normal("Running", "3/3 nodes ready".into())]);
        assert!(between(Some(&running), &running).is_empty());
    }

    #[test]
    fn degrading_warns_with_the_reason_and_recovering_says_so() {
        let bad = status(
            Phase::Degraded,
            Some(("InvalidSpec", "spec.maxMemory: too big")),
        );
        let notices = between(Some(&status(Phase::Running, None)), &bad);
        assert!(notices[0].warning);
        assert_eq!(notices[0].reason, "InvalidSpec");
        assert_eq!(notices[0].note, "spec.maxMemory: too big");
        let healed = between(Some(&bad), &status(Phase::Running, None));
        assert_eq!(healed[0].reason, "Recovered");
    }

    #[test]
    fn a_new_problem_while_degraded_is_a_new_warning() {
        let one = status(Phase::Degraded, Some(("InvalidSpec", "spec.tls: no")));
        let two = status(Phase::Degraded, Some(("InvalidSpec", "spec.auth: no")));
        let notices = between(Some(&one), &two);
        assert_eq!(notices.len(), 1);
        assert!(notices[0].warning && notices[0].note == "spec.auth: no");
    }
}

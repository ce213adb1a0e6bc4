//! Test fixtures: a CacheCluster from a JSON spec and a StatefulSet in any state of
//! its rollout, built by chaining.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};
use kcache_crd::{CacheCluster, CacheClusterSpec, CacheClusterStatus};

/// A CacheCluster `demo` in namespace `apps`, generation 1, with a uid (as the API
/// server returns it), and the given spec on top of the defaults.
pub fn cluster(spec: serde_json::Value) -> CacheCluster {
    let spec: CacheClusterSpec = serde_json::from_value(spec).expect("a valid test spec");
    let mut cc = CacheCluster::new("demo", spec);
    cc.metadata.namespace = Some("apps".to_owned());
    cc.metadata.uid = Some("9b0c5a4e-0000-4000-8000-000000000001".to_owned());
    cc.metadata.generation = Some(1);
    cc
}

/// The same cluster with a previous status.
pub fn with_status(mut cc: CacheCluster, status: CacheClusterStatus) -> CacheCluster {
    cc.status = Some(status);
    cc
}

/// A StatefulSet asked for `target` pods, all of which exist, are ready and run
/// the current template, until a chained call says otherwise.
#[derive(Debug, Clone)]
pub struct Sts {
    target: i32,
    replicas: i32,
    ready: i32,
    updated: i32,
    generation: i64,
    observed: i64,
    revisions: (String, String),
}

pub fn sts(target: i32) -> Sts {
    Sts {
        target,
        replicas: target,
        ready: target,
        updated: target,
        generation: 1,
        observed: 1,
        revisions: ("r1".into(), "r1".into()),
    }
}

impl Sts {
    pub fn replicas(mut self, n: i32) -> Self {
        self.replicas = n;
        self
    }

    pub fn ready(mut self, n: i32) -> Self {
        self.ready = n;
        self
    }

    pub fn updated(mut self, n: i32) -> Self {
        self.updated = n;
        self
    }

    /// The spec changed and the StatefulSet controller has not caught up.
    pub fn unobserved(mut self) -> Self {
        self.generation += 1;
        self
    }

    /// Pods of an older template remain.
    pub fn rolling(mut self) -> Self {
        self.revisions.1 = "r2".into();
        self
    }

    pub fn build(self) -> StatefulSet {
        let mut sts = StatefulSet {
            spec: Some(StatefulSetSpec {
                replicas: Some(self.target),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                replicas: self.replicas,
                ready_replicas: Some(self.ready),
                updated_replicas: Some(self.updated),
                observed_generation: Some(self.observed),
                current_revision: Some(self.revisions.0),
                update_revision: Some(self.revisions.1),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        };
        sts.metadata.generation = Some(self.generation);
        sts
    }
}

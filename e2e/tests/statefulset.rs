//! The StatefulSet behaviour kcache relies on, checked on whichever control plane runs
//! (the emulator's controller, or kube-controller-manager's): OrderedReady creates
//! ordinal N only once N-1 is Ready and scales down from the highest ordinal one at a
//! time (a rolling update may replace any ordinal at or above its partition); a RollingUpdate with a partition replaces only the ordinals at or above it,
//! and the revisions in the status say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Env;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kcache_e2e::controllers::pod_ready;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use parking_lot::Mutex;
use serde_json::json;
use std::sync::Arc;

fn web(replicas: i32) -> StatefulSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "serviceName": "web",
            "podManagementPolicy": "OrderedReady",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "sleep", "image": "example.com/sleep:1", "command": ["sleep", "3600"],
                        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
                    }],
                },
            },
        },
    }))
    .unwrap()
}

/// Waits until the StatefulSet's status satisfies `check`.
async fn until(
    api: &Api<StatefulSet>,
    what: &str,
    check: impl Fn(&StatefulSet) -> bool + Send + 'static,
) {
    let cond = await_condition(api.clone(), "web", move |s: Option<&StatefulSet>| {
        s.is_some_and(&check)
    });
    tokio::time::timeout(common::WAIT, cond)
        .await
        .unwrap_or_else(|_| panic!("StatefulSet web: {what}"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordered_ready_creation_scale_down_and_a_partitioned_rolling_update() {
    let env = Env::start("statefulset").await;
    let sets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = env.pods();

    // Every violation of the ordering the watch sees: a pod appearing while a lower
    // ordinal is not Ready, or a pod terminating while a higher one still exists.
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = violations.clone();
    // Set once the scale-down starts: only then must terminations go from the top.
    let scaling_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let down = scaling_down.clone();
    let watch = tokio::spawn(async move {
        let mut state: BTreeMap<String, Pod> = BTreeMap::new();
        let mut events = watcher(pods, watcher::Config::default().labels("app=web"))
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            // A watch error is retried by the backoff; the stream goes on.
            let Ok(event) = event else { continue };
            match event {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                    let name = pod.name_any();
                    let Some(ordinal) = name
                        .strip_prefix("web-")
                        .and_then(|o| o.parse::<usize>().ok())
                    else {
                        seen.lock().push(format!("unexpected pod {name}"));
                        continue;
                    };
                    if !state.contains_key(&name) {
                        for lower in 0..ordinal {
                            let ok = state.get(&format!("web-{lower}")).is_some_and(pod_ready);
                            if !ok {
                                seen.lock().push(format!(
                                    "{name} created while web-{lower} was not Ready"
                                ));
                            }
                        }
                    }
                    if pod.metadata.deletion_timestamp.is_some()
                        && down.load(std::sync::atomic::Ordering::SeqCst)
                    {
                        for higher in ordinal + 1..10 {
                            if state.contains_key(&format!("web-{higher}")) {
                                seen.lock()
                                    .push(format!("{name} terminating while web-{higher} exists"));
                            }
                        }
                    }
                    state.insert(name, pod);
                }
                watcher::Event::Delete(pod) => {
                    state.remove(&pod.name_any());
                }
                _ => {}
            }
        }
    });

    sets.create(&PostParams::default(), &web(3)).await.unwrap();
    until(&sets, "3 ready", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.ready_replicas == Some(3))
    })
    .await;
    let status = sets.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.current_revision, status.update_revision);
    let first = status.update_revision.clone().unwrap();
    println!("statefulset: 3 ready in order; revision {first}");

    // Partition 2: only web-2 moves to the new revision.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
            "template": {"metadata": {"annotations": {"kcache.io/rev": "2"}}},
        }})),
    )
    .await
    .unwrap();
    let old = first.clone();
    until(&sets, "web-2 updated behind the partition", move |s| {
        s.status.as_ref().is_some_and(|st| {
            st.observed_generation == s.metadata.generation
                && st.update_revision.as_deref() != Some(old.as_str())
                && st.updated_replicas == Some(1)
                && st.ready_replicas == Some(3)
        })
    })
    .await;
    let status = sets.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        status.current_revision.as_deref(),
        Some(first.as_str()),
        "the partition holds the current revision"
    );
    let hash = |pod: &Pod| {
        pod.labels()
            .get("controller-revision-hash")
            .cloned()
            .unwrap()
    };
    let mut revisions = BTreeMap::new();
    for ordinal in 0..3 {
        revisions.insert(
            ordinal,
            hash(&env.pods().get(&format!("web-{ordinal}")).await.unwrap()),
        );
    }
    assert_eq!(revisions[&0], revisions[&1]);
    assert_ne!(revisions[&1], revisions[&2], "{revisions:?}");
    // The label names the ControllerRevision, as the real controller writes it.
    assert_eq!(Some(&revisions[&2]), status.update_revision.as_ref());
    assert_eq!(Some(&revisions[&0]), status.current_revision.as_ref());
    println!("statefulset: partition 2 updated only web-2 {revisions:?}");

    // Partition 0: the rest follow and the current revision catches up.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .unwrap();
    until(&sets, "rolled out", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.updated_replicas == Some(3)
                && st.ready_replicas == Some(3)
                && st.current_revision == st.update_revision
        })
    })
    .await;

    // Scale to 1: from the highest ordinal down, one at a time.
    scaling_down.store(true, std::sync::atomic::Ordering::SeqCst);
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    until(&sets, "scaled to 1", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.replicas == 1 && st.ready_replicas == Some(1))
    })
    .await;
    // The watch has seen the end state (only web-0 left) and is still running.
    let deadline = std::time::Instant::now() + common::WAIT;
    while env
        .pods()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len()
        != 1
    {
        assert!(
            std::time::Instant::now() < deadline,
            "pods were not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!watch.is_finished(), "the ordering watch ended early");
    watch.abort();
    let violations = violations.lock().clone();
    assert!(violations.is_empty(), "{violations:?}");
    println!("statefulset: scaled 3 → 1 from the top, no ordering violation seen");
    env.stop().await;
}

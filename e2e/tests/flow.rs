//! The whole flow, as a newcomer meets it: install (the CRD and operator are up),
//! `kubectl apply` the example, wait for Ready through its conditions, traffic through
//! the headless Service (round robin and smart), `kubectl get` reports it truthfully,
//! and deleting the CacheCluster removes everything it owned.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Env, StatusSampler, missing, pod_names};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cache_cluster_runs_serves_and_goes_away_with_everything_it_owned() {
    let env = Env::start("flow").await;
    let started = Instant::now();
    let name = env.apply_example("cachecluster-minimal.yaml", serde_json::json!({}));
    let sampler = StatusSampler::start(&env, &name);
    let took = env.wait_ready(&name, 3).await;
    env.wait_members(&name, 3).await;
    println!("flow: 3/3 Ready and members agreed {took:?} after kubectl apply");
    assert_eq!(pod_names(&env, &name).await, ["demo-0", "demo-1", "demo-2"]);

    // What kubectl shows a person.
    let table = env.kubectl(&["get", "cachecluster", &name]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["demo", "3", "3", "Running"], "{table}");

    // Round robin: 3,000 writes spread over the pods by DNS, read back through smart
    // routing, which goes straight to each key's owner.
    let rr = env.cache(&name, false).await;
    // DNS follows the EndpointSlices: wait until it lists all three pods.
    let deadline = Instant::now() + common::WAIT;
    while rr.addresses().len() != 3 {
        assert!(Instant::now() < deadline, "DNS gave {:?}", rr.addresses());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = rr.refresh().await;
    }
    let keys: Vec<String> = (0..3_000).map(|i| format!("flow:{i}")).collect();
    for key in &keys {
        rr.set(key.clone(), key.clone(), Default::default())
            .await
            .unwrap();
    }
    let smart = env.cache(&name, true).await;
    assert_eq!(missing(&smart, &keys).await, Vec::<String>::new());
    for key in keys.iter().step_by(10) {
        assert!(smart.get(key.clone()).await.unwrap().is_some(), "{key}");
    }
    let stats = rr.stats().await.unwrap();
    let items: BTreeMap<String, u64> = stats
        .nodes
        .iter()
        .map(|n| (n.node_id.clone(), n.items))
        .collect();
    println!("flow: items per node {items:?}");
    assert_eq!(
        items.values().sum::<u64>(),
        3_000,
        "R=1: one copy of each key"
    );
    for (node, count) in &items {
        assert!(
            *count > 700,
            "{node} holds {count} of 3000 keys: placement is skewed"
        );
    }

    // Endpoints and DNS reflect readiness.
    let slices: Api<EndpointSlice> = Api::namespaced(env.client.clone(), &env.ns);
    let slice_list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=demo-headless"))
        .await
        .unwrap();
    let ready = slice_list
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count();
    assert_eq!(ready, 3);

    let (samples, violations) = sampler.finish().await;
    println!("flow: status sampled {samples} times");
    assert!(violations.is_empty(), "{violations:?}");

    // Delete: everything it owned goes.
    env.kubectl(&["delete", "cachecluster", &name, "--wait=true"]);
    let deadline = Instant::now() + common::WAIT;
    loop {
        let ns = &env.ns;
        let c = &env.client;
        let left = [
            (
                "statefulset",
                Api::<StatefulSet>::namespaced(c.clone(), ns)
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .len(),
            ),
            (
                "pod",
                Api::<Pod>::namespaced(c.clone(), ns)
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .len(),
            ),
            (
                "service",
                Api::<Service>::namespaced(c.clone(), ns)
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .len(),
            ),
            (
                "endpointslice",
                slices
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .len(),
            ),
            (
                "serviceaccount",
                Api::<ServiceAccount>::namespaced(c.clone(), ns)
                    .list(&ListParams::default().fields("metadata.name=demo"))
                    .await
                    .unwrap()
                    .items
                    .len(),
            ),
            (
                "role",
                Api::<Role>::namespaced(c.clone(), ns)
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .len(),
            ),
            (
                "rolebinding",
                Api::<RoleBinding>::namespaced(c.clone(), ns)
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .len(),
            ),
            (
                "poddisruptionbudget",
                Api::<PodDisruptionBudget>::namespaced(c.clone(), ns)
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .len(),
            ),
        ];
        if left.iter().all(|(_, n)| *n == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after delete: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "flow: deleted and collected; whole scenario {:?}",
        started.elapsed()
    );
    env.stop().await;
}

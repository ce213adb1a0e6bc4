//! An invalid spec (more copies than replicas) is refused at admission by the CRD's
//! CEL rule, or — where the API server does not run CEL — reported Degraded naming the
//! field, and nothing else changes: the StatefulSet and its pods stay as they were.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Env, pod_names};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kcache_crd::CacheCluster;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::wait::await_condition;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_spec_is_refused_or_degraded_naming_the_field_and_changes_nothing() {
    let env = Env::start("invalid").await;
    let name = env.apply_example(
        "cachecluster-minimal.yaml",
        serde_json::json!({"replicas": 3}),
    );
    env.wait_ready(&name, 3).await;
    let statefulsets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
    let before = statefulsets.get(&name).await.unwrap();
    let uids = |pods: Vec<Pod>| {
        let mut uids: Vec<String> = pods.iter().map(|p| p.uid().unwrap()).collect();
        uids.sort();
        uids
    };
    let pods_before = uids(env.pods().list(&ListParams::default()).await.unwrap().items);

    let file = env.example(
        "cachecluster-minimal.yaml",
        None,
        serde_json::json!({"replicas": 3, "replicationFactor": 5}),
    );
    let output = env.kubectl_output(&["apply", "-f", &file]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        // Admitted (no CEL here): the operator must say Degraded and name the field.
        let generation = env.clusters().get(&name).await.unwrap().metadata.generation;
        let degraded = await_condition(env.clusters(), &name, move |cc: Option<&CacheCluster>| {
            cc.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.observed_generation == generation
                    && s.conditions.iter().any(|c| {
                        c.type_ == "Degraded"
                            && c.status == "True"
                            && c.message.contains("spec.replicationFactor")
                    })
            })
        });
        tokio::time::timeout(common::WAIT, degraded)
            .await
            .expect("Degraded naming spec.replicationFactor")
            .unwrap();
        let status = env
            .clusters()
            .get_status(&name)
            .await
            .unwrap()
            .status
            .unwrap();
        let message = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap()
            .message
            .clone();
        println!("invalid: admitted, then Degraded: {message}");
    } else {
        println!("invalid: refused at admission: {}", stderr.trim());
        assert!(stderr.contains("replicationFactor"), "{stderr}");
    }
    // Nothing else changed.
    let after = statefulsets.get(&name).await.unwrap();
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "the StatefulSet changed"
    );
    assert_eq!(
        uids(env.pods().list(&ListParams::default()).await.unwrap().items),
        pods_before
    );
    assert_eq!(pod_names(&env, &name).await, ["demo-0", "demo-1", "demo-2"]);

    // Fixing the spec brings it back.
    env.apply_example(
        "cachecluster-minimal.yaml",
        serde_json::json!({"replicas": 3, "replicationFactor": 2}),
    );
    env.wait_ready(&name, 3).await;
    env.stop().await;
}

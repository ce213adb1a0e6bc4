//! `kubectl scale cachecluster` 3 → 5 → 2 under continuous writes with one copy of
//! each key (R=1): the scale subresource drives the StatefulSet, members join and leave
//! by EndpointSlice, handoff and drain move the keys, and every acknowledged write is
//! readable afterwards. Zero loss is the promise, so zero is what is demanded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Env, StatusSampler, Traffic, missing, pod_names};

/// Traffic that runs between changes (not a wait for anything).
const TRAFFIC_BETWEEN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_3_5_2_under_writes_loses_no_acknowledged_key() {
    let env = Env::start("scale").await;
    let name = env
        .settled_example(3, serde_json::json!({"replicationFactor": 1}))
        .await;
    let sampler = StatusSampler::start(&env, &name);
    let traffic = Traffic::start(env.cache(&name, false).await, "scale");

    for replicas in [5, 2] {
        // Writes land on the old membership before each change, too.
        tokio::time::sleep(TRAFFIC_BETWEEN).await;
        let started = Instant::now();
        env.kubectl(&[
            "scale",
            "cachecluster",
            &name,
            &format!("--replicas={replicas}"),
        ]);
        let ready = env.wait_ready(&name, replicas).await;
        let settled = env.wait_members(&name, replicas as usize).await;
        println!(
            "scale: to {replicas}: Ready after {ready:?}, members settled after {:?}",
            started.elapsed().max(settled)
        );
    }
    assert_eq!(pod_names(&env, &name).await, ["demo-0", "demo-1"]);
    tokio::time::sleep(TRAFFIC_BETWEEN).await;
    let report = traffic.finish().await;
    let (samples, violations) = sampler.finish().await;

    let reader = env.cache(&name, false).await;
    let lost = missing(&reader, &report.acked).await;
    let stats = reader.stats().await.unwrap();
    let items: Vec<(String, u64)> = stats
        .nodes
        .iter()
        .map(|n| (n.node_id.clone(), n.items))
        .collect();
    println!(
        "scale: {} writes in {:?}, {} acknowledged, {} failed (window {:?}), {} lost; items {items:?}; status sampled {samples} times",
        report.attempts,
        report.ran,
        report.acked.len(),
        report.errors.len(),
        report.error_window(),
        lost.len()
    );
    assert!(
        report.acked.len() > 1_000,
        "too little traffic to mean anything"
    );
    assert_eq!(lost, Vec::<String>::new(), "acknowledged keys lost");
    assert!(violations.is_empty(), "{violations:?}");
    env.stop().await;
}

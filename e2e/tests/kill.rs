//! kill -9 of a node's process under writes with two copies of each key (R=2): the
//! kubelet restarts it, it rejoins, no acknowledged write is lost, and the client sees
//! errors only inside a short failover window (reported).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Env, StatusSampler, Traffic, missing};
use kube::runtime::wait::await_condition;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The longest the client may see failures after a node dies: the dead process refuses
/// connections at once (the client retries on the next node), but membership changes
/// only when the pod's readiness goes and comes back (probe period 5 s); calls in
/// flight to it meet the client's deadline and retry.
const FAILOVER_BUDGET: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_restarts_and_rejoins_without_losing_acknowledged_keys() {
    let env = Env::start("kill").await;
    let name = env
        .settled_example(3, serde_json::json!({"replicationFactor": 2}))
        .await;
    let sampler = StatusSampler::start(&env, &name);
    let traffic = Traffic::start(env.cache(&name, false).await, "kill");
    tokio::time::sleep(Duration::from_secs(2)).await; // some keys on every node first

    let pid = env.pid("demo-1", "node");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let restarted = await_condition(
        env.pods(),
        "demo-1",
        |pod: Option<&k8s_openapi::api::core::v1::Pod>| {
            pod.and_then(|p| p.status.as_ref())
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.restart_count >= 1 && c.ready))
        },
    );
    tokio::time::timeout(common::WAIT, restarted)
        .await
        .expect("demo-1 restarted and ready")
        .unwrap();
    println!(
        "kill: demo-1 restarted and Ready {:?} after SIGKILL",
        killed.elapsed()
    );
    assert_ne!(env.pid("demo-1", "node"), pid, "a new process");
    env.wait_ready(&name, 3).await;
    env.wait_members(&name, 3).await;
    let at_rejoin = traffic.attempts();
    tokio::time::sleep(Duration::from_secs(2)).await; // writes after the rejoin too
    let report = traffic.finish().await;
    let (samples, violations) = sampler.finish().await;

    let reader = env.cache(&name, false).await;
    let lost = missing(&reader, &report.acked).await;
    println!(
        "kill: {} writes in {:?}, {} acknowledged, {} failed within a {:?} window, {} lost; status sampled {samples} times",
        report.attempts,
        report.ran,
        report.acked.len(),
        report.errors.len(),
        report.error_window(),
        lost.len()
    );
    for (at, error) in report.errors.iter().take(5) {
        println!("kill:   error at {at:?}: {error}");
    }
    assert!(
        report.acked.len() > 500,
        "too little traffic to mean anything"
    );
    let after_rejoin = report
        .acked
        .iter()
        .filter(|k| k.rsplit(':').next().and_then(|n| n.parse::<u64>().ok()) >= Some(at_rejoin))
        .count();
    assert!(
        after_rejoin > 50,
        "only {after_rejoin} writes acknowledged after the rejoin"
    );
    assert_eq!(lost, Vec::<String>::new(), "acknowledged keys lost");
    assert!(
        report.error_window() <= FAILOVER_BUDGET,
        "errors over {:?}",
        report.error_window()
    );
    assert!(violations.is_empty(), "{violations:?}");
    env.stop().await;
}

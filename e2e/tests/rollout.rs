//! A spec change (maxMemory) rolls the StatefulSet under writes: pods are replaced one at
//! a time from the highest ordinal, each drains on SIGTERM, the rollout completes, and
//! with two copies of each key (R=2) no acknowledged write is lost. The same rollout
//! with one copy (R=1) is measured and reported. Turning spec.auth on, and off again,
//! takes two rollouts each way, and no write of a client that holds the token is
//! refused or lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Env, StatusSampler, Traffic, missing};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kcache_client::{Client, Token};
use kube::api::Api;
use kube::runtime::wait::await_condition;
use tonic::Code;

/// One scenario at a time: each runs a three-node cluster through rollouts, and two at
/// once on two cores starved both (neither cluster Ready within its wait).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a rollout of cluster `name` under writes; returns (acknowledged, lost).
async fn rollout(env: &Env, name: &str, replication: i32) -> (usize, Vec<String>) {
    let file = env.example(
        "cachecluster-minimal.yaml",
        Some(name),
        serde_json::json!({"replicas": 3, "replicationFactor": replication}),
    );
    env.kubectl(&["apply", "-f", &file]);
    env.wait_ready(name, 3).await;
    env.wait_members(name, 3).await;
    let statefulsets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
    let before = statefulsets.get(name).await.unwrap();
    let old_revision = before
        .status
        .as_ref()
        .and_then(|s| s.update_revision.clone())
        .unwrap();

    let _logs = KeepLogs { env, name };
    let sampler = StatusSampler::start(env, name);
    let traffic = Traffic::start(env.cache(name, false).await, &format!("rollout-{name}"));
    tokio::time::sleep(Duration::from_secs(2)).await; // keys on the old pods first
    let started = Instant::now();
    env.kubectl(&[
        "patch",
        "cachecluster",
        name,
        "--type=merge",
        "-p",
        r#"{"spec":{"maxMemory":"128Mi"}}"#,
    ]);
    let done = await_condition(
        statefulsets.clone(),
        name,
        move |sts: Option<&StatefulSet>| {
            let Some(sts) = sts else { return false };
            let Some(status) = &sts.status else {
                return false;
            };
            status.observed_generation == sts.metadata.generation
                && status.update_revision.as_deref() != Some(old_revision.as_str())
                && status.current_revision == status.update_revision
                && status.updated_replicas == Some(3)
                && status.ready_replicas == Some(3)
        },
    );
    tokio::time::timeout(common::WAIT, done)
        .await
        .expect("the rollout completes")
        .unwrap();
    let rolled = started.elapsed();
    env.wait_ready(name, 3).await;
    env.wait_members(name, 3).await;
    let report = traffic.finish().await;
    let (samples, violations) = sampler.finish().await;
    let sts = statefulsets.get(name).await.unwrap();
    let args = sts.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.contains(&"--max-memory=128MiB".to_string()),
        "{args:?}"
    );
    let lost = missing(&env.cache(name, false).await, &report.acked).await;
    println!(
        "rollout R={replication}: rolled 3 pods in {rolled:?}; {} writes, {} acknowledged, {} failed (window {:?}), {} lost; status sampled {samples} times",
        report.attempts,
        report.acked.len(),
        report.errors.len(),
        report.error_window(),
        lost.len()
    );
    assert!(violations.is_empty(), "{violations:?}");
    if !lost.is_empty() {
        keep_logs(env, name, &lost);
    }
    (report.acked.len(), lost)
}

/// Copies the pods' folders (node logs) of cluster `name` out of the scenario's
/// temporary folder, which is removed when the scenario ends, to
/// `$CARGO_TARGET_TMPDIR/rollout-<name>`, so a loss can be explained after the fact.
fn keep_logs(env: &Env, name: &str, lost: &[String]) {
    let Some(state) = &env.state_dir else { return };
    let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rollout-{name}"));
    let _ = std::fs::remove_dir_all(&kept);
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(state.join("pods"))
        .arg(&kept)
        .status();
    let _ = std::fs::write(kept.join("lost.txt"), lost.join("\n"));
    println!("node logs of {name}: {} ({copied:?})", kept.display());
}

/// Keeps the node logs of a rollout that panics (e.g. one that does not complete).
struct KeepLogs<'a> {
    env: &'a Env,
    name: &'a str,
}

impl Drop for KeepLogs<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            keep_logs(self.env, self.name, &[]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spec_change_rolls_every_pod_and_loses_no_acknowledged_key_with_two_copies() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let env = Env::start("rollout").await;
    let (acked, lost) = rollout(&env, "demo", 2).await;
    assert!(acked > 500, "too little traffic to mean anything");
    assert_eq!(lost, Vec::<String>::new(), "R=2: acknowledged keys lost");
    // One copy: reported, not promised (a pod's drain hands its keys off, but a write
    // can race it).
    let (acked, lost) = rollout(&env, "single", 1).await;
    println!(
        "rollout R=1: {} of {acked} acknowledged keys lost",
        lost.len()
    );
    env.stop().await;
}

/// The node arguments of a StatefulSet's template.
fn template_args(sts: &StatefulSet) -> Vec<String> {
    sts.spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .and_then(|c| c.args.clone())
        .unwrap_or_default()
}

/// Waits for the two rollouts that turn spec.auth on or off: the first template
/// admits tokenless callers (`--auth-accepts-anonymous`), the last one, complete on
/// three ready pods, satisfies `last(args)`. Returns whether the first was seen.
async fn two_auth_rollouts(env: &Env, name: &str, last: fn(&[String]) -> bool) -> bool {
    let statefulsets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
    let admitting = Arc::new(AtomicBool::new(false));
    let seen = admitting.clone();
    let done = await_condition(statefulsets, name, move |sts: Option<&StatefulSet>| {
        let Some(sts) = sts else { return false };
        let args = template_args(sts);
        if args.iter().any(|a| a == "--auth-accepts-anonymous") {
            seen.store(true, Ordering::Relaxed);
            return false;
        }
        let Some(status) = &sts.status else {
            return false;
        };
        last(&args)
            && status.observed_generation == sts.metadata.generation
            && status.current_revision == status.update_revision
            && status.updated_replicas == Some(3)
            && status.ready_replicas == Some(3)
    });
    tokio::time::timeout(common::WAIT * 2, done)
        .await
        .expect("both rollouts complete")
        .unwrap();
    admitting.load(Ordering::Relaxed)
}

/// Checks a traffic report of writes that carried the token: none refused, none lost.
async fn assert_none_refused_or_lost(
    what: &str,
    client: &Client,
    report: &common::TrafficReport,
    rolled: Duration,
) {
    let lost = missing(client, &report.acked).await;
    println!(
        "{what}: two rollouts in {rolled:?}; {} writes, {} acknowledged, {} failed (window {:?}), {} lost",
        report.attempts,
        report.acked.len(),
        report.errors.len(),
        report.error_window(),
        lost.len()
    );
    let refused: Vec<_> = report
        .errors
        .iter()
        .filter(|(_, e)| e.to_lowercase().contains("unauthenticated") || e.contains("token"))
        .collect();
    assert_eq!(
        refused,
        Vec::<&(Duration, String)>::new(),
        "{what}: writes with the token refused"
    );
    assert!(
        report.acked.len() > 500,
        "{what}: too little traffic to mean anything"
    );
    assert!(
        lost.is_empty(),
        "{what}, R=2: {} acknowledged keys lost, among them {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

/// Lines of the nodes' logs (local clusters: every pod's container log, restarts
/// included) where a peer refused a node's call for its credentials: handoffs,
/// forwards. None where the pods' logs are not on this machine.
fn refused_peer_calls(env: &Env) -> Option<Vec<String>> {
    let pods = env.state_dir.as_ref()?.join("pods");
    let mut refused = Vec::new();
    for pod in std::fs::read_dir(pods).unwrap() {
        let log = pod.unwrap().path().join("node.log");
        let Ok(text) = std::fs::read_to_string(&log) else {
            continue;
        };
        refused.extend(
            text.lines()
                .filter(|l| l.contains("does not have valid authentication credentials"))
                .map(|l| l.chars().take(300).collect::<String>()),
        );
    }
    Some(refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn turning_auth_on_and_off_rolls_twice_each_way_and_refuses_or_loses_no_write_with_the_token()
{
    let _alone = ONE_AT_A_TIME.lock().await;
    let env = Env::start("auth-rollout").await;
    let name = "guarded";
    let file = env.example(
        "cachecluster-minimal.yaml",
        Some(name),
        serde_json::json!({"replicas": 3, "replicationFactor": 2}),
    );
    env.kubectl(&["apply", "-f", &file]);
    env.wait_ready(name, 3).await;
    env.wait_members(name, 3).await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("guarded-tokens".to_owned()),
            ..Default::default()
        },
        string_data: Some([("token".to_owned(), "app-token\n".to_owned())].into()),
        ..Default::default()
    };
    secrets
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .unwrap();
    // The application holds the token before auth is on (nodes without it ignore it).
    let with_token = Client::builder(format!(
        "dns:///{name}-headless.{}.svc.cluster.local:7000",
        env.ns
    ))
    .dns_server(env.dns)
    .token(Token::new("app-token").unwrap())
    .connect()
    .await
    .unwrap();
    let logs = KeepLogs { env: &env, name };
    let traffic = Traffic::start(with_token.clone(), "auth-on");
    tokio::time::sleep(Duration::from_secs(2)).await; // keys on the open nodes first
    let started = Instant::now();
    env.kubectl(&[
        "patch",
        "cachecluster",
        name,
        "--type=merge",
        "-p",
        r#"{"spec":{"auth":{"secretName":"guarded-tokens","key":"token"}}}"#,
    ]);
    // First a rollout whose nodes also admit tokenless callers (the open nodes they
    // replace), then one that makes every node strict.
    let admitting = two_auth_rollouts(&env, name, |args| {
        args.iter().any(|a| a.starts_with("--auth-token-file"))
    })
    .await;
    let rolled = started.elapsed();
    env.wait_ready(name, 3).await;
    let report = traffic.finish().await;
    assert_none_refused_or_lost("auth on", &with_token, &report, rolled).await;
    assert!(admitting, "the first rollout admits tokenless callers");
    // Strict now: a client without the token is refused.
    let err = env
        .cache(name, false)
        .await
        .get("auth-on:0")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");

    // Off again: first a rollout whose nodes keep the tokens (the strict nodes they
    // replace want them) and admit tokenless callers, then one without tokens.
    let traffic = Traffic::start(with_token.clone(), "auth-off");
    tokio::time::sleep(Duration::from_secs(2)).await; // keys on the strict nodes first
    let started = Instant::now();
    env.kubectl(&[
        "patch",
        "cachecluster",
        name,
        "--type=merge",
        "-p",
        r#"{"spec":{"auth":null}}"#,
    ]);
    let admitting = two_auth_rollouts(&env, name, |args| {
        !args
            .iter()
            .any(|a| a.starts_with("--auth-token-file") || a.starts_with("--peer-token-file"))
    })
    .await;
    let rolled = started.elapsed();
    env.wait_ready(name, 3).await;
    let report = traffic.finish().await;
    assert_none_refused_or_lost("auth off", &with_token, &report, rolled).await;
    assert!(admitting, "the first rollout admits tokenless callers");
    // No node refused another's call at any stage, on or off (in one rollout the
    // open nodes' forwards, replication and handoffs to the strict ones were).
    if let Some(refused) = refused_peer_calls(&env) {
        assert!(
            refused.is_empty(),
            "{} peer calls refused, e.g. {:?}",
            refused.len(),
            &refused[..refused.len().min(3)]
        );
    }
    // Open now: a client without the token is served, and reads what the token's
    // holder wrote.
    let open = env.cache(name, false).await;
    let key = report.acked.first().expect("a write acknowledged");
    assert!(
        open.get(key.clone()).await.unwrap().is_some(),
        "{key} not read back without a token"
    );
    drop(logs);
    env.stop().await;
}

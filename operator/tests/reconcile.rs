#![allow(clippy::unwrap_used)]
//! Reconciliations against a Kubernetes API at the HTTP level (a stateful fake behind
//! kube's tower-test mock): what ends up in the cluster, in the status and in the
//! events when a cluster is created, updated, scaled, drifts, loses an object, is
//! deleted, or asks for something that cannot work.

mod support;

use std::sync::Arc;

use http::Method;
use kcache_crd::status::{AVAILABLE, DEGRADED, PROGRESSING};
use kcache_crd::{CacheCluster, CacheClusterSpec, Phase};
use kcache_operator::controller::{RESYNC_INTERVAL, error_policy, reconcile};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use support::{CLUSTER_PATH, FakeApi};

const STS: &str = "/apis/apps/v1/namespaces/apps/statefulsets/demo";
const HEADLESS: &str = "/api/v1/namespaces/apps/services/demo-headless";
const CLIENT: &str = "/api/v1/namespaces/apps/services/demo";
const ACCOUNT: &str = "/api/v1/namespaces/apps/serviceaccounts/demo";
const ROLE: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/apps/roles/demo";
const BINDING: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/apps/rolebindings/demo";
const PDB: &str = "/apis/policy/v1/namespaces/apps/poddisruptionbudgets/demo";
const POLICY: &str = "/apis/networking.k8s.io/v1/namespaces/apps/networkpolicies/demo";
const MONITOR: &str = "/apis/monitoring.coreos.com/v1/namespaces/apps/servicemonitors/demo";
const RULE: &str = "/apis/monitoring.coreos.com/v1/namespaces/apps/prometheusrules/demo";

fn cluster(spec: Value) -> CacheCluster {
    let spec: CacheClusterSpec = serde_json::from_value(spec).unwrap();
    let mut cc = CacheCluster::new("demo", spec);
    cc.metadata.namespace = Some("apps".into());
    cc.metadata.uid = Some("c1a55e5-0000-4000-8000-000000000001".into());
    cc.metadata.generation = Some(1);
    cc
}

/// What the StatefulSet controller reports for `ready` of `replicas` current pods,
/// having seen the first generation of the StatefulSet's spec.
fn sts_status(replicas: i32, ready: i32) -> Value {
    sts_status_at(1, replicas, ready)
}

fn sts_status_at(generation: i64, replicas: i32, ready: i32) -> Value {
    json!({
        "replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas,
        "currentReplicas": replicas, "availableReplicas": ready, "observedGeneration": generation,
        "currentRevision": "demo-1", "updateRevision": "demo-1",
    })
}

async fn run(fake: &FakeApi, ctx: &Arc<kcache_operator::controller::Context>) -> Action {
    reconcile(Arc::new(fake.cluster()), ctx.clone())
        .await
        .unwrap()
}

fn args(fake: &FakeApi) -> Vec<String> {
    let sts = fake.get(STS).unwrap();
    serde_json::from_value(sts["spec"]["template"]["spec"]["containers"][0]["args"].clone())
        .unwrap()
}

fn condition(cc: &CacheCluster, type_: &str) -> (String, String, String) {
    let c = cc.status.as_ref().unwrap().condition(type_).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn creating_a_cluster_applies_every_owned_object_with_owner_references() {
    let (fake, ctx) = FakeApi::with_cluster(&cluster(json!({})));
    let action = run(&fake, &ctx).await;
    assert_eq!(action, Action::requeue(RESYNC_INTERVAL));
    for path in [ACCOUNT, ROLE, BINDING, HEADLESS, CLIENT, STS, PDB] {
        let object = fake
            .get(path)
            .unwrap_or_else(|| panic!("{path} was not created"));
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "CacheCluster", "{path}");
        assert_eq!(
            owner["uid"], "c1a55e5-0000-4000-8000-000000000001",
            "{path}"
        );
        assert_eq!(owner["controller"], true, "{path}");
    }
    assert!(fake.get(POLICY).is_none() && fake.get(MONITOR).is_none());
    let applies: Vec<_> = fake
        .writes()
        .into_iter()
        .filter(|r| r.method == Method::PATCH)
        .collect();
    assert!(
        applies
            .iter()
            .all(|r| r.query.contains("fieldManager=kcache-operator")
                && r.query.contains("force=true")),
        "every apply uses the one field manager: {applies:?}"
    );
    let reasons = fake.event_reasons();
    assert_eq!(reasons[0].1, "Created", "{reasons:?}");
}

#[tokio::test]
async fn the_status_reports_what_the_statefulset_reports_not_what_was_asked() {
    let (fake, ctx) = FakeApi::with_cluster(&cluster(json!({})));
    run(&fake, &ctx).await;
    let cc = fake.cluster();
    let status = cc.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(status.ready_replicas, 0);
    assert_eq!(
        status.endpoint.as_deref(),
        Some("demo-headless.apps.svc.cluster.local:7000")
    );
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/instance=demo,app.kubernetes.io/name=kcache")
    );
    assert_eq!(condition(&cc, AVAILABLE).0, "False");

    fake.set_statefulset_status(sts_status(3, 3));
    run(&fake, &ctx).await;
    let cc = fake.cluster();
    assert_eq!(cc.status.as_ref().unwrap().phase, Some(Phase::Running));
    assert_eq!(cc.status.as_ref().unwrap().ready_replicas, 3);
    assert_eq!(condition(&cc, AVAILABLE).0, "True");
    assert_eq!(condition(&cc, PROGRESSING).1, "Complete");
    assert!(fake.event_reasons().iter().any(|e| e.1 == "Running"));
}

#[tokio::test]
async fn updating_the_spec_rolls_the_new_flags_into_the_statefulset() {
    let (fake, ctx) = FakeApi::with_cluster(&cluster(json!({"maxMemory": "256Mi"})));
    fake.set_statefulset_status(sts_status(3, 3));
    run(&fake, &ctx).await;
    assert!(args(&fake).contains(&"--max-memory=256MiB".to_owned()));

    fake.edit_spec(|spec| {
        spec["maxMemory"] = json!("1Gi");
        spec["defaultTTL"] = json!("1h");
    });
    fake.clear_log();
    run(&fake, &ctx).await;
    let args = args(&fake);
    assert!(args.contains(&"--max-memory=1GiB".to_owned()), "{args:?}");
    assert!(args.contains(&"--default-ttl=3600s".to_owned()), "{args:?}");
    let cc = fake.cluster();
    assert_eq!(cc.status.as_ref().unwrap().observed_generation, Some(2));
    assert_eq!(
        cc.status.as_ref().unwrap().max_memory.as_deref(),
        Some("1Gi")
    );
    let reasons = fake.event_reasons();
    assert!(
        reasons
            .iter()
            .any(|e| e.1 == "Updated" && e.2.contains("generation 2")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn scaling_changes_the_statefulset_and_the_status_waits_for_the_new_nodes() {
    let (fake, ctx) = FakeApi::with_cluster(&cluster(json!({"replicas": 3})));
    fake.set_statefulset_status(sts_status(3, 3));
    run(&fake, &ctx).await;

    fake.edit_spec(|spec| spec["replicas"] = json!(5));
    run(&fake, &ctx).await;
    assert_eq!(fake.get(STS).unwrap()["spec"]["replicas"], 5);
    let cc = fake.cluster();
    assert_eq!(cc.status.as_ref().unwrap().phase, Some(Phase::Scaling));
    assert_eq!(cc.status.as_ref().unwrap().replicas, 3);
    assert_eq!(condition(&cc, PROGRESSING).1, "ScalingUp");
    assert!(fake.event_reasons().iter().any(|e| e.1 == "Scaling"));

    // The StatefulSet controller catches up with the second generation.
    fake.set_statefulset_status(sts_status_at(2, 5, 5));
    run(&fake, &ctx).await;
    let cc = fake.cluster();
    assert_eq!(cc.status.as_ref().unwrap().phase, Some(Phase::Running));
    assert_eq!(cc.status.as_ref().unwrap().ready_replicas, 5);
}

#[tokio::test]
async fn a_drifted_statefulset_is_put_back() {
    let (fake, ctx) = FakeApi::with_cluster(&cluster(json!({"replicas": 3})));
    run(&fake, &ctx).await;
    let mut drifted = fake.get(STS).unwrap();
    drifted["spec"]["replicas"] = json!(1);
    drifted["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["--discovery=none"]);
    fake.put(STS, drifted);

    run(&fake, &ctx).await;
    let sts = fake.get(STS).unwrap();
    assert_eq!(sts["spec"]["replicas"], 3);
    assert!(args(&fake).contains(&"--discovery=kubernetes".to_owned()));
}

#[tokio::test]
async fn deleted_owned_objects_are_created_again() {
    let (fake, ctx) = FakeApi::with_cluster(&cluster(json!({})));
    run(&fake, &ctx).await;
    for path in [HEADLESS, BINDING, PDB] {
        fake.remove(path);
    }
    run(&fake, &ctx).await;
    for path in [HEADLESS, BINDING, PDB] {
        assert!(fake.get(path).is_some(), "{path} was not restored");
    }
}

#[tokio::test]
async fn a_cluster_being_deleted_is_left_to_the_garbage_collector() {
    let mut cc = cluster(json!({}));
    cc.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let (fake, ctx) = FakeApi::with_cluster(&cc);
    let action = run(&fake, &ctx).await;
    assert_eq!(action, Action::await_change());
    assert!(
        fake.log().is_empty(),
        "nothing is applied or deleted: {:?}",
        fake.log()
    );
}

#[tokio::test]
async fn a_spec_that_cannot_work_is_degraded_with_an_event_naming_the_field() {
    // Admitted by a CRD without the CEL rules (or stored under an older one).
    let (fake, ctx) =
        FakeApi::with_cluster(&cluster(json!({"replicas": 1, "replicationFactor": 2})));
    let action = run(&fake, &ctx).await;
    assert_eq!(
        action,
        Action::requeue(RESYNC_INTERVAL),
        "no fast retry loop"
    );
    let writes = fake.writes();
    assert!(
        writes.iter().all(|r| r.path.ends_with("/status")),
        "nothing but the status is written: {writes:?}"
    );
    let cc = fake.cluster();
    assert_eq!(cc.status.as_ref().unwrap().phase, Some(Phase::Degraded));
    let (status, reason, message) = condition(&cc, DEGRADED);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(message.contains("spec.replicationFactor"), "{message}");
    let warning = fake
        .event_reasons()
        .into_iter()
        .find(|e| e.0 == "Warning")
        .unwrap();
    assert_eq!(warning.1, "InvalidSpec");
    assert!(warning.2.contains("spec.replicationFactor"), "{warning:?}");
    assert_eq!(ctx.metrics.reconciliations("blocked"), 1);

    // Fixing the spec applies it and clears the condition.
    fake.edit_spec(|spec| spec["replicationFactor"] = json!(1));
    run(&fake, &ctx).await;
    assert!(fake.get(STS).is_some());
    assert_eq!(condition(&fake.cluster(), DEGRADED).0, "False");
    assert!(fake.event_reasons().iter().any(|e| e.1 == "Recovered"));
}

#[tokio::test]
async fn an_object_the_api_server_rejects_is_degraded_not_retried_in_a_loop() {
    let (fake, ctx) = FakeApi::with_cluster(&cluster(json!({})));
    fake.reject(
        "/statefulsets/",
        "StatefulSet.apps \"demo\" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: \"2Gi\": must be less than or equal to memory limit",
    );
    let action = run(&fake, &ctx).await;
    assert_eq!(action, Action::requeue(RESYNC_INTERVAL));
    let (status, reason, message) = condition(&fake.cluster(), DEGRADED);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Rejected"));
    assert!(
        message.contains("StatefulSet demo") && message.contains("resources.requests"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unavailable_api_server_is_an_error_retried_with_backoff() {
    let (fake, ctx) = FakeApi::with_cluster(&cluster(json!({})));
    fake.fail_everything();
    let cc = Arc::new(fake.cluster());
    let error = reconcile(cc.clone(), ctx.clone()).await.unwrap_err();
    assert_eq!(error.metric_label(), "server_error");
    let first = error_policy(cc.clone(), &error, ctx.clone());
    assert_ne!(first, Action::await_change());
    assert_ne!(first, Action::requeue(RESYNC_INTERVAL));
    assert_eq!(ctx.metrics.errors("server_error"), 1);
    assert_eq!(ctx.metrics.reconciliations("error"), 1);
    assert!(
        fake.event_reasons()
            .iter()
            .any(|e| e.1 == "ReconcileFailed")
    );
}

#[tokio::test]
async fn monitoring_is_skipped_with_a_warning_when_its_crds_are_absent() {
    let spec = json!({"monitoring": {"serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}}});
    let (fake, ctx) = FakeApi::with_cluster(&cluster(spec));
    run(&fake, &ctx).await;
    assert!(fake.get(MONITOR).is_none() && fake.get(RULE).is_none());
    assert!(
        fake.get(STS).is_some(),
        "the cluster itself is still created"
    );
    let warnings: Vec<_> = fake
        .event_reasons()
        .into_iter()
        .filter(|e| e.1 == "MonitoringUnavailable")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].2.contains("ServiceMonitor and PrometheusRule"),
        "{warnings:?}"
    );
    assert_eq!(condition(&fake.cluster(), DEGRADED).0, "False");
}

#[tokio::test]
async fn monitoring_objects_are_applied_when_their_crds_exist() {
    let spec = json!({"monitoring": {"serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}}});
    let (fake, ctx) = FakeApi::with_cluster(&cluster(spec));
    fake.serve_monitoring();
    run(&fake, &ctx).await;
    assert_eq!(fake.get(MONITOR).unwrap()["kind"], "ServiceMonitor");
    assert_eq!(fake.get(RULE).unwrap()["kind"], "PrometheusRule");
    assert_eq!(
        fake.get(MONITOR).unwrap()["metadata"]["ownerReferences"][0]["name"],
        "demo"
    );
}

#[tokio::test]
async fn turning_an_optional_object_off_deletes_it() {
    let spec = json!({"networkPolicy": {"enabled": true}});
    let (fake, ctx) = FakeApi::with_cluster(&cluster(spec));
    run(&fake, &ctx).await;
    assert!(fake.get(POLICY).is_some() && fake.get(PDB).is_some());

    fake.edit_spec(|spec| {
        spec["networkPolicy"]["enabled"] = json!(false);
        spec["podDisruptionBudget"]["enabled"] = json!(false);
    });
    run(&fake, &ctx).await;
    assert!(fake.get(POLICY).is_none() && fake.get(PDB).is_none());
}

#[tokio::test]
async fn a_cluster_that_did_not_change_is_not_rewritten_or_announced_again() {
    let (fake, ctx) = FakeApi::with_cluster(&cluster(json!({})));
    fake.set_statefulset_status(sts_status(3, 3));
    run(&fake, &ctx).await;
    fake.clear_log();
    run(&fake, &ctx).await;
    assert!(
        !fake.writes().iter().any(|r| r.path.ends_with("/status")),
        "{:?}",
        fake.writes()
    );
    assert!(fake.events().is_empty(), "{:?}", fake.event_reasons());
    assert_eq!(ctx.metrics.reconciliations("success"), 2);
}

#[tokio::test]
async fn the_status_patch_is_a_server_side_apply_of_the_status_alone() {
    let (fake, ctx) = FakeApi::with_cluster(&cluster(json!({})));
    run(&fake, &ctx).await;
    let status_patch = fake
        .log()
        .into_iter()
        .find(|r| r.path == format!("{CLUSTER_PATH}/status"))
        .unwrap();
    assert_eq!(status_patch.method, Method::PATCH);
    assert!(status_patch.query.contains("fieldManager=kcache-operator"));
    assert!(
        fake.get(CLUSTER_PATH).unwrap()["spec"].is_object(),
        "the spec is untouched"
    );
}

/// The stored StatefulSet's status, as its controller would write it.
fn report_statefulset(fake: &FakeApi, status: Value) {
    let mut sts = fake.get(STS).unwrap();
    sts["status"] = status;
    fake.put(STS, sts);
}

#[tokio::test]
async fn turning_auth_off_keeps_the_tokens_for_one_rollout_that_admits_tokenless_callers() {
    const AUTH: &str = "--auth-token-file=/etc/kcache/auth/token";
    const ANONYMOUS: &str = "--auth-accepts-anonymous";
    let (fake, ctx) = FakeApi::with_cluster(&cluster(
        json!({"auth": {"secretName": "tokens", "key": "app"}}),
    ));
    fake.set_statefulset_status(sts_status(3, 3));
    run(&fake, &ctx).await;
    assert!(args(&fake).contains(&AUTH.to_owned()), "{:?}", args(&fake));

    // The fake merges patches into what it holds, replacing arrays: a marker volume
    // added here is gone after the next apply only if that apply names the volumes.
    let mut strict = fake.get(STS).unwrap();
    strict["spec"]["template"]["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "marker", "emptyDir": {}}));
    fake.put(STS, strict);
    fake.edit_spec(|spec| spec["auth"] = Value::Null);
    run(&fake, &ctx).await;
    let retiring = args(&fake);
    assert!(retiring.contains(&AUTH.to_owned()), "{retiring:?}");
    assert!(retiring.contains(&ANONYMOUS.to_owned()), "{retiring:?}");
    assert!(
        retiring.iter().any(|a| a.starts_with("--peer-token-file=")),
        "the new nodes still send the peer token: {retiring:?}"
    );
    assert!(
        !retiring.contains(&"--peer-accepts-app-tokens".to_owned()),
        "{retiring:?}"
    );
    let sts = fake.get(STS).unwrap();
    let volumes = &sts["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["secret"]["secretName"], "tokens", "{volumes}");
    assert_eq!(volumes[0]["secret"]["items"][0]["key"], "app", "{volumes}");
    assert!(
        !volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "marker"),
        "the retiring apply did not name the volumes: {volumes}"
    );

    // Until the StatefulSet controller reports every pod on that template, it stays.
    run(&fake, &ctx).await;
    assert_eq!(args(&fake), retiring);
    let generation = sts["metadata"]["generation"].as_i64().unwrap();
    report_statefulset(&fake, sts_status_at(generation, 3, 3));
    run(&fake, &ctx).await;
    let open = args(&fake);
    assert!(
        !open.iter().any(|a| a.starts_with("--auth-token-file")
            || a.starts_with("--peer-token-file")
            || a == ANONYMOUS),
        "{open:?}"
    );
    // And it stays open.
    report_statefulset(&fake, sts_status_at(generation + 1, 3, 3));
    run(&fake, &ctx).await;
    assert_eq!(args(&fake), open);
}

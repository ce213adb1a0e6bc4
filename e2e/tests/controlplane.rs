//! The real control plane (etcd, kube-apiserver, kube-controller-manager built from the
//! Go modules pinned in e2e/controlplane/go.mod) proves itself real: it reports the
//! pinned release, enforces the CacheCluster CRD's CEL rules and structural pruning,
//! explains the CRD, and its StatefulSet and garbage-collector controllers do their work.
//!
//! The binaries come from KCACHE_CONTROLPLANE_BIN (scripts/test.sh runs build.sh and sets
//! it) or from running build.sh; if neither yields them, the test fails.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kcache_crd::CacheCluster;
use kcache_e2e::controlplane::{Options, RealControlPlane};
use kcache_operator::build::BuildOptions;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

/// How long a controller may take to act: the garbage collector notices a new CRD's
/// kind only at its next discovery resync (every 30 s), the rest act within seconds.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `check` until it returns Ok, for up to `timeout`; panics with the last error.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Runs kubectl as the admin with `args`; Ok(stdout) if it succeeded, Err(stderr) otherwise.
async fn kubectl(cp: &RealControlPlane, args: &[&str]) -> Result<String, String> {
    run(cp.kubectl().args(args), args).await
}

/// Runs kubectl with the credentials in `kubeconfig`.
async fn kubectl_as(
    cp: &RealControlPlane,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(cp.bin_dir.join("kubectl"));
    run(cmd.arg("--kubeconfig").arg(kubeconfig).args(args), args).await
}

async fn run(cmd: &mut tokio::process::Command, args: &[&str]) -> Result<String, String> {
    let out = cmd.output().await.unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(format!(
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Waits until the apiserver reports the CRD `name` Established. Not `kubectl wait`:
/// it fails outright ("accessor error: <nil> is of the type <nil>") when it reads the
/// CRD before the apiserver has written any condition, which CI hit once.
async fn crd_established(cp: &RealControlPlane, name: &str) {
    use kube::runtime::wait::{await_condition, conditions::is_crd_established};
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client().await.unwrap());
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(crds, name, is_crd_established()),
    )
    .await
    .unwrap_or_else(|_| panic!("crd {name} not Established within 60 s"))
    .unwrap();
}

/// The k8s.io/kubernetes version e2e/controlplane/go.mod pins.
fn pinned_version() -> String {
    let go_mod = include_str!("../controlplane/go.mod");
    go_mod
        .lines()
        .find_map(|line| {
            let mut words = line
                .split_whitespace()
                .skip_while(|w| *w != "k8s.io/kubernetes");
            words
                .nth(1)
                .filter(|v| v.starts_with('v'))
                .map(str::to_string)
        })
        .expect("go.mod requires k8s.io/kubernetes")
}

fn clusters(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<CacheCluster>(&()))
}

fn cache_cluster(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "kcache.io/v1alpha1",
        "kind": "CacheCluster",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// Starts a control plane on `host` in a fresh state dir.
async fn start(host: &str) -> RealControlPlane {
    // Kept when the test fails (the logs are in it), removed when it passes.
    let state = tempfile::tempdir().unwrap().keep();
    eprintln!("control plane state and logs: {}", state.display());
    let options = Options::new(&state).host(host.parse().unwrap());
    let cp = RealControlPlane::start(options).await;
    cp.unwrap_or_else(|e| panic!("the real control plane did not start: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_control_plane_reports_its_release_runs_its_controllers_and_enforces_rbac() {
    let cp = start("127.0.0.1").await;
    let client = cp.client().await.unwrap();
    kubectl_reports_the_pinned_release(&cp).await;
    the_statefulset_controller_creates_pods_and_gc_removes_them(&client).await;
    dependents_of_a_custom_resource_are_collected_with_it(&cp, &client).await;
    a_service_account_has_only_the_rights_rbac_grants_it(&cp).await;
    let state = cp.state_dir.clone();
    cp.stop().await;
    std::fs::remove_dir_all(state).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_apiserver_serves_the_cachecluster_crd_and_enforces_its_rules() {
    let cp = start("127.0.0.1").await;
    let client = cp.client().await.unwrap();
    the_crd_installs_and_becomes_established(&cp).await;
    cel_rules_admit_and_reject_as_the_crd_tests_say(&client).await;
    unknown_fields_are_pruned(&client).await;
    the_examples_are_admitted(&cp).await;
    kubectl_explains_the_crd(&cp).await;
    let state = cp.state_dir.clone();
    cp.stop().await;
    std::fs::remove_dir_all(state).unwrap();
}

/// `kcache-operator render` of the production example (every optional object on),
/// applied with kubectl's default strict field validation: each object, ServiceMonitor
/// and PrometheusRule included, must match the real schema field for field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_objects_are_admitted_by_their_real_schemas() {
    // Any loopback address works; the serving certificate names it.
    let cp = start("127.0.0.2").await;
    let crds = cp.prometheus_operator_crds();
    for kind in ["servicemonitors", "prometheusrules"] {
        let file = crds.join(format!("monitoring.coreos.com_{kind}.yaml"));
        let file = file.to_str().unwrap();
        kubectl(&cp, &["apply", "--server-side", "-f", file])
            .await
            .unwrap();
        crd_established(&cp, &format!("{kind}.monitoring.coreos.com")).await;
    }
    let manifest = include_str!("../../examples/cachecluster-production.yaml");
    let objects = kcache_operator::render::render(manifest, &BuildOptions::default()).unwrap();
    let file = cp.state_dir.join("rendered.yaml");
    std::fs::write(&file, objects).unwrap();
    kubectl(&cp, &["create", "namespace", "cache"])
        .await
        .unwrap();
    kubectl(
        &cp,
        &["apply", "--server-side", "-f", file.to_str().unwrap()],
    )
    .await
    .unwrap();
    let listed = kubectl(
        &cp,
        &[
            "get",
            "servicemonitors,prometheusrules",
            "-n",
            "cache",
            "-o",
            "name",
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        [
            "servicemonitor.monitoring.coreos.com/sessions",
            "prometheusrule.monitoring.coreos.com/sessions",
        ],
        "{listed}"
    );
    let state = cp.state_dir.clone();
    cp.stop().await;
    std::fs::remove_dir_all(state).unwrap();
}

async fn kubectl_reports_the_pinned_release(cp: &RealControlPlane) {
    let pinned = pinned_version();
    assert_eq!(cp.version, pinned);
    let version: Value =
        serde_json::from_str(&kubectl(cp, &["version", "-o", "json"]).await.unwrap()).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], json!(pinned));
    assert_eq!(version["clientVersion"]["gitVersion"], json!(pinned));
}

async fn the_crd_installs_and_becomes_established(cp: &RealControlPlane) {
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/cachecluster.yaml");
    kubectl(cp, &["apply", "--server-side", "-f", crd])
        .await
        .unwrap();
    crd_established(cp, "cacheclusters.kcache.io").await;
}

/// The accept/reject pairs of crds/tests/cel_rules.rs (there evaluated by kube's CEL
/// validator), here judged by the apiserver itself.
async fn cel_rules_admit_and_reject_as_the_crd_tests_say(client: &kube::Client) {
    let limits = |memory: Value| json!({"limits": {"memory": memory}});
    let sm = |interval: &str| json!({"serviceMonitor": {"enabled": true, "interval": interval}});
    let admitted = [
        json!({}),
        json!({"replicas": 2, "replicationFactor": 2}),
        json!({"maxMemory": "768Mi", "resources": limits(json!("1Gi"))}),
        // maxMemory above the memory limit is the operator's check, not admission's
        // (a CEL rule reading the int-or-string limit is over the apiserver's cost budget).
        json!({"maxMemory": "2G", "resources": limits(json!("1Gi"))}),
        json!({"maxMemory": "512Mi", "resources": limits(json!(1_073_741_824))}),
        json!({"maxMemory": "8Gi", "resources": {"requests": {"memory": "1Gi"}}}),
        json!({"maxMemory": "1Mi", "maxValueSize": "1Mi"}),
        json!({"maxMemory": "64Mi", "maxValueSize": "64Mi"}),
        json!({"drainTimeout": "5s"}),
        json!({"drainTimeout": "1h"}),
        json!({"drainTimeout": "2m30s"}),
        json!({"defaultTTL": "8760h"}),
        json!({"defaultTTL": "0s"}),
        json!({"podDisruptionBudget": {"minAvailable": 2}}),
        json!({"podDisruptionBudget": {"maxUnavailable": "25%"}}),
        json!({"monitoring": sm("15s")}),
    ];
    let rejected = [
        (
            json!({"replicas": 2, "replicationFactor": 3}),
            "spec.replicationFactor",
            "replicationFactor must not exceed replicas",
        ),
        (
            json!({"replicationFactor": 4}),
            "spec.replicationFactor",
            "replicationFactor must not exceed replicas",
        ),
        (
            json!({"maxMemory": "512Ki"}),
            "spec.maxMemory",
            "maxMemory must be at least 1Mi",
        ),
        (
            json!({"maxMemory": "64Mi", "maxValueSize": "65Mi"}),
            "spec.maxValueSize",
            "maxValueSize must not exceed maxMemory",
        ),
        (
            json!({"maxValueSize": "0"}),
            "spec.maxValueSize",
            "maxValueSize must be at least 1 byte",
        ),
        (
            json!({"drainTimeout": "4s"}),
            "spec.drainTimeout",
            "drainTimeout must be between 5s and 1h",
        ),
        (
            json!({"drainTimeout": "1h1s"}),
            "spec.drainTimeout",
            "drainTimeout must be between 5s and 1h",
        ),
        (
            json!({"defaultTTL": "8761h"}),
            "spec.defaultTTL",
            "defaultTTL must be at most 8760h",
        ),
        (
            json!({"podDisruptionBudget": {"minAvailable": 2, "maxUnavailable": 1}}),
            "spec.podDisruptionBudget",
            "set at most one of minAvailable and maxUnavailable",
        ),
        (
            json!({"monitoring": sm("500ms")}),
            "spec.monitoring.serviceMonitor.interval",
            "interval must be at least 1s",
        ),
    ];
    let api = clusters(client, "default");
    let pp = PostParams::default();
    for (i, spec) in admitted.into_iter().enumerate() {
        let name = format!("admitted-{i}");
        let result = api.create(&pp, &cache_cluster(&name, spec.clone())).await;
        assert!(result.is_ok(), "{spec} was refused: {result:?}");
    }
    for (i, (spec, field, message)) in rejected.into_iter().enumerate() {
        let name = format!("rejected-{i}");
        let status = match api.create(&pp, &cache_cluster(&name, spec.clone())).await {
            Err(kube::Error::Api(status)) => status,
            other => panic!("{spec} should be refused at {field}: {other:?}"),
        };
        assert_eq!(status.code, 422, "{spec}: {status:?}");
        let causes = status
            .details
            .as_ref()
            .map(|d| d.causes.clone())
            .unwrap_or_default();
        assert!(
            causes
                .iter()
                .any(|c| c.field == field && c.message.contains(message)),
            "{spec}: expected {field}: {message:?} among {causes:?}"
        );
        assert!(status.message.contains(field), "{spec}: {}", status.message);
    }
}

async fn unknown_fields_are_pruned(client: &kube::Client) {
    let api = clusters(client, "default");
    let spec = json!({"replicas": 1, "replicationFactor": 1, "notAField": true});
    let created = api
        .create(&PostParams::default(), &cache_cluster("pruned", spec))
        .await
        .unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["replicas"], json!(1));
    assert!(spec.get("notAField").is_none(), "{spec}");
    // And the schema's defaults are applied by the server.
    assert_eq!(spec["drainTimeout"], json!("30s"), "{spec}");
}

async fn the_examples_are_admitted(cp: &RealControlPlane) {
    kubectl(cp, &["create", "namespace", "cache"])
        .await
        .unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    for example in ["cachecluster-minimal.yaml", "cachecluster-production.yaml"] {
        let path = format!("{examples}/{example}");
        kubectl(cp, &["apply", "-f", &path]).await.unwrap();
    }
    let replicas = kubectl(
        cp,
        &[
            "get",
            "cachecluster",
            "sessions",
            "-n",
            "cache",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    )
    .await
    .unwrap();
    assert_eq!(replicas, "5");
}

async fn kubectl_explains_the_crd(cp: &RealControlPlane) {
    // The OpenAPI document of a new CRD is published shortly after it is established.
    let text = eventually(
        "kubectl explain cachecluster.spec",
        Duration::from_secs(60),
        || kubectl(cp, &["explain", "cachecluster.spec"]),
    )
    .await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("KIND:") && l.ends_with("CacheCluster")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("replicationFactor\t")),
        "{text}"
    );
}

async fn the_statefulset_controller_creates_pods_and_gc_removes_them(client: &kube::Client) {
    let ns = "statefulset";
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "serviceName": "web",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
            },
        },
    }))
    .unwrap();
    let set = sets.create(&PostParams::default(), &set).await.unwrap();
    let uid = set.metadata.uid.clone().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("app=web");
    let names = eventually("the StatefulSet's two pods", CONTROLLER_TIMEOUT, || async {
        let list = pods.list(&lp).await.map_err(|e| e.to_string())?;
        let mut names: Vec<String> = list
            .items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        if names.len() == 2 {
            Ok((names, list.items))
        } else {
            Err(format!("pods: {names:?}"))
        }
    })
    .await;
    assert_eq!(names.0, ["web-0", "web-1"]);
    for pod in &names.1 {
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("StatefulSet", uid.as_str(), Some(true))
        );
    }

    sets.delete("web", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        "the garbage collector to delete the pods",
        CONTROLLER_TIMEOUT,
        || async {
            let left = pods.list(&lp).await.map_err(|e| e.to_string())?.items.len();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} pods left"))
            }
        },
    )
    .await;
}

async fn a_service_account_has_only_the_rights_rbac_grants_it(cp: &RealControlPlane) {
    kubectl(cp, &["create", "serviceaccount", "reader"])
        .await
        .unwrap();
    let reader = cp
        .service_account_kubeconfig("default", "reader", Duration::from_secs(600))
        .await
        .unwrap();
    let refused = kubectl_as(cp, &reader, &["get", "pods"]).await.unwrap_err();
    assert!(
        refused
            .contains(r#"User "system:serviceaccount:default:reader" cannot list resource "pods""#),
        "{refused}"
    );
    kubectl(
        cp,
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
        ],
    )
    .await
    .unwrap();
    let bind = ["create", "rolebinding", "reader", "--role=pod-reader"];
    kubectl(
        cp,
        &[&bind[..], &["--serviceaccount=default:reader"]].concat(),
    )
    .await
    .unwrap();
    eventually(
        "the RoleBinding to take effect",
        Duration::from_secs(30),
        || kubectl_as(cp, &reader, &["get", "pods"]),
    )
    .await;
    // Granted list, not delete.
    let out = tokio::process::Command::new(cp.bin_dir.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&reader)
        .args(["auth", "can-i", "delete", "pods"])
        .output()
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert_eq!((out.status.code(), answer.trim()), (Some(1), "no"));
}

/// A minimal CRD of the test's own, so this does not depend on the CacheCluster CRD.
const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.kcache.io
spec:
  group: test.kcache.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object}
"#;

async fn dependents_of_a_custom_resource_are_collected_with_it(
    cp: &RealControlPlane,
    client: &kube::Client,
) {
    let crd = cp.state_dir.join("widget-crd.yaml");
    std::fs::write(&crd, WIDGET_CRD).unwrap();
    kubectl(cp, &["apply", "-f", crd.to_str().unwrap()])
        .await
        .unwrap();
    crd_established(cp, "widgets.test.kcache.io").await;
    let resource = ApiResource {
        group: "test.kcache.io".into(),
        version: "v1".into(),
        api_version: "test.kcache.io/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let owner: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.kcache.io/v1", "kind": "Widget", "metadata": {"name": "owner"},
    }))
    .unwrap();
    let owner = widgets
        .create(&PostParams::default(), &owner)
        .await
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let map: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "owned-by-widget",
            "ownerReferences": [{
                "apiVersion": "test.kcache.io/v1",
                "kind": "Widget",
                "name": "owner",
                "uid": owner.metadata.uid.clone().unwrap(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
    }))
    .unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();
    widgets
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually(
        "the ConfigMap owned by the deleted Widget to go",
        CONTROLLER_TIMEOUT,
        || async {
            match maps.get_opt("owned-by-widget").await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
}

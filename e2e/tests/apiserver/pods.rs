//! The pod-specific paths a kubelet and kubectl use: binding (a second bind is a
//! conflict), graceful deletion (the pod stays, marked, until deleted with grace 0) and
//! the log subresource, served from the local kubelet's log files.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::support::TestServer;
use kcache_e2e::apiserver::Config;

fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "x"}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn a_bound_pod_is_deleted_gracefully_and_its_log_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(Config {
        pod_logs: Some(dir.path().to_path_buf()),
        ..Config::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(&PostParams::default(), &pod()).await.unwrap();

    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
                         "target": {"kind": "Node", "name": "n1"}});
    let _: serde_json::Value = pods
        .create_subresource("binding", "p", &PostParams::default(), &binding)
        .await
        .unwrap();
    let bound = pods.get("p").await.unwrap();
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("n1"));
    let again: Result<serde_json::Value, _> = pods
        .create_subresource("binding", "p", &PostParams::default(), &binding)
        .await;
    assert!(
        matches!(&again, Err(kube::Error::Api(e)) if e.code == 409),
        "{again:?}"
    );

    // The log: the whole file, then its last line.
    let logs = dir.path().join("pods/default_p");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("c.log"), "one\ntwo\nthree\n").unwrap();
    let all = server
        .raw("GET", "/api/v1/namespaces/default/pods/p/log", "", "")
        .await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body, "one\ntwo\nthree\n");
    let tail = server
        .raw(
            "GET",
            "/api/v1/namespaces/default/pods/p/log?tailLines=1",
            "",
            "",
        )
        .await;
    assert_eq!(tail.body, "three\n");
    let wrong = server
        .raw(
            "GET",
            "/api/v1/namespaces/default/pods/p/log?container=nope",
            "",
            "",
        )
        .await;
    assert_eq!(wrong.status, 400);

    // A status write meant for another incarnation of the pod (same name, other uid)
    // is refused, as the real server refuses a uid change.
    let stale = pods
        .patch_status(
            "p",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"metadata": {"uid": "not-this-one"}, "status": {"phase": "Succeeded"}}),
            ),
        )
        .await;
    assert!(
        matches!(&stale, Err(kube::Error::Api(e)) if e.code == 422),
        "{stale:?}"
    );
    assert_ne!(
        pods.get("p")
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase)
            .as_deref(),
        Some("Succeeded")
    );

    // Bound: DELETE marks it and keeps it; grace 0 removes it.
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    let marked = pods.get("p").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());
    server.stop().await;
}

//! Server-side apply through kube-rs: field ownership, conflicts, and the request checks.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::kube_api::{code_reason, widgets};
use crate::support::{TestServer, register_widgets};

#[tokio::test]
async fn apply_creates_and_then_removes_the_fields_its_manager_dropped() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let pp = PatchParams::apply("op");
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"l": "1"}}, "data": {"x": "1", "y": "2"}});
    api.patch("a", &pp, &Patch::Apply(&first)).await.unwrap();
    // Another manager owns `z`; the applier's dropping of `y` must not touch it.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"z": "3"}})),
    )
    .await
    .unwrap();
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}});
    let result = api.patch("a", &pp, &Patch::Apply(&second)).await.unwrap();
    let data = result.data.unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["x", "z"]);
    assert!(result.metadata.labels.is_none_or(|l| l.is_empty()));
    let managers: Vec<String> = result
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"op".to_string()), "{managers:?}");
    server.stop().await;
}

#[tokio::test]
async fn apply_conflicts_with_another_manager_unless_forced() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let config = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"owner": v}});
    api.patch(
        "a",
        &PatchParams::apply("one"),
        &Patch::Apply(config("one")),
    )
    .await
    .unwrap();
    let err = api
        .patch(
            "a",
            &PatchParams::apply("two"),
            &Patch::Apply(config("two")),
        )
        .await
        .unwrap_err();
    assert_eq!(code_reason(err), (409, "Conflict".into()));
    // The same value is shared ownership, not a conflict.
    api.patch(
        "a",
        &PatchParams::apply("two"),
        &Patch::Apply(config("one")),
    )
    .await
    .unwrap();
    let forced = api
        .patch(
            "a",
            &PatchParams::apply("three").force(),
            &Patch::Apply(config("three")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["owner"], "three");
    // Ownership moved: the old owner now conflicts.
    let err = api
        .patch(
            "a",
            &PatchParams::apply("one"),
            &Patch::Apply(config("one")),
        )
        .await
        .unwrap_err();
    assert_eq!(code_reason(err).0, 409);
    server.stop().await;
}

#[tokio::test]
async fn apply_needs_a_field_manager_the_right_type_and_the_url_name() {
    let server = TestServer::start().await;
    let path = "/api/v1/namespaces/default/configmaps/a";
    let apply = "application/apply-patch+yaml";
    let body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n";
    assert_eq!(
        server.raw("PATCH", path, apply, body).await.status,
        422,
        "no fieldManager"
    );
    let wrong_kind = body.replace("kind: ConfigMap", "kind: Secret");
    assert_eq!(
        server
            .raw(
                "PATCH",
                &format!("{path}?fieldManager=m"),
                apply,
                &wrong_kind
            )
            .await
            .status,
        400
    );
    let no_version = body.replace("apiVersion: v1\n", "");
    assert_eq!(
        server
            .raw(
                "PATCH",
                &format!("{path}?fieldManager=m"),
                apply,
                &no_version
            )
            .await
            .status,
        400
    );
    let other_name = body.replace("name: a", "name: b");
    assert_eq!(
        server
            .raw(
                "PATCH",
                &format!("{path}?fieldManager=m"),
                apply,
                &other_name
            )
            .await
            .status,
        400
    );
    let created = server
        .raw("PATCH", &format!("{path}?fieldManager=m"), apply, body)
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        server
            .raw("PATCH", &format!("{path}?fieldManager=m"), apply, body)
            .await
            .status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn apply_to_the_status_of_a_missing_object_is_not_found() {
    let server = TestServer::start().await;
    register_widgets(&server.client()).await;
    let api = widgets(&server.client());
    let status = json!({"apiVersion": "test.kcache.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": {"phase": "Ready"}});
    let err = api
        .patch_status("w", &PatchParams::apply("op"), &Patch::Apply(&status))
        .await
        .unwrap_err();
    assert_eq!(code_reason(err), (404, "NotFound".into()));
    server.stop().await;
}

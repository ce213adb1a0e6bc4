//! CRDs and custom resources: registration, schemas, status and scale subresources.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::json;

use crate::kube_api::{code_reason, widget, widgets};
use crate::support::{TestServer, register_widgets};

#[tokio::test]
async fn the_status_subresource_writes_only_status_and_main_writes_ignore_it() {
    let server = TestServer::start().await;
    register_widgets(&server.client()).await;
    let api = widgets(&server.client());
    let mut w = widget("w", json!({"image": "x"}));
    w.data["status"] = json!({"phase": "Bogus"});
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "create drops status when the subresource is on"
    );
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({"spec": {"image": "ignored"}, "status": {"phase": "Ready", "replicas": 1}});
    let after = api
        .patch_status("w", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        (
            after.data["status"]["phase"].as_str(),
            after.data["spec"]["image"].as_str()
        ),
        (Some("Ready"), Some("x"))
    );
    assert_eq!(
        after.metadata.generation,
        Some(1),
        "a status write does not bump generation"
    );

    let main = json!({"spec": {"replicas": 2}, "status": {"phase": "Ignored"}});
    let after = api
        .patch("w", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .unwrap();
    assert_eq!(after.data["status"]["phase"], "Ready");
    assert_eq!(
        after.metadata.generation,
        Some(2),
        "a spec change bumps generation"
    );
    let same = api
        .patch("w", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version, after.metadata.resource_version,
        "a no-op write is not a write"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_status_endpoint_exists_only_when_the_crd_enables_it() {
    let server = TestServer::start().await;
    let client = server.client();
    let mut crd = crate::support::widget_crd();
    crd["metadata"]["name"] = "gadgets.test.kcache.io".into();
    crd["spec"]["names"] = json!({"kind": "Gadget", "plural": "gadgets"});
    crd["spec"]["versions"][0]
        .as_object_mut()
        .unwrap()
        .remove("subresources");
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::erase::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(&()));
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(crd).unwrap(),
    )
    .await
    .unwrap();
    let path = "/apis/test.kcache.io/v1/namespaces/default/gadgets";
    let gadget = json!({"apiVersion": "test.kcache.io/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"image": "x"}, "status": {"phase": "kept"}});
    let created = server
        .raw("POST", path, "application/json", &gadget.to_string())
        .await
        .json();
    assert_eq!(
        created["status"]["phase"], "kept",
        "without the subresource, status is an ordinary field"
    );
    assert_eq!(
        server
            .raw("GET", &format!("{path}/g/status"), "", "")
            .await
            .status,
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn scale_reads_and_writes_replicas_through_the_crd_paths() {
    let server = TestServer::start().await;
    register_widgets(&server.client()).await;
    let api = widgets(&server.client());
    api.create(
        &PostParams::default(),
        &widget("w", json!({"image": "x", "replicas": 2})),
    )
    .await
    .unwrap();
    api.patch_status(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 2, "selector": "app=w"}})),
    )
    .await
    .unwrap();
    let scale = api.get_scale("w").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=w"));
    api.patch_scale(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    assert_eq!(api.get("w").await.unwrap().data["spec"]["replicas"], 5);
    server.stop().await;
}

#[tokio::test]
async fn statefulset_scale_renders_its_label_selector_as_a_string() {
    let server = TestServer::start().await;
    let api: Api<StatefulSet> = Api::default_namespaced(server.client());
    let sts: StatefulSet = serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {
        "replicas": 1, "serviceName": "s", "selector": {"matchLabels": {"app": "s"}},
        "template": {"metadata": {"labels": {"app": "s"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
    .unwrap();
    api.create(&PostParams::default(), &sts).await.unwrap();
    let scale = api.get_scale("s").await.unwrap();
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=s"));
    let mut wrong = serde_json::to_value(&sts).unwrap();
    wrong["metadata"]["name"] = "t".into();
    wrong["spec"]["replicas"] = "three".into();
    let raw = server
        .raw(
            "POST",
            "/apis/apps/v1/namespaces/default/statefulsets",
            "application/json",
            &wrong.to_string(),
        )
        .await;
    assert_eq!(
        raw.status, 400,
        "a field of the wrong type is refused like the typed decoder does: {}",
        raw.body
    );
    server.stop().await;
}

#[tokio::test]
async fn custom_resources_are_defaulted_pruned_and_validated_against_the_schema() {
    let server = TestServer::start().await;
    register_widgets(&server.client()).await;
    let api = widgets(&server.client());
    let created = api
        .create(
            &PostParams::default(),
            &widget("ok", json!({"image": "x", "unknown": 1})),
        )
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["replicas"], 1, "defaulted");
    assert!(created.data["spec"].get("unknown").is_none(), "pruned");
    for (name, spec) in [
        ("missing", json!({"replicas": 1})),
        ("enum", json!({"image": "x", "policy": "fifo"})),
        ("max", json!({"image": "x", "replicas": 11})),
        ("type", json!({"image": "x", "replicas": "two"})),
    ] {
        let err = api
            .create(&PostParams::default(), &widget(name, spec))
            .await
            .unwrap_err();
        assert_eq!(code_reason(err), (422, "Invalid".into()), "{name}");
    }
    let strict = server
        .raw(
            "POST",
            "/apis/test.kcache.io/v1/namespaces/default/widgets?fieldValidation=Strict",
            "application/json",
            &json!({"apiVersion": "test.kcache.io/v1", "kind": "Widget", "metadata": {"name": "s"}, "spec": {"image": "x", "bogus": 1}}).to_string(),
        )
        .await;
    assert_eq!(strict.status, 400, "{}", strict.body);
    server.stop().await;
}

#[tokio::test]
async fn a_crd_is_established_and_served_at_once() {
    let server = TestServer::start().await;
    let client = server.client();
    register_widgets(&client).await;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("widgets.test.kcache.io").await.unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap();
    for wanted in ["Established", "NamesAccepted"] {
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == wanted && c.status == "True"),
            "{wanted}"
        );
    }
    assert!(
        widgets(&client)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let resources = server
        .raw("GET", "/apis/test.kcache.io/v1", "", "")
        .await
        .json();
    assert_eq!(resources["resources"][0]["name"], "widgets");
    crds.delete("widgets.test.kcache.io", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        server
            .raw(
                "GET",
                "/apis/test.kcache.io/v1/namespaces/default/widgets",
                "",
                ""
            )
            .await
            .status,
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn a_crd_whose_name_does_not_match_its_names_is_invalid() {
    let server = TestServer::start().await;
    let mut crd = crate::support::widget_crd();
    crd["metadata"]["name"] = "wrong.test.kcache.io".into();
    let raw = server
        .raw(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            "application/json",
            &crd.to_string(),
        )
        .await;
    assert_eq!(raw.status, 422, "{}", raw.body);
    server.stop().await;
}

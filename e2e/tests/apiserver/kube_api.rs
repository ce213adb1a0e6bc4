//! Requests as kube-rs' typed and dynamic `Api` sends them: CRUD, preconditions,
//! patches, selectors, namespaces.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

use crate::support::{TestServer, configmap, register_widgets};

pub(crate) fn widgets(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "test.kcache.io".into(),
        version: "v1".into(),
        api_version: "test.kcache.io/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    Api::namespaced_with(client.clone(), "default", &ar)
}

pub(crate) fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "test.kcache.io/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})).unwrap()
}

pub(crate) fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(configmap(name, json!({}))).unwrap()
}

pub(crate) fn code_reason(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn get_opt_of_a_missing_object_is_none_and_a_second_create_already_exists() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    assert!(api.get_opt("a").await.unwrap().is_none());
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    assert!(api.get_opt("a").await.unwrap().is_some());
    assert_eq!(
        code_reason(
            api.create(&PostParams::default(), &cm("a"))
                .await
                .unwrap_err()
        ),
        (409, "AlreadyExists".into())
    );
    server.stop().await;
}

#[tokio::test]
async fn generate_name_makes_a_name_and_a_recreate_gets_a_new_uid() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut generated = cm("");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let created = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = created.metadata.name.clone().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert!(created.metadata.creation_timestamp.is_some());
    let first_uid = created.metadata.uid.clone().unwrap();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let mut again = cm(&name);
    again.metadata.name = Some(name.clone());
    let recreated = api.create(&PostParams::default(), &again).await.unwrap();
    assert_ne!(recreated.metadata.uid.unwrap(), first_uid);
    server.stop().await;
}

#[tokio::test]
async fn creating_in_a_missing_namespace_is_not_found() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "nowhere");
    assert_eq!(
        code_reason(
            api.create(&PostParams::default(), &cm("a"))
                .await
                .unwrap_err()
        )
        .1,
        "NotFound"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_replace_with_a_stale_resource_version_conflicts() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let created = api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let mut fresh = created.clone();
    fresh.data = Some([("k".to_string(), "v2".to_string())].into());
    api.replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let err = api
        .replace("a", &PostParams::default(), &created)
        .await
        .unwrap_err();
    assert_eq!(code_reason(err), (409, "Conflict".into()));
    server.stop().await;
}

#[tokio::test]
async fn a_replace_without_resource_version_is_invalid_for_leases_and_custom_resources() {
    let server = TestServer::start().await;
    let client = server.client();
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {}})).unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(
        code_reason(
            leases
                .replace("l", &PostParams::default(), &lease)
                .await
                .unwrap_err()
        ),
        (422, "Invalid".into())
    );

    register_widgets(&client).await;
    let api = widgets(&client);
    let w = widget("w", json!({"image": "x"}));
    api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(
        code_reason(
            api.replace("w", &PostParams::default(), &w)
                .await
                .unwrap_err()
        ),
        (422, "Invalid".into())
    );

    // ConfigMaps, like most built-ins, allow an unconditional update.
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    cms.replace("a", &PostParams::default(), &cm("a"))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_merge_patch_deletes_with_null_and_takes_resource_version_as_a_precondition() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let created = api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let patch = json!({"data": {"k": null, "n": "1"}, "metadata": {"labels": {"x": "y"}}});
    let patched = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        patched.data.unwrap(),
        [("n".to_string(), "1".to_string())].into()
    );
    let stale = json!({"metadata": {"resourceVersion": created.metadata.resource_version}, "data": {"n": "2"}});
    let err = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&stale))
        .await
        .unwrap_err();
    assert_eq!(code_reason(err), (409, "Conflict".into()));
    server.stop().await;
}

#[tokio::test]
async fn a_failed_json_patch_is_invalid_and_changes_nothing() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/data/k", "value": "changed"},
        {"op": "test", "path": "/data/k", "value": "something else"}
    ]))
    .unwrap();
    let err = api
        .patch("a", &PatchParams::default(), &Patch::Json::<()>(ops))
        .await
        .unwrap_err();
    assert_eq!(code_reason(err), (422, "Invalid".into()));
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "v");
    server.stop().await;
}

#[tokio::test]
async fn strategic_merge_patch_works_for_builtins_and_is_unsupported_for_custom_resources() {
    let server = TestServer::start().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let patch = json!({"data": {"k": "s"}});
    assert_eq!(
        cms.patch("a", &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .unwrap()
            .data
            .unwrap()["k"],
        "s"
    );
    register_widgets(&client).await;
    let api = widgets(&client);
    api.create(&PostParams::default(), &widget("w", json!({"image": "x"})))
        .await
        .unwrap();
    let err = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Strategic(&json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code_reason(err), (415, "UnsupportedMediaType".into()));
    server.stop().await;
}

#[tokio::test]
async fn list_selectors_filter_by_set_based_labels_and_metadata_fields() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "cache")] {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(configmap(name, json!({"tier": tier}))).unwrap(),
        )
        .await
        .unwrap();
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier notin (web,db)"))
                .await
                .unwrap()
        ),
        vec!["c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier,!missing,tier!=db"))
                .await
                .unwrap()
        ),
        vec!["a", "c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        vec!["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.namespace!=default"))
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );
    let err = api
        .list(&ListParams::default().fields("spec.nothing=x"))
        .await
        .unwrap_err();
    assert_eq!(code_reason(err).1, "BadRequest");
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_namespace_deletes_what_is_in_it() {
    let server = TestServer::start().await;
    let client = server.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "gone"}})).unwrap(),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "gone");
    cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    namespaces
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    crate::support::eventually("the namespace's objects are gone", || async {
        server.cluster().store.in_namespace("gone").is_empty()
    })
    .await;
    server.stop().await;
}

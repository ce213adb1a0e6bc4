//! Deletion: finalizers, preconditions, owner-reference garbage collection; and Events.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::Resource;
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use serde_json::json;

use crate::support::{TestServer, configmap, eventually};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(configmap(name, json!({}))).unwrap()
}

fn owned_secret(name: &str, owner: &ConfigMap) -> Secret {
    let mut secret: Secret = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    secret.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    secret
}

#[tokio::test]
async fn a_delete_with_finalizers_marks_the_object_and_completes_when_they_are_removed() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut obj = cm("a");
    obj.metadata.finalizers = Some(vec!["test/hold".into()]);
    api.create(&PostParams::default(), &obj).await.unwrap();
    let pending = api.delete("a", &DeleteParams::default()).await.unwrap();
    let marked = pending
        .left()
        .expect("the object comes back while finalizers remain");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let adding = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["test/hold", "test/new"]}})),
        )
        .await;
    assert!(
        adding.unwrap_err().to_string().contains("Forbidden"),
        "no new finalizers while deleting"
    );
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(
        api.get_opt("a").await.unwrap().is_none(),
        "removing the last finalizer deletes the object"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_immediate_delete_answers_a_success_status_as_built_in_registries_do() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let created = api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let status = api
        .delete("a", &DeleteParams::default())
        .await
        .unwrap()
        .right()
        .expect("a Status, not the object");
    let details = status.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.uid),
        ("a", created.metadata.uid.unwrap())
    );
    server.stop().await;
}

#[tokio::test]
async fn generation_moves_when_the_deletion_timestamp_is_first_set() {
    let server = TestServer::start().await;
    crate::support::register_widgets(&server.client()).await;
    let ar = kube::api::ApiResource {
        group: "test.kcache.io".into(),
        version: "v1".into(),
        api_version: "test.kcache.io/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(server.client(), "default", &ar);
    let w = json!({"apiVersion": "test.kcache.io/v1", "kind": "Widget", "metadata": {"name": "w", "finalizers": ["test/hold"]}, "spec": {"image": "x"}});
    api.create(&PostParams::default(), &serde_json::from_value(w).unwrap())
        .await
        .unwrap();
    let marked = api
        .delete("w", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(marked.metadata.generation, Some(2));
    server.stop().await;
}

#[tokio::test]
async fn the_kube_runtime_finalizer_helper_adds_and_removes_its_finalizer() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let reconcile = |event: FinalizerEvent<ConfigMap>| async move {
        let _ = event;
        Ok::<_, std::convert::Infallible>(Action::await_change())
    };
    // First pass: the helper adds its finalizer with a JSON patch whose `test` of a
    // missing path against null must pass.
    finalizer(
        &api,
        "kcache.io/cleanup",
        Arc::new(api.get("a").await.unwrap()),
        reconcile,
    )
    .await
    .unwrap();
    finalizer(
        &api,
        "kcache.io/cleanup",
        Arc::new(api.get("a").await.unwrap()),
        reconcile,
    )
    .await
    .unwrap();
    assert_eq!(
        api.get("a").await.unwrap().metadata.finalizers.unwrap(),
        vec!["kcache.io/cleanup"]
    );
    api.delete("a", &DeleteParams::default()).await.unwrap();
    finalizer(
        &api,
        "kcache.io/cleanup",
        Arc::new(api.get("a").await.unwrap()),
        reconcile,
    )
    .await
    .unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());
    server.stop().await;
}

#[tokio::test]
async fn delete_preconditions_are_checked() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let wrong = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete("a", &wrong).await.unwrap_err() {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"))
        }
        other => panic!("{other}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let server = TestServer::start().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let owner = cms
        .create(&PostParams::default(), &cm("owner"))
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &owned_secret("dep", &owner))
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    eventually("the dependent is collected", || async {
        secrets.get_opt("dep").await.unwrap().is_none()
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn an_orphaning_delete_keeps_dependents_without_the_owner_reference() {
    let server = TestServer::start().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let owner = cms
        .create(&PostParams::default(), &cm("owner"))
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &owned_secret("dep", &owner))
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::orphan()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let dep = secrets.get("dep").await.unwrap();
    assert!(dep.metadata.owner_references.is_none_or(|r| r.is_empty()));
    server.stop().await;
}

#[tokio::test]
async fn a_foreground_delete_waits_for_dependents_to_go_first() {
    let server = TestServer::start().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let owner = cms
        .create(&PostParams::default(), &cm("owner"))
        .await
        .unwrap();
    let mut held = owned_secret("dep", &owner);
    held.metadata.finalizers = Some(vec!["test/hold".into()]);
    secrets.create(&PostParams::default(), &held).await.unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    cms.delete("owner", &dp).await.unwrap();
    eventually("the dependent is being deleted", || async {
        secrets
            .get("dep")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    assert!(
        cms.get_opt("owner").await.unwrap().is_some(),
        "the owner waits for its dependent"
    );
    secrets
        .patch(
            "dep",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    eventually("the owner goes after its dependent", || async {
        cms.get_opt("owner").await.unwrap().is_none()
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn events_recorded_through_events_k8s_io_are_core_events_too() {
    let server = TestServer::start().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let owner = cms
        .create(&PostParams::default(), &cm("subject"))
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kcache-test".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "Reconciled".into(),
        note: Some("all good".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = owner.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let v1: Api<EventV1> = Api::default_namespaced(client.clone());
    let recorded = v1.list(&Default::default()).await.unwrap().items;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].series.as_ref().map(|s| s.count),
        Some(2),
        "the second publish merge-patched a series"
    );
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client);
    let seen = core
        .list(&kube::api::ListParams::default().fields("involvedObject.name=subject"))
        .await
        .unwrap()
        .items;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].message.as_deref(), Some("all good"));
    assert_eq!(seen[0].reason.as_deref(), Some("Reconciled"));
    server.stop().await;
}

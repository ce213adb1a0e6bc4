//! kube-runtime against the emulator: watchers (list-then-watch and streaming lists),
//! resuming after 410 Expired, reflectors and a Controller with owned objects.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::support::{TestServer, configmap, eventually};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(configmap(name, json!({}))).unwrap()
}

/// Collects a watcher's events into a shared log.
fn spawn_watcher(
    api: Api<ConfigMap>,
    config: watcher::Config,
) -> (
    Arc<parking_lot::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = log.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).boxed();
        while let Some(event) = stream.next().await {
            let line = match event {
                Ok(Event::Init) => "init".to_string(),
                Ok(Event::InitApply(o)) => format!("init-apply {}", o.name_any()),
                Ok(Event::InitDone) => "init-done".to_string(),
                Ok(Event::Apply(o)) => format!(
                    "apply {} {}",
                    o.name_any(),
                    o.data
                        .unwrap_or_default()
                        .get("k")
                        .cloned()
                        .unwrap_or_default()
                ),
                Ok(Event::Delete(o)) => format!("delete {}", o.name_any()),
                Err(e) => format!("error {e}"),
            };
            sink.lock().push(line);
        }
    });
    (log, task)
}

async fn wait_for_line(log: &Arc<parking_lot::Mutex<Vec<String>>>, line: &str) {
    eventually(line, || async { log.lock().iter().any(|l| l == line) }).await;
}

#[tokio::test]
async fn a_watcher_lists_then_sees_changes_and_deletes() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &cm("before"))
        .await
        .unwrap();
    let (log, task) = spawn_watcher(api.clone(), watcher::Config::default());
    wait_for_line(&log, "init-done").await;
    assert!(log.lock().contains(&"init-apply before".to_string()));
    api.create(&PostParams::default(), &cm("after"))
        .await
        .unwrap();
    api.patch(
        "after",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    api.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    wait_for_line(&log, "apply after 2").await;
    wait_for_line(&log, "delete before").await;
    assert!(
        !log.lock().iter().any(|l| l.starts_with("error")),
        "{:?}",
        log.lock()
    );
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_streaming_list_watcher_gets_the_initial_objects_and_then_changes() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &cm("before"))
        .await
        .unwrap();
    let (log, task) = spawn_watcher(api.clone(), watcher::Config::default().streaming_lists());
    wait_for_line(&log, "init-done").await;
    assert_eq!(
        log.lock().as_slice(),
        ["init", "init-apply before", "init-done"]
    );
    api.create(&PostParams::default(), &cm("after"))
        .await
        .unwrap();
    wait_for_line(&log, "apply after v").await;
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn watchers_resume_after_a_forced_410_by_relisting() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &cm("first"))
        .await
        .unwrap();
    let (listing, listing_task) = spawn_watcher(api.clone(), watcher::Config::default());
    let (streaming, streaming_task) =
        spawn_watcher(api.clone(), watcher::Config::default().streaming_lists());
    wait_for_line(&listing, "init-done").await;
    wait_for_line(&streaming, "init-done").await;
    // Writes the watchers have not seen yet, then a compaction: their resume points are
    // gone, every open watch ends, and the resumes are answered with 410 Expired.
    api.create(&PostParams::default(), &cm("second"))
        .await
        .unwrap();
    server.cluster().store.compact();
    api.create(&PostParams::default(), &cm("third"))
        .await
        .unwrap();
    for log in [&listing, &streaming] {
        eventually("a second initial listing after the 410", || async {
            log.lock().iter().filter(|l| *l == "init-done").count() >= 2
        })
        .await;
        let lines = log.lock().clone();
        let relist = lines.iter().rposition(|l| l == "init").unwrap();
        let after: Vec<&String> = lines[relist..].iter().collect();
        for name in ["first", "second", "third"] {
            assert!(
                after.iter().any(|l| **l == format!("init-apply {name}")),
                "{name} in {after:?}"
            );
        }
    }
    listing_task.abort();
    streaming_task.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_reflector_store_mirrors_the_objects() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api.clone(), watcher::Config::default()),
    )
    .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    eventually("the store holds exactly b", || async {
        let mut names: Vec<String> = reader.state().iter().map(|o| o.name_any()).collect();
        names.sort();
        names == ["b"]
    })
    .await;
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_controller_reconciles_and_is_retriggered_by_the_objects_it_owns() {
    let server = TestServer::start().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("app"))
        .await
        .unwrap();

    struct Ctx {
        secrets: Api<Secret>,
        reconciles: AtomicUsize,
    }
    let ctx = Arc::new(Ctx {
        secrets: secrets.clone(),
        reconciles: AtomicUsize::new(0),
    });
    async fn reconcile(obj: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
        ctx.reconciles.fetch_add(1, Ordering::SeqCst);
        let mut secret: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{}-secret", obj.name_any())}, "stringData": {"x": "y"}})).unwrap();
        secret.metadata.owner_references = Some(vec![obj.controller_owner_ref(&()).unwrap()]);
        ctx.secrets
            .patch(
                &secret.name_any(),
                &PatchParams::apply("test-controller").force(),
                &Patch::Apply(&secret),
            )
            .await?;
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<ConfigMap>, _: &kube::Error, _: Arc<Ctx>) -> Action {
        Action::requeue(Duration::from_millis(100))
    }
    let controller = Controller::new(cms.clone(), watcher::Config::default().streaming_lists())
        .owns(secrets.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx.clone())
        .try_for_each(|_| async { Ok(()) });
    let task = tokio::spawn(async move {
        let _ = controller.await;
    });
    eventually("the owned secret exists", || async {
        secrets.get_opt("app-secret").await.unwrap().is_some()
    })
    .await;
    let before = ctx.reconciles.load(Ordering::SeqCst);
    secrets
        .patch(
            "app-secret",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    eventually(
        "a change to the owned secret reconciles the owner",
        || async { ctx.reconciles.load(Ordering::SeqCst) > before },
    )
    .await;
    task.abort();
    server.stop().await;
}

#[tokio::test]
async fn metadata_lists_answer_partial_object_metadata() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let list = api.list_metadata(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("a"));
    server.stop().await;
}

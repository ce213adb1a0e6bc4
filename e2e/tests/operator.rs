//! The operator's controller against the API emulator, with the committed CRD: it
//! creates what a CacheCluster owns, reports status from the StatefulSet, follows
//! scale through the scale subresource, restores what drifted, and everything it
//! created goes when the CacheCluster goes.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kcache_crd::{CacheCluster, Phase};
use kcache_e2e::apiserver::{ApiServer, Config};
use kcache_operator::build::BuildOptions;
use kcache_operator::{RunConfig, run};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Polls `check` until it returns Some, for up to 15 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..150 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_a_cache_cluster_from_create_to_delete() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = ApiServer::new(Config::default()).unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();

    let crd: CustomResourceDefinition =
        serde_yaml::from_str(include_str!("../../crds/cachecluster.yaml")).unwrap();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let clusters: Api<CacheCluster> = Api::namespaced(client.clone(), "default");
    let demo: CacheCluster =
        serde_yaml::from_str(include_str!("../../examples/cachecluster-minimal.yaml")).unwrap();
    clusters
        .create(&PostParams::default(), &demo)
        .await
        .unwrap();

    let (stop, stopped) = watch::channel(false);
    let operator = tokio::spawn(run(
        client.clone(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        RunConfig {
            leader: None,
            options: BuildOptions::default(),
            identity: "e2e".into(),
        },
        stopped,
    ));

    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let sts = eventually("the StatefulSet", || async {
        statefulsets.get_opt("demo").await.unwrap()
    })
    .await;
    assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(3));
    let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CacheCluster", "demo")
    );
    for name in ["demo", "demo-headless"] {
        assert!(
            services.get_opt(name).await.unwrap().is_some(),
            "Service {name}"
        );
    }
    let ns = |c: &kube::Client| c.clone();
    assert!(
        Api::<ServiceAccount>::namespaced(ns(&client), "default")
            .get_opt("demo")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<Role>::namespaced(ns(&client), "default")
            .get_opt("demo")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<RoleBinding>::namespaced(ns(&client), "default")
            .get_opt("demo")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<PodDisruptionBudget>::namespaced(ns(&client), "default")
            .get_opt("demo")
            .await
            .unwrap()
            .is_some()
    );

    // No pod is ready yet (no kubelet here): the status must not claim otherwise.
    let status = eventually("a first status", || async {
        clusters
            .get_status("demo")
            .await
            .unwrap()
            .status
            .filter(|s| s.observed_generation == Some(1))
    })
    .await;
    assert_eq!(status.ready_replicas, 0);
    assert_ne!(status.phase, Some(Phase::Running));
    assert!(status.selector.as_deref().is_some_and(|s| !s.is_empty()));
    assert_eq!(
        status.endpoint.as_deref(),
        Some("demo-headless.default.svc.cluster.local:7000")
    );

    // The StatefulSet reports three ready pods: so does the CacheCluster.
    statefulsets
        .patch_status(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                "currentReplicas": 3, "updatedReplicas": 3, "observedGeneration": sts.metadata.generation}})),
        )
        .await
        .unwrap();
    let status = eventually("three ready replicas in the status", || async {
        let status = clusters.get_status("demo").await.unwrap().status?;
        (status.ready_replicas == 3).then_some(status)
    })
    .await;
    let available = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .unwrap();
    assert_eq!(available.status, "True", "{available:?}");
    assert_eq!(status.phase, Some(Phase::Running));

    // kubectl scale goes through the scale subresource.
    clusters
        .patch_scale(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    eventually("the StatefulSet scaled to 5", || async {
        let sts = statefulsets.get("demo").await.unwrap();
        (sts.spec?.replicas == Some(5)).then_some(())
    })
    .await;

    // An owned object deleted by hand comes back.
    services
        .delete("demo-headless", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the headless Service restored", || async {
        services.get_opt("demo-headless").await.unwrap()
    })
    .await;

    // Deleting the CacheCluster takes what it owned with it.
    clusters
        .delete("demo", &DeleteParams::default())
        .await
        .unwrap();
    eventually("owned objects collected", || async {
        let sts = statefulsets.get_opt("demo").await.unwrap();
        let svc = services.get_opt("demo").await.unwrap();
        (sts.is_none() && svc.is_none()).then_some(())
    })
    .await;

    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), operator)
        .await
        .expect("the operator stops")
        .unwrap()
        .unwrap();
}

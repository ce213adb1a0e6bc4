//! The node's Kubernetes membership source against the API emulator: EndpointSlices
//! of the headless Service become members, changes arrive, and a watch that breaks
//! and relists (410 Expired) never drops members on the way.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kcache_client::placement::View;
use kcache_e2e::apiserver::{ApiServer, Config};
use kcache_node::cluster::kubernetes::watch_members;
use kube::api::{Api, Patch, PatchParams, PostParams};
use parking_lot::Mutex;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

fn slice(name: &str, service: &str, pods: &[(&str, &str, bool)]) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 7000, "protocol": "TCP"}],
        "endpoints": pods.iter().map(|(pod, ip, ready)| json!({
            "addresses": [ip],
            "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"},
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn ids(view: &View) -> Vec<&str> {
    view.members().iter().map(|m| m.id.as_str()).collect()
}

async fn until(rx: &mut watch::Receiver<Arc<View>>, what: &str, want: &[&str]) {
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|view| ids(view) == want),
    )
    .await
    .is_ok();
    assert!(
        waited,
        "{what}: never saw {want:?}, last {:?}",
        ids(&rx.borrow())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_endpoints_are_members_through_changes_and_a_forced_relist() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = ApiServer::new(Config::default()).unwrap();
    tokio::spawn(server.clone().serve(listener, std::future::pending()));
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    slices
        .create(
            &pp,
            &slice(
                "demo-a",
                "demo-headless",
                &[("demo-0", "10.0.0.1", true), ("demo-1", "10.0.0.2", true)],
            ),
        )
        .await
        .unwrap();
    // Another Service's endpoints are not members.
    slices
        .create(
            &pp,
            &slice(
                "other-a",
                "other-headless",
                &[("other-0", "10.0.9.1", true)],
            ),
        )
        .await
        .unwrap();

    let (tx, mut rx) = watch::channel(Arc::new(View::default()));
    tokio::spawn(watch_members(client, "default", "demo-headless", 7000, tx));
    until(&mut rx, "initial list", &["demo-0", "demo-1"]).await;
    assert_eq!(rx.borrow().members()[0].address, "10.0.0.1:7000");

    // Every view published from now on, to catch a spurious drop.
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn({
        let (mut rx, seen) = (rx.clone(), seen.clone());
        async move {
            while rx.changed().await.is_ok() {
                let view = rx.borrow_and_update().clone();
                seen.lock()
                    .push(ids(&view).iter().map(|s| s.to_string()).collect::<Vec<_>>());
            }
        }
    });

    let ready = |pods: &[(&str, &str, bool)]| {
        Patch::Merge(serde_json::to_value(slice("demo-a", "demo-headless", pods)).unwrap())
    };
    let params = PatchParams::default();
    slices
        .patch(
            "demo-a",
            &params,
            &ready(&[
                ("demo-0", "10.0.0.1", true),
                ("demo-1", "10.0.0.2", true),
                ("demo-2", "10.0.0.3", true),
            ]),
        )
        .await
        .unwrap();
    until(
        &mut rx,
        "a pod became ready",
        &["demo-0", "demo-1", "demo-2"],
    )
    .await;
    slices
        .patch(
            "demo-a",
            &params,
            &ready(&[
                ("demo-0", "10.0.0.1", true),
                ("demo-1", "10.0.0.2", false),
                ("demo-2", "10.0.0.3", true),
            ]),
        )
        .await
        .unwrap();
    until(&mut rx, "a pod turned unready", &["demo-0", "demo-2"]).await;

    // The API server forgets the watch's resume point: the watch gets 410 Expired and
    // relists. Members stay until the relist says otherwise.
    server.cluster().store.compact();
    slices
        .create(
            &pp,
            &slice("demo-b", "demo-headless", &[("demo-3", "10.0.0.4", true)]),
        )
        .await
        .unwrap();
    until(
        &mut rx,
        "a second slice after the relist",
        &["demo-0", "demo-2", "demo-3"],
    )
    .await;
    slices.delete("demo-b", &Default::default()).await.unwrap();
    until(&mut rx, "the second slice removed", &["demo-0", "demo-2"]).await;

    let seen = seen.lock();
    assert!(
        seen.iter().all(|view| view.len() >= 2),
        "a published view dropped members: {seen:?}"
    );
}

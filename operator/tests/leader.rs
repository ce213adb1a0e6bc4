#![allow(clippy::unwrap_used)]
//! Leader election through kube-lease-manager against the HTTP-level fake API: the
//! work runs only while the lease is held, and the lease is released afterwards so
//! a standby takes over at once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kcache_crd::{CacheCluster, CacheClusterSpec};
use kcache_operator::Metrics;
use kcache_operator::leader::{LeaderElection, run_as_leader};
use serde_json::json;
use support::FakeApi;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/apps/leases/kcache-operator";

fn election() -> LeaderElection {
    LeaderElection {
        lease_name: "kcache-operator".into(),
        namespace: "apps".into(),
        identity: "operator-0".into(),
    }
}

fn fake() -> (FakeApi, kube::Client) {
    let (fake, ctx) =
        FakeApi::with_cluster(&CacheCluster::new("demo", CacheClusterSpec::default()));
    (fake, ctx.client.clone())
}

#[tokio::test]
async fn the_work_runs_while_holding_the_lease_which_is_released_afterwards() {
    let (fake, client) = fake();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let metrics = Metrics::new();
    let ran = Arc::new(AtomicBool::new(false));
    let (probe, seen) = (fake.clone(), ran.clone());
    let leader_gauge = metrics.clone();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        run_as_leader(
            client,
            &election(),
            &metrics,
            shutdown,
            move || async move {
                let lease = probe.get(LEASE).unwrap();
                assert_eq!(lease["spec"]["holderIdentity"], "operator-0");
                assert!(leader_gauge.render().contains("kcache_operator_leader 1"));
                seen.store(true, Ordering::SeqCst);
                Ok(())
            },
        ),
    )
    .await
    .unwrap();
    result.unwrap();
    assert!(ran.load(Ordering::SeqCst));
    let lease = fake.get(LEASE).unwrap();
    assert!(
        lease["spec"].get("holderIdentity").is_none(),
        "released: {lease}"
    );
    assert!(metrics.render().contains("kcache_operator_leader 0"));
}

#[tokio::test]
async fn a_standby_never_runs_the_work_and_stops_on_shutdown() {
    let (fake, client) = fake();
    let renewed = k8s_openapi::jiff::Timestamp::now().to_string();
    fake.put(
        LEASE,
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kcache-operator", "namespace": "apps", "resourceVersion": "1"},
            "spec": {"holderIdentity": "operator-1", "leaseDurationSeconds": 3600,
                     "acquireTime": renewed, "renewTime": renewed},
        }),
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let metrics = Metrics::new();
    let election = election();
    let standby = run_as_leader(client, &election, &metrics, shutdown, || async {
        panic!("a standby must not reconcile")
    });
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.send(true).unwrap();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(standby, stopper)
    })
    .await
    .unwrap();
    result.unwrap();
    assert_eq!(
        fake.get(LEASE).unwrap()["spec"]["holderIdentity"],
        "operator-1"
    );
}

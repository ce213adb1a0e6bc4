//! Leader election with kube-lease-manager: its mutual exclusion rests on server-side
//! apply conflicts, so this is where field ownership must be right.

use std::sync::Arc;
use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use parking_lot::Mutex;

use crate::support::TestServer;

async fn contender(client: kube::Client, identity: &str) -> LeaseManager {
    LeaseManagerBuilder::new(client, "kcache-operator")
        .with_namespace("default")
        .with_identity(identity)
        .with_duration(2)
        .with_grace(1)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn two_lease_managers_never_lead_together_and_hand_over_when_the_leader_leaves() {
    let server = TestServer::start().await;
    let a = contender(server.client(), "a").await;
    let b = contender(server.client(), "b").await;
    let (mut a_rx, a_task) = a.watch().await;
    let (mut b_rx, b_task) = b.watch().await;
    let leaders = Arc::new(Mutex::new((false, false)));
    let violations = Arc::new(Mutex::new(0usize));

    // Each side's belief is recorded as it changes; both true at once is a violation.
    let record = |side: usize, leaders: Arc<Mutex<(bool, bool)>>, violations: Arc<Mutex<usize>>| {
        move |value: bool| {
            let mut l = leaders.lock();
            if side == 0 {
                l.0 = value
            } else {
                l.1 = value
            }
            if l.0 && l.1 {
                *violations.lock() += 1;
            }
        }
    };
    let on_a = record(0, leaders.clone(), violations.clone());
    let on_b = record(1, leaders.clone(), violations.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        tokio::select! {
            Ok(()) = a_rx.changed() => on_a(*a_rx.borrow_and_update()),
            Ok(()) = b_rx.changed() => on_b(*b_rx.borrow_and_update()),
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    let (a_leads, b_leads) = *leaders.lock();
    assert!(
        a_leads ^ b_leads,
        "exactly one leader: a={a_leads} b={b_leads}"
    );
    assert_eq!(*violations.lock(), 0);

    // The leader leaves (dropping its channel releases the lease); the other takes over.
    let (leader_rx, mut follower_rx, leader_task, follower_task) = if a_leads {
        (a_rx, b_rx, a_task, b_task)
    } else {
        (b_rx, a_rx, b_task, a_task)
    };
    drop(leader_rx);
    leader_task.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(6), async {
        while !*follower_rx.borrow_and_update() {
            follower_rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the follower becomes leader after the release");
    drop(follower_rx);
    follower_task.await.unwrap().unwrap();
    server.stop().await;
}

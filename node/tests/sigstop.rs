//! A member frozen by SIGSTOP while a client writes, R=2, static membership: every call
//! is answered by the node before the client's own deadline (peers' deadlines bound
//! it), only writes the frozen member coordinates fail and only while it is frozen,
//! reads keep finding every acknowledged key, and once it thaws anti-entropy brings it
//! what it missed: no acknowledged write is missing from any of its owners.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::time::{Duration, Instant};

use common::process::{Process, client, members, spawn};
use kcache_client::placement::{Member, View};
use kcache_client::proto::{GetRequest, SetRequest};
use kcache_node::service::{HOP_HEADER, PROBE};

/// The client's deadline: longer than any peer deadline in the node, so a call the
/// client times out is one the node left hanging.
const DEADLINE: Duration = Duration::from_secs(4);

fn signal(process: &Process, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &process.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}

#[derive(Debug)]
struct Write {
    key: String,
    value: String,
    frozen: bool,
    result: Result<(), tonic::Status>,
    took: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_holds_no_call_past_its_deadline_and_catches_up_after_it_thaws() {
    let (specs, peers) = members(3);
    let processes: Vec<Process> = specs
        .iter()
        .map(|s| spawn(s, &peers, &["--anti-entropy-interval", "500ms"]))
        .collect();
    let view = View::new(
        specs
            .iter()
            .map(|s| Member {
                id: s.id.clone(),
                address: s.grpc_addr(),
            })
            .collect(),
    );
    let mut writer = client(&specs[0]).await;
    for spec in &specs[1..] {
        client(spec).await;
    }
    let frozen_id = specs[1].id.clone();

    let mut writes: Vec<Write> = Vec::new();
    let mut reads_missing = Vec::new();
    let started = Instant::now();
    let mut frozen = false;
    let mut candidates = (0..).map(|n| format!("frozen-{n:05}"));
    for i in 0.. {
        let elapsed = started.elapsed();
        if !frozen && elapsed > Duration::from_secs(2) && elapsed < Duration::from_secs(6) {
            signal(&processes[1], "-STOP");
            frozen = true;
        }
        if frozen && elapsed >= Duration::from_secs(6) {
            signal(&processes[1], "-CONT");
            frozen = false;
        }
        if elapsed >= Duration::from_secs(8) {
            break;
        }
        // Keys alternate between ones the frozen member is the primary of and others,
        // so the freeze always meets both kinds: only a few writes fit in it, as each
        // of the first kind waits out its deadline.
        let primary_frozen = i % 2 == 0;
        let key = candidates
            .by_ref()
            .find(|k| (view.owners(k.as_bytes(), 1)[0].id == frozen_id) == primary_frozen)
            .unwrap();
        let value = format!("value-{i}");
        let mut request = tonic::Request::new(SetRequest {
            key: key.clone().into_bytes().into(),
            value: value.clone().into_bytes().into(),
            ..SetRequest::default()
        });
        request.set_timeout(DEADLINE);
        let call = Instant::now();
        let result = writer.set(request).await.map(|_| ());
        writes.push(Write {
            key,
            value,
            frozen,
            result,
            took: call.elapsed(),
        });
        // Every acknowledged key so far stays readable (a sample, to keep the pace).
        if let Some(w) = writes
            .iter()
            .rev()
            .find(|w| w.result.is_ok())
            .filter(|_| i % 5 == 0)
        {
            let mut request = tonic::Request::new(GetRequest {
                key: w.key.clone().into_bytes().into(),
            });
            request.set_timeout(DEADLINE);
            match writer.get(request).await {
                Ok(reply) if reply.get_ref().found => {}
                other => reads_missing.push((w.key.clone(), frozen, format!("{other:?}"))),
            }
        }
    }
    if frozen {
        signal(&processes[1], "-CONT");
    }

    let slowest = writes.iter().map(|w| w.took).max().unwrap();
    let failed: Vec<&Write> = writes.iter().filter(|w| w.result.is_err()).collect();
    eprintln!(
        "{} writes, {} during the freeze, {} failed, slowest answer {slowest:?}",
        writes.len(),
        writes.iter().filter(|w| w.frozen).count(),
        failed.len()
    );
    assert!(
        slowest < DEADLINE,
        "a call waited for the client's deadline"
    );
    assert!(
        reads_missing.is_empty(),
        "reads that missed: {reads_missing:?}"
    );
    for w in &failed {
        let primary = &view.owners(w.key.as_bytes(), 2)[0].id;
        assert!(
            w.frozen && *primary == frozen_id,
            "{} failed outside the freeze or on another primary: {:?}",
            w.key,
            w.result
        );
    }
    assert!(
        writes.iter().any(|w| w.frozen && w.result.is_ok()),
        "writes the frozen member only replicates went on"
    );

    // Thawed: every acknowledged write reaches all its owners.
    let acked: Vec<&Write> = writes.iter().filter(|w| w.result.is_ok()).collect();
    let mut owners = Vec::new();
    for spec in &specs {
        owners.push((spec.id.clone(), client(spec).await));
    }
    let converged = async {
        loop {
            let mut missing = 0;
            for w in &acked {
                for owner in view.owners(w.key.as_bytes(), 2) {
                    let (_, node) = owners.iter_mut().find(|(id, _)| *id == owner.id).unwrap();
                    let mut request = tonic::Request::new(GetRequest {
                        key: w.key.clone().into_bytes().into(),
                    });
                    request.metadata_mut().insert(
                        HOP_HEADER,
                        tonic::metadata::MetadataValue::from_static(PROBE),
                    );
                    let reply = node.get(request).await.unwrap().into_inner();
                    missing +=
                        usize::from(!reply.found || reply.value.as_ref() != w.value.as_bytes());
                }
            }
            if missing == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let thawed = Instant::now();
    tokio::time::timeout(Duration::from_secs(40), converged)
        .await
        .expect("every acknowledged write on both its owners within 40 s of the thaw");
    eprintln!(
        "{} acknowledged writes on both owners {:?} after the thaw",
        acked.len(),
        thawed.elapsed()
    );
    drop(processes);
}

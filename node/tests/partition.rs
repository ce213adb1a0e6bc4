//! A member cut off from its peers by a network partition while clients still reach
//! every member: three node processes, each in its own network namespace on a bridge
//! (tests/common/netns.rs), R=2, static membership. Member 2 drops every packet to and
//! from members 0 and 1 for four seconds (silently, as a broken network does: no
//! reset, no refusal) while a client writes through all three and deletes keys through
//! the cut-off one.
//!
//! Promised: no call outlives its deadline; only calls whose coordinator and key's
//! primary are on opposite sides of the cut fail, and only while it lasts; once the
//! network heals, every acknowledged write is on both its owners and no acknowledged
//! delete comes back, with no membership change (anti-entropy's work), and calls
//! across the former cut succeed again.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns;
use common::process::{Process, client};
use kcache_client::placement::{Member, View};
use kcache_client::proto::cache_client::CacheClient;
use kcache_client::proto::{DeleteRequest, GetRequest, SetRequest};
use kcache_node::service::{HOP_HEADER, PROBE};
use tonic::transport::Channel;

/// The client's deadline: longer than any peer deadline in the node, so a call the
/// client times out is one the node left hanging.
const DEADLINE: Duration = Duration::from_secs(4);
/// The member the partition cuts off.
const CUT: usize = 2;
/// When the cut starts and ends, and when the client stops, from the first write.
const CUT_AT: Duration = Duration::from_secs(2);
const HEAL_AT: Duration = Duration::from_secs(6);
const STOP_AT: Duration = Duration::from_secs(12);
/// How soon after the heal calls across it succeed again: the peer connections' TCP
/// retransmissions, backed off while every packet was dropped, resume by then.
const RECOVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Call {
    key: String,
    /// The member the client sent it to.
    via: usize,
    /// The key's primary.
    primary: usize,
    /// When it started, from the first write.
    at: Duration,
    took: Duration,
    result: Result<(), tonic::Status>,
}

impl Call {
    fn crosses_the_cut(&self) -> bool {
        (self.via == CUT) != (self.primary == CUT)
    }

    /// Whether the call met the cut: it ended after the cut began, and started before
    /// calls across it had recovered.
    fn during_the_cut(&self, cut: Duration, recovered: Duration) -> bool {
        self.at + self.took >= cut && self.at < recovered
    }
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(DEADLINE);
    request
}

/// The key's value in `node`'s own store (a probe: no forwarding, no read-through).
async fn held(node: &mut CacheClient<Channel>, key: &str) -> Option<Vec<u8>> {
    let mut request = timed(GetRequest {
        key: key.as_bytes().to_vec().into(),
    });
    request.metadata_mut().insert(
        HOP_HEADER,
        tonic::metadata::MetadataValue::from_static(PROBE),
    );
    let reply = node.get(request).await.unwrap().into_inner();
    reply.found.then(|| reply.value.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_from_its_peers_holds_no_call_past_its_deadline_and_converges_after_healing()
 {
    if !netns::isolated(
        "a_member_cut_off_from_its_peers_holds_no_call_past_its_deadline_and_converges_after_healing",
    ) {
        return;
    }
    let (specs, peers) = netns::network(3);
    let processes: Vec<Process> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| netns::spawn(i, s, &peers, &["--anti-entropy-interval", "500ms"]))
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
    let primary = {
        let (view, ids) = (
            view.clone(),
            specs.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        );
        Arc::new(move |key: &str| -> usize {
            let id = &view.owners(key.as_bytes(), 2)[0].id;
            ids.iter().position(|i| i == id).unwrap()
        })
    };
    let mut nodes = Vec::new();
    for spec in &specs {
        nodes.push(client(spec).await);
    }

    // Keys the cut-off member will delete: every other one is its own (no cut stops
    // that delete), the rest cross the cut.
    let doomed: Vec<String> = (0..)
        .map(|i| format!("doomed-{i:03}"))
        .scan(0, |own, key| {
            let wanted = *own % 2 == 0;
            if (primary(&key) == CUT) == wanted {
                *own += 1;
                Some(Some(key))
            } else {
                Some(None)
            }
        })
        .flatten()
        .take(30)
        .collect();
    for key in &doomed {
        nodes[0]
            .set(timed(SetRequest {
                key: key.clone().into_bytes().into(),
                value: b"doomed".to_vec().into(),
                ..SetRequest::default()
            }))
            .await
            .unwrap();
    }

    // Keys on both their owners before the cut: every one has an owner on the
    // majority side, so reads there keep finding them all through the cut.
    let settled: Vec<String> = (0..60).map(|i| format!("settled-{i:02}")).collect();
    for key in &settled {
        nodes[0]
            .set(timed(SetRequest {
                key: key.clone().into_bytes().into(),
                value: key.clone().into_bytes().into(),
                ..SetRequest::default()
            }))
            .await
            .unwrap();
    }

    let others: Vec<&str> = specs
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != CUT)
        .map(|(_, s)| s.ip.as_str())
        .collect();
    // One writer per member, so calls the cut slows down hold up no other member's.
    let started = Instant::now();
    // Besides, the cut-off member writes keys it is the primary of, which no cut stops
    // and which its other writer, held up a deadline at a time across the cut, seldom
    // reaches.
    let writers: Vec<_> = [(0, 0..3), (1, 0..3), (2, 0..3), (CUT, CUT..CUT + 1)]
        .into_iter()
        .enumerate()
        .map(|(writer, (via, primaries))| {
            let (mut node, mut reader) = (nodes[via].clone(), nodes[(via + 1) % 3].clone());
            let primary = primary.clone();
            tokio::spawn(async move {
                let (mut writes, mut bad_reads) = (Vec::new(), Vec::new());
                for n in 0.. {
                    let at = started.elapsed();
                    if at >= STOP_AT {
                        break;
                    }
                    // Each member in turn is the key's primary, so every pair of
                    // (coordinator, primary) meets the cut.
                    let wanted = primaries.start + n % primaries.len();
                    let key = (0..)
                        .map(|salt| format!("partition-{writer}-{n:05}-{salt}"))
                        .find(|key| primary(key) == wanted)
                        .unwrap();
                    let call = Instant::now();
                    let result = node
                        .set(timed(SetRequest {
                            key: key.clone().into_bytes().into(),
                            value: key.clone().into_bytes().into(),
                            ..SetRequest::default()
                        }))
                        .await
                        .map(|_| ());
                    let acked = result.is_ok();
                    writes.push(Call {
                        primary: primary(&key),
                        key: key.clone(),
                        via,
                        at,
                        took: call.elapsed(),
                        result,
                    });
                    // A read through the next member: never a wrong value; a miss or
                    // an error only for a key written under the cut, or for a reader
                    // cut off from both owners.
                    if acked && n % 4 == 0 {
                        let reader_id = (via + 1) % 3;
                        let call = Instant::now();
                        let reply = reader
                            .get(timed(GetRequest {
                                key: key.clone().into_bytes().into(),
                            }))
                            .await;
                        let (written_under_cut, reader_cut) = (
                            at + Duration::from_secs(1) >= CUT_AT && at < HEAL_AT + RECOVERY,
                            reader_id == CUT,
                        );
                        let read_under_cut = started.elapsed() >= CUT_AT && at < HEAL_AT + RECOVERY;
                        match reply {
                            Ok(r)
                                if r.get_ref().found
                                    && r.get_ref().value.as_ref() == key.as_bytes() => {}
                            Ok(r) if r.get_ref().found => {
                                bad_reads.push(format!("{key}: wrong value"))
                            }
                            _ if written_under_cut || reader_cut && read_under_cut => {}
                            other => bad_reads.push(format!(
                                "{key} through member {reader_id} after {:?}: {other:?}",
                                call.elapsed()
                            )),
                        }
                    }
                }
                (writes, bad_reads)
            })
        })
        .collect();
    // The cut-off member deletes keys through the cut, in a task of its own: deletes
    // across it take a deadline each, which would starve that member's writes.
    let cut_in_place = Arc::new(tokio::sync::Notify::new());
    let deleter = {
        let (mut node, primary) = (nodes[CUT].clone(), primary.clone());
        let cut_in_place = cut_in_place.clone();
        tokio::spawn(async move {
            cut_in_place.notified().await;
            let mut deletes = Vec::new();
            for key in doomed {
                let at = started.elapsed();
                if at >= HEAL_AT {
                    break;
                }
                let call = Instant::now();
                let result = node
                    .delete(timed(DeleteRequest {
                        key: key.clone().into_bytes().into(),
                        if_version: None,
                    }))
                    .await
                    .map(|_| ());
                deletes.push(Call {
                    primary: primary(&key),
                    key,
                    via: CUT,
                    at,
                    took: call.elapsed(),
                    result,
                });
            }
            deletes
        })
    };
    let majority_reader = {
        let mut readers = [nodes[0].clone(), nodes[1].clone()];
        tokio::spawn(async move {
            tokio::time::sleep_until((started + CUT_AT + Duration::from_millis(100)).into()).await;
            let mut missed = Vec::new();
            let mut reads = 0;
            'cut: loop {
                for (i, key) in settled.iter().enumerate() {
                    if started.elapsed() >= HEAL_AT {
                        break 'cut;
                    }
                    let call = Instant::now();
                    let reply = readers[i % 2]
                        .get(timed(GetRequest {
                            key: key.clone().into_bytes().into(),
                        }))
                        .await;
                    reads += 1;
                    match reply {
                        Ok(r)
                            if r.get_ref().found
                                && r.get_ref().value.as_ref() == key.as_bytes() => {}
                        other => missed.push(format!(
                            "{key} through member {} after {:?}: {other:?}",
                            i % 2,
                            call.elapsed()
                        )),
                    }
                }
            }
            (reads, missed)
        })
    };
    // The cut, as the packet filters hold it: from when they are all in place to when
    // they start to go.
    tokio::time::sleep_until((started + CUT_AT).into()).await;
    let addresses: Vec<String> = others.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let others: Vec<&str> = addresses.iter().map(String::as_str).collect();
        netns::cut_off(CUT, &others);
    })
    .await
    .unwrap();
    let cut_at = started.elapsed();
    cut_in_place.notify_one();
    tokio::time::sleep_until((started + HEAL_AT).into()).await;
    let heal_at = started.elapsed();
    tokio::task::spawn_blocking(|| netns::heal(CUT))
        .await
        .unwrap();
    let (mut writes, mut bad_reads) = (Vec::new(), Vec::new());
    for writer in writers {
        let (w, r) = writer.await.unwrap();
        writes.extend(w);
        bad_reads.extend(r);
    }
    let deletes = deleter.await.unwrap();

    let (majority_reads, missed) = majority_reader.await.unwrap();
    eprintln!("{majority_reads} reads on the majority side during the cut");
    assert!(
        missed.is_empty(),
        "reads on the majority side that missed a key it holds: {missed:#?}"
    );
    let calls = || writes.iter().chain(&deletes);
    // Calls across the former cut work again from the first one that succeeded after
    // the heal.
    let recovered = calls()
        .filter(|c| c.crosses_the_cut() && c.at >= heal_at && c.result.is_ok())
        .map(|c| c.at)
        .min()
        .expect("a call across the former cut succeeded before the client stopped");
    let failed: Vec<&Call> = calls().filter(|c| c.result.is_err()).collect();
    let slowest = calls().map(|c| c.took).max().unwrap();
    eprintln!(
        "cut from {cut_at:?} to {heal_at:?}; {} writes ({} during the cut), {} deletes through \
         the cut-off member, {} failed; calls across it succeeded again {:?} after the heal; \
         slowest answer {slowest:?}",
        writes.len(),
        writes
            .iter()
            .filter(|c| c.at >= cut_at && c.at < heal_at)
            .count(),
        deletes.len(),
        failed.len(),
        recovered - heal_at,
    );
    if std::env::var_os("KCACHE_TEST_VERBOSE").is_some() {
        for c in calls().filter(|c| c.during_the_cut(cut_at, recovered)) {
            eprintln!("{c:?}");
        }
    }
    assert!(
        slowest < DEADLINE,
        "a call waited for the client's deadline"
    );
    assert!(
        recovered - heal_at < RECOVERY,
        "calls across the former cut failed for {:?} after the heal",
        recovered - heal_at
    );
    assert!(bad_reads.is_empty(), "reads that failed: {bad_reads:#?}");
    for call in &failed {
        // Codes a client retries or reports as the owner's silence, never CANCELLED
        // (tonic's own timeout, passed on, reads as "someone gave up").
        let code = call.result.as_ref().unwrap_err().code();
        assert!(
            matches!(
                code,
                tonic::Code::DeadlineExceeded | tonic::Code::Unavailable
            ),
            "{call:?} failed with {code:?}"
        );
        assert!(
            call.crosses_the_cut() && call.during_the_cut(cut_at, recovered),
            "{call:?} failed, though its coordinator and primary were on one side of the \
             cut or it was not there"
        );
    }
    let under_cut = |c: &&Call| c.at >= cut_at && c.at + c.took < heal_at;
    for side in [true, false] {
        assert!(
            writes
                .iter()
                .filter(under_cut)
                .any(|c| (c.via == CUT) == side && !c.crosses_the_cut() && c.result.is_ok()),
            "writes on {} side of the cut went on during it",
            if side { "the cut-off" } else { "the other" }
        );
    }
    assert!(
        deletes.iter().filter(under_cut).any(|c| c.result.is_ok()),
        "deletes the cut-off member coordinates went on during the cut"
    );

    // Healed: every acknowledged write on both its owners, no acknowledged delete back.
    let acked: Vec<&Call> = writes.iter().filter(|c| c.result.is_ok()).collect();
    let gone: Vec<&Call> = deletes.iter().filter(|c| c.result.is_ok()).collect();
    let healed_at = Instant::now();
    let converged = async {
        loop {
            let mut wrong = 0;
            for call in &acked {
                for owner in view.owners(call.key.as_bytes(), 2) {
                    let node = specs.iter().position(|s| s.id == owner.id).unwrap();
                    let value = held(&mut nodes[node], &call.key).await;
                    wrong += usize::from(value.as_deref() != Some(call.key.as_bytes()));
                }
            }
            for call in &gone {
                for node in &mut nodes {
                    wrong += usize::from(held(node, &call.key).await.is_some());
                }
            }
            if wrong == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(40), converged)
        .await
        .expect("acknowledged writes on both owners, acknowledged deletes gone, within 40 s");
    eprintln!(
        "{} acknowledged writes on both owners and {} deletes held {:?} after the client \
         stopped",
        acked.len(),
        gone.len(),
        healed_at.elapsed()
    );

    // Calls across the former cut work again, in both directions.
    for (via, node) in nodes.iter_mut().enumerate() {
        for n in 0..30 {
            let key = format!("after-{via}-{n:02}");
            node.set(timed(SetRequest {
                key: key.clone().into_bytes().into(),
                value: key.into_bytes().into(),
                ..SetRequest::default()
            }))
            .await
            .unwrap_or_else(|e| panic!("a write through member {via} after healing: {e}"));
        }
    }
    drop(processes);
}

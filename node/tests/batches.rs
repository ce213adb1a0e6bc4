//! Batches past validation: a MultiSet that fails for some items reports each item's
//! outcome and never fails as a whole after writing part of the batch; a MultiGet's
//! reply is bounded however often a key repeats.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use common::TestNode;
use common::cluster::Cluster;
use kcache_client::placement::View;
use kcache_client::proto::{
    GetRequest, MultiGetRequest, MultiSetRequest, SetRequest, cache_client::CacheClient,
};
use kcache_node::store::Limits;
use tonic::Code;

fn set(key: &str, value: &[u8]) -> SetRequest {
    SetRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.to_vec().into(),
        ..SetRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_set_that_fails_for_some_items_reports_each_and_keeps_the_rest() {
    // Node 1 takes smaller values than node 0, which validates the batch: node 1's
    // items fail only after node 0 has written its own.
    let cluster = Cluster::new(1);
    let a = cluster.start(0, 0).await;
    let cluster = cluster.with_limits(Limits {
        max_value_size: 1 << 10,
        ..Limits::default()
    });
    let b = cluster.start(1, 0).await;
    let nodes = [a, b];
    cluster.publish(&nodes);
    for node in &nodes {
        node.ready().await;
    }
    let view = View::new(nodes.iter().map(|n| n.member()).collect());
    let owner = |key: &str| view.owners(key.as_bytes(), 1)[0].id.clone();
    let keys: Vec<String> = (0..20).map(|i| format!("batch-{i}")).collect();
    assert!(keys.iter().any(|k| owner(k) == nodes[0].id));
    assert!(keys.iter().any(|k| owner(k) == nodes[1].id));
    let big = vec![b'x'; 2 << 10];
    let items = keys.iter().map(|k| set(k, &big)).collect();

    let mut client = CacheClient::new(nodes[0].channel());
    let results = client
        .multi_set(MultiSetRequest { items })
        .await
        .expect("a batch partly written is not a failed call")
        .into_inner()
        .results;
    assert_eq!(results.len(), keys.len());
    for (key, result) in keys.iter().zip(&results) {
        let found = client
            .get(GetRequest {
                key: key.as_bytes().to_vec().into(),
            })
            .await
            .unwrap()
            .into_inner()
            .found;
        if owner(key) == nodes[0].id {
            assert!(result.stored && result.error.is_none(), "{key}: {result:?}");
            assert!(found, "{key} was reported stored");
        } else {
            let error = result.error.as_ref().expect("the item failed");
            assert_eq!(error.code, Code::InvalidArgument as i32, "{key}: {error:?}");
            assert!(error.message.contains("1024"), "{}", error.message);
            assert!(!result.stored && !found, "{key}");
        }
    }
}

#[tokio::test]
async fn a_multi_get_of_one_key_many_times_is_bounded_by_its_reply_size() {
    let node = TestNode::start(Limits::default()).await;
    let mut client = node.raw().await.max_decoding_message_size(64 << 20);
    client.set(set("big", &vec![b'x'; 1 << 20])).await.unwrap();
    let keys = vec![bytes::Bytes::from_static(b"big"); 100];
    let err = client
        .multi_get(MultiGetRequest { keys })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        // Refused as the reply grows past the limit (the 65th copy), not once built.
        err.message().contains("at least 68157440 bytes")
            && err.message().contains("the limit is 67108864"),
        "{}",
        err.message()
    );
    // Within the bound the same key repeats fine.
    let keys = vec![bytes::Bytes::from_static(b"big"); 10];
    let values = client
        .multi_get(MultiGetRequest { keys })
        .await
        .unwrap()
        .into_inner()
        .values;
    assert!(values.iter().all(|v| v.found && v.value.len() == 1 << 20));
    node.stop().await;
}

//! A pipeline through a node that owns none of its keys: each command is forwarded,
//! and a command still sees the effect of every earlier command on its key.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

mod common;

use common::cluster::{Cluster, Node};
use kcache_client::placement::View;
use kcache_client::proto::{
    Command, GetRequest, SetRequest, TopologyRequest, cache_client::CacheClient, command, reply,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_after_a_set_of_its_key_in_one_pipeline_reads_that_set() {
    let cluster = Cluster::new(1);
    let nodes = vec![cluster.start(0, 0).await, cluster.start(1, 0).await];
    for node in &nodes {
        node.ready().await;
    }
    cluster.publish(&nodes);
    let mut client = CacheClient::new(nodes[0].channel());
    let view = View::new(nodes.iter().map(Node::member).collect());
    let topology = client
        .topology(TopologyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(topology.epoch, view.epoch());
    // Keys the other node owns, each set then read, then set again and read again.
    let keys: Vec<String> = (0..)
        .map(|i| format!("piped-{i}"))
        .filter(|k| view.owners(k.as_bytes(), 1)[0].id == nodes[1].id)
        .take(1_000)
        .collect();
    let mut commands = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        for round in 0..2 {
            let value = format!("{key}/{round}");
            commands.push(command::Op::Set(SetRequest {
                key: key.as_bytes().to_vec().into(),
                value: value.into_bytes().into(),
                ..SetRequest::default()
            }));
            commands.push(command::Op::Get(GetRequest {
                key: keys[i].as_bytes().to_vec().into(),
            }));
        }
    }
    let commands: Vec<Command> = commands
        .into_iter()
        .enumerate()
        .map(|(id, op)| Command {
            id: id as u64,
            op: Some(op),
        })
        .collect();
    let replies = client
        .pipeline(tokio_stream::iter(commands))
        .await
        .unwrap()
        .into_inner();
    let replies: Vec<_> = tokio_stream::StreamExt::collect::<Vec<_>>(replies).await;
    let mut stale = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        for round in 0..2 {
            let at = (i * 2 + round) * 2 + 1;
            let Some(reply::Result::Get(got)) = &replies[at].as_ref().unwrap().result else {
                panic!("reply {at}: {:?}", replies[at]);
            };
            if got.value.as_ref() != format!("{key}/{round}").as_bytes() {
                stale.push(format!("{key}/{round}"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{} of {} reads missed the set before them, e.g. {:?}",
        stale.len(),
        keys.len() * 2,
        &stale[..stale.len().min(3)]
    );
    cluster.publish(&[]);
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

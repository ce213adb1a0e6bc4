//! The client's balancing against real nodes: round robin over the A records of a
//! headless-Service name served by a DNS server on loopback, re-resolution, moving on
//! past a dead node, and smart routing straight to a key's owner.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::proto::op::{Message, MessageType, OpCode};
use hickory_resolver::proto::rr::{RData, Record, RecordType, rdata::A};
use kcache_client::placement::{Member, View};
use kcache_client::{Client, SetOptions};
use kcache_node::server::{Discovery, NodeConfig, serve};
use kcache_node::store::Limits;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{oneshot, watch};

const NAME: &str = "demo-headless.default.svc.cluster.local";

/// A DNS server on loopback that answers A queries for any name with `records`.
async fn dns_server(records: Arc<Mutex<Vec<Ipv4Addr>>>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
            reply.metadata.authoritative = true;
            reply.metadata.recursion_desired = query.metadata.recursion_desired;
            for q in &query.queries {
                reply.add_query(q.clone());
                if q.query_type() == RecordType::A {
                    for ip in records.lock().iter() {
                        reply.add_answer(Record::from_rdata(q.name().clone(), 0, RData::A(A(*ip))));
                    }
                }
            }
            let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
        }
    });
    addr
}

struct Node {
    grpc: SocketAddr,
    admin: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), kcache_node::server::Error>>,
}

impl Node {
    async fn metric(&self, name: &str) -> f64 {
        let mut stream = TcpStream::connect(self.admin).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Listeners on the same port of 127.0.0.{first..first+n} (A records carry no port),
/// each with an admin listener beside it.
async fn listeners(first: u8, n: u8) -> Vec<(TcpListener, TcpListener)> {
    for _ in 0..50 {
        let probe = std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, first), 0)).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut bound = Vec::new();
        for i in 0..n {
            let ip = Ipv4Addr::new(127, 0, 0, first + i);
            match TcpListener::bind((ip, port)).await {
                Ok(grpc) => bound.push((grpc, TcpListener::bind((ip, 0)).await.unwrap())),
                Err(_) => break,
            }
        }
        if bound.len() == n as usize {
            return bound;
        }
    }
    panic!("no port free on every address");
}

fn start(id: &str, grpc: TcpListener, admin: TcpListener, discovery: Discovery) -> Node {
    let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel();
    let config = NodeConfig {
        discovery,
        ..NodeConfig::single(id, Limits::default())
    };
    let task = tokio::spawn(serve(config, grpc, admin, async {
        let _ = stopped.await;
    }));
    Node {
        grpc: grpc_addr,
        admin: admin_addr,
        stop,
        task,
    }
}

fn ips(nodes: &[Node]) -> Vec<Ipv4Addr> {
    nodes
        .iter()
        .map(|n| match n.grpc.ip() {
            std::net::IpAddr::V4(ip) => ip,
            other => panic!("{other}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly_over_the_a_records_and_follows_changes() {
    let nodes: Vec<Node> = listeners(30, 3)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, (grpc, admin))| start(&format!("rr-{i}"), grpc, admin, Discovery::None))
        .collect();
    let records = Arc::new(Mutex::new(ips(&nodes)));
    let dns = dns_server(records.clone()).await;
    let port = nodes[0].grpc.port();
    let client = Client::builder(format!("dns:///{NAME}:{port}"))
        .dns_server(dns)
        .connect()
        .await
        .unwrap();
    assert_eq!(client.addresses().len(), 3);

    const REQUESTS: usize = 3_000;
    for i in 0..REQUESTS {
        client.get(format!("k{i}")).await.unwrap();
    }
    for node in &nodes {
        let share = node.metric("kcache_misses_total").await / REQUESTS as f64;
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.05,
            "{} took {share:.3}",
            node.grpc
        );
    }

    // A pod leaves the Service: after a refresh no request goes to it.
    records.lock().pop();
    client.refresh().await.unwrap();
    assert_eq!(client.addresses().len(), 2);
    let before = nodes[2].metric("kcache_misses_total").await;
    for i in 0..300 {
        client.get(format!("k{i}")).await.unwrap();
    }
    assert_eq!(nodes[2].metric("kcache_misses_total").await, before);
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_costs_a_retry_not_a_failed_call() {
    let mut nodes: Vec<Node> = listeners(40, 3)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, (grpc, admin))| start(&format!("dead-{i}"), grpc, admin, Discovery::None))
        .collect();
    let dns = dns_server(Arc::new(Mutex::new(ips(&nodes)))).await;
    let client = Client::builder(format!("dns:///{NAME}:{}", nodes[0].grpc.port()))
        .dns_server(dns)
        .connect()
        .await
        .unwrap();
    nodes.pop().unwrap().stop().await;
    for i in 0..60 {
        client
            .set(format!("k{i}"), "v", SetOptions::default())
            .await
            .unwrap();
    }
    for node in nodes {
        node.stop().await;
    }
}

async fn forwarded(nodes: &[Node]) -> f64 {
    let mut total = 0.0;
    for node in nodes {
        total += node.metric("kcache_forwarded_requests_total").await;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_mode_sends_each_key_straight_to_its_owner() {
    let bound = listeners(50, 3).await;
    let members: Vec<Member> = bound
        .iter()
        .enumerate()
        .map(|(i, (grpc, _))| Member {
            id: format!("smart-{i}"),
            address: grpc.local_addr().unwrap().to_string(),
        })
        .collect();
    let (views, rx) = watch::channel(Arc::new(View::new(members)));
    let nodes: Vec<Node> = bound
        .into_iter()
        .enumerate()
        .map(|(i, (grpc, admin))| {
            start(
                &format!("smart-{i}"),
                grpc,
                admin,
                Discovery::Watch(rx.clone()),
            )
        })
        .collect();
    let dns = dns_server(Arc::new(Mutex::new(ips(&nodes)))).await;
    let address = format!("dns:///{NAME}:{}", nodes[0].grpc.port());

    let smart = Client::builder(&address)
        .dns_server(dns)
        .smart(true)
        .connect()
        .await
        .unwrap();
    for i in 0..300 {
        smart
            .set(format!("k{i}"), "v", SetOptions::default())
            .await
            .unwrap();
        assert!(smart.get(format!("k{i}")).await.unwrap().is_some());
    }
    assert_eq!(
        forwarded(&nodes).await,
        0.0,
        "smart calls need no forwarding"
    );

    let plain = Client::builder(&address)
        .dns_server(dns)
        .connect()
        .await
        .unwrap();
    for i in 0..300 {
        assert!(plain.get(format!("k{i}")).await.unwrap().is_some());
    }
    // Round robin lands on a non-owner about two times in three.
    assert!(forwarded(&nodes).await > 100.0);
    // The pods leave the Service, then stop (otherwise each would try to hand its
    // keys to the others until its drain timeout).
    views.send_replace(Arc::new(View::default()));
    futures::future::join_all(nodes.into_iter().map(Node::stop)).await;
}

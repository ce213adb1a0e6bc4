//! TLS, mutual TLS and tokens on real sockets: who is turned away and with what
//! message, rotation of every file without a restart (waiting on the reload counter,
//! never on a sleep), and a cluster whose peers authenticate to each other.
#![allow(clippy::unwrap_used)]

mod pki;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kcache_client::placement::{Member, View};
use kcache_client::proto::{SyncRequest, peer_client::PeerClient};
use kcache_client::{Client, ConnectOptions, Connection, Error, SetOptions, Tls, Token};
use kcache_node::cluster::WriteAck;
use kcache_node::security::{SecurityConfig, TlsFiles};
use kcache_node::server::{Discovery, NodeConfig, serve};
use kcache_node::store::Limits;
use pki::{Ca, SecretDir, tls_secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Files are checked this often in these tests, so a reload is seen within a tick.
const RELOAD: Duration = Duration::from_millis(50);
/// The longest any awaited event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

struct SecureNode {
    grpc: SocketAddr,
    admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), kcache_node::server::Error>>,
}

impl SecureNode {
    async fn start(id: &str, security: SecurityConfig, cluster: Option<(&Cluster, usize)>) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(id, grpc, admin, security, cluster)
    }

    fn serve(
        id: &str,
        grpc: TcpListener,
        admin: TcpListener,
        security: SecurityConfig,
        cluster: Option<(&Cluster, usize)>,
    ) -> Self {
        let (grpc_addr, admin_addr) = (grpc.local_addr().unwrap(), admin.local_addr().unwrap());
        let mut config = NodeConfig {
            security,
            ..NodeConfig::single(id, Limits::default())
        };
        if let Some((cluster, replication)) = cluster {
            config.discovery = Discovery::Watch(cluster.views.subscribe());
            config.replication = replication;
            config.write_ack = WriteAck::All;
        }
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(config, grpc, admin, async {
            let _ = stopped.await;
        }));
        Self {
            grpc: grpc_addr,
            admin: admin_addr,
            stop: Some(stop),
            task,
        }
    }

    fn member(&self, id: &str) -> Member {
        Member {
            id: id.to_owned(),
            address: self.grpc.to_string(),
        }
    }

    async fn metrics(&self) -> String {
        let mut stream = TcpStream::connect(self.admin).await.unwrap();
        let request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    /// The value of the sample whose name and labels are `series`, 0 when absent.
    async fn metric(&self, series: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until `series` reaches `value`: the event the test is about happened.
    async fn wait_for(&self, series: &str, value: u64) {
        let wait = async {
            while self.metric(series).await < value {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(PATIENCE, wait).await.is_err() {
            panic!(
                "{series} did not reach {value} within {PATIENCE:?}; it is {}",
                self.metric(series).await
            );
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the node stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

/// Members as an EndpointSlice would publish them.
struct Cluster {
    views: watch::Sender<Arc<View>>,
}

fn tls_reloads(result: &str) -> String {
    format!("kcache_credential_reloads_total{{credential=\"tls\",result=\"{result}\"}}")
}

fn outdated(credential: &str) -> String {
    format!("kcache_credentials_outdated{{credential=\"{credential}\"}}")
}

fn token_reloads(result: &str) -> String {
    format!("kcache_credential_reloads_total{{credential=\"token\",result=\"{result}\"}}")
}

fn tls_files(secret: &SecretDir, mutual: bool) -> TlsFiles {
    TlsFiles {
        cert: secret.file("tls.crt"),
        key: secret.file("tls.key"),
        client_ca: mutual.then(|| secret.file("ca.crt")),
        peer_ca: Some(secret.file("ca.crt")),
    }
}

fn security(tls: Option<TlsFiles>, token_file: Option<&Path>) -> SecurityConfig {
    SecurityConfig {
        tls,
        token_file: token_file.map(Path::to_path_buf),
        peer_token_file: None,
        peer_accepts_app_tokens: false,
        auth_accepts_anonymous: false,
        peer_server_name: None,
        reload_interval: RELOAD,
    }
}

/// A client of one node, without retries, so each call is one attempt.
async fn client(node: &SecureNode, tls: Option<Tls>, token: Option<&str>) -> Client {
    let mut builder = Client::builder(node.grpc.to_string()).retries(0);
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    if let Some(token) = token {
        builder = builder.token(Token::new(token).unwrap());
    }
    builder.connect().await.unwrap()
}

/// A client that speaks TLS 1.2 only, trusts `ca` and presents no certificate.
fn tls12_trusting(ca: &Ca) -> Tls {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls::from_config(config)
}

fn trusting(ca: &Ca) -> Tls {
    let dir = SecretDir::new(&[("ca.crt", &ca.pem())]);
    Tls::from_pem_files(&dir.file("ca.crt"), None).unwrap()
}

fn presenting(ca: &Ca, identity: &pki::Identity) -> Tls {
    let dir = SecretDir::new(&[
        ("ca.crt", &ca.pem()),
        ("tls.crt", &identity.cert),
        ("tls.key", &identity.key),
    ]);
    let identity = (dir.file("tls.crt"), dir.file("tls.key"));
    Tls::from_pem_files(&dir.file("ca.crt"), Some((&identity.0, &identity.1))).unwrap()
}

/// The error of one GET, which must fail.
async fn get_error(client: &Client) -> Error {
    match client.get("k").await {
        Ok(value) => panic!("expected a refusal, got {value:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_plaintext_client_of_a_tls_node_is_told_to_use_tls() {
    let ca = Ca::new("kcache test CA");
    let secret = tls_secret(&ca.issue("node", &["127.0.0.1", "localhost"]), &ca);
    let node = SecureNode::start("a", security(Some(tls_files(&secret, false)), None), None).await;

    let plain = client(&node, None, None).await;
    let err = get_error(&plain).await;
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    assert!(
        err.to_string().contains("requires TLS; connect with TLS"),
        "{err}"
    );
    node.wait_for(
        "kcache_tls_handshake_failures_total{reason=\"plaintext\"}",
        1,
    )
    .await;

    let tls = client(&node, Some(trusting(&ca)), None).await;
    tls.set("k", "over tls", SetOptions::default())
        .await
        .unwrap();
    let value = tls.get("k").await.unwrap().unwrap();
    assert_eq!(value.value, "over tls");
    node.stop().await;
}

#[tokio::test]
async fn a_client_that_trusts_another_ca_refuses_the_node_at_the_handshake() {
    let ca = Ca::new("kcache test CA");
    let secret = tls_secret(&ca.issue("node", &["127.0.0.1"]), &ca);
    let node = SecureNode::start("a", security(Some(tls_files(&secret, false)), None), None).await;

    let other = Ca::new("someone else's CA");
    let err = get_error(&client(&node, Some(trusting(&other)), None).await).await;
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("TLS handshake with 127.0.0.1:"),
        "{message}"
    );
    assert!(message.contains("UnknownIssuer"), "{message}");

    // The right CA but a name the certificate does not carry.
    let named = trusting(&ca).with_server_name("elsewhere.example").unwrap();
    let err = get_error(&client(&node, Some(named), None).await).await;
    assert!(
        err.to_string()
            .contains("certificate not valid for name \"elsewhere.example\""),
        "{err}"
    );
    node.stop().await;
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let ca = Ca::new("kcache test CA");
    let secret = tls_secret(&ca.issue("node", &["127.0.0.1"]), &ca);
    let node = SecureNode::start("a", security(Some(tls_files(&secret, true)), None), None).await;

    // No client certificate: TLS 1.3 finishes the client's side of the handshake
    // before the node checks, so the refusal arrives as the node's alert.
    // No request reached the node: neither UNKNOWN (maybe applied) nor UNAVAILABLE
    // (worth retrying elsewhere).
    let err = get_error(&client(&node, Some(trusting(&ca)), None).await).await;
    assert!(
        err.to_string().contains("CertificateRequired"),
        "{err} ({:?})",
        err.code()
    );
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");

    // A certificate from another CA.
    let other = Ca::new("someone else's CA");
    let stranger = presenting(&ca, &other.issue("client", &["client.example"]));
    let err = get_error(&client(&node, Some(stranger), None).await).await;
    assert!(err.to_string().contains("UnknownCA"), "{err}");
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");

    // Under TLS 1.2 the node refuses during the handshake itself: the same answer.
    let err = get_error(&client(&node, Some(tls12_trusting(&ca)), None).await).await;
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");

    node.wait_for(
        "kcache_tls_handshake_failures_total{reason=\"handshake\"}",
        3,
    )
    .await;

    let member = presenting(&ca, &ca.issue("client", &["client.example"]));
    let admitted = client(&node, Some(member), None).await;
    admitted.set("k", "v", SetOptions::default()).await.unwrap();
    assert_eq!(admitted.get("k").await.unwrap().unwrap().value, "v");
    node.stop().await;
}

/// The name every node's certificate carries, which nodes check each other against
/// (the operator's `<name>-headless.<namespace>.svc`).
const PEERS: &str = "kcache-headless.test.svc";

#[tokio::test]
async fn with_mutual_tls_the_peer_service_answers_only_nodes_certificates() {
    let ca = Ca::new("kcache test CA");
    let node_identity = ca.issue("kcache", &["127.0.0.1", PEERS]);
    let secret = tls_secret(&node_identity, &ca);
    let config = SecurityConfig {
        peer_server_name: Some(PEERS.into()),
        ..security(Some(tls_files(&secret, true)), None)
    };
    let node = SecureNode::start("a", config, None).await;
    let sync = |tls: Tls| {
        let connection = Connection::new(
            node.grpc.to_string(),
            ConnectOptions {
                tls: Some(tls),
                ..ConnectOptions::default()
            },
        );
        async move {
            PeerClient::new(connection)
                .sync(SyncRequest {
                    member_id: "b".into(),
                })
                .await
        }
    };

    // An application's certificate, from the same CA: the cache is its to use, the
    // Peer service (which dumps the whole store) is not.
    let application = presenting(&ca, &ca.issue("client", &["client.example"]));
    let app = client(&node, Some(application.clone()), None).await;
    // A key member b will own once it joins: what a Sync for b streams.
    let joined = View::new(
        ["a", "b"]
            .map(|id| Member {
                id: id.into(),
                address: String::new(),
            })
            .to_vec(),
    );
    let key = (0..)
        .map(|i| format!("k-{i}"))
        .find(|k| joined.owners(k.as_bytes(), 1)[0].id == "b")
        .unwrap();
    app.set(key.clone(), "v", SetOptions::default())
        .await
        .unwrap();
    let status = sync(application).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status}");
    assert!(status.message().contains(PEERS), "{status}");
    node.wait_for("kcache_peer_calls_refused_total", 1).await;

    // A node's certificate is let in.
    let mut stream = sync(presenting(&ca, &node_identity))
        .await
        .unwrap()
        .into_inner();
    let mut keys = Vec::new();
    while let Some(batch) = stream.message().await.unwrap() {
        keys.extend(batch.entries.into_iter().map(|e| e.key));
    }
    assert_eq!(keys, [bytes::Bytes::from(key)]);
    node.stop().await;
}

#[tokio::test]
async fn calls_without_an_accepted_token_are_unauthenticated_but_health_is_open() {
    let tokens = SecretDir::new(&[("token", "s3cret-token\n")]);
    let node = SecureNode::start("a", security(None, Some(&tokens.file("token"))), None).await;

    let err = get_error(&client(&node, None, None).await).await;
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    assert_eq!(
        err.to_string(),
        "UNAUTHENTICATED: this node requires a token: send the metadata `authorization: \
         Bearer <token>` (kcache: --token-file or KCACHE_TOKEN)"
    );
    let err = get_error(&client(&node, None, Some("guess")).await).await;
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    assert!(
        err.to_string().contains("not accepted by this node"),
        "{err}"
    );

    // The Peer service dumps the whole store: it demands the token too.
    let connection = Connection::new(node.grpc.to_string(), ConnectOptions::default());
    let status = PeerClient::new(connection.clone())
        .sync(SyncRequest {
            member_id: "intruder".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");

    // The kubelet's gRPC probe sends no token.
    let health = HealthClient::new(connection)
        .check(HealthCheckRequest {
            service: "kcache.v1.Cache".into(),
        })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1, "SERVING");

    let admitted = client(&node, None, Some("s3cret-token")).await;
    admitted.set("k", "v", SetOptions::default()).await.unwrap();
    assert_eq!(admitted.get("k").await.unwrap().unwrap().value, "v");
    node.wait_for(
        "kcache_unauthenticated_requests_total{reason=\"missing\"}",
        2,
    )
    .await;
    node.wait_for(
        "kcache_unauthenticated_requests_total{reason=\"rejected\"}",
        1,
    )
    .await;
    node.stop().await;
}

#[tokio::test]
async fn certificates_and_tokens_rotate_without_a_restart() {
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let old = old_ca.issue("node", &["127.0.0.1"]);
    let secret = tls_secret(&old, &old_ca);
    let tokens = SecretDir::new(&[("token", "old-token\n")]);
    let config = security(Some(tls_files(&secret, false)), Some(&tokens.file("token")));
    let node = SecureNode::start("a", config, None).await;
    let call = async |ca: &Ca, token: &str| {
        // A new client, so a new connection and a new handshake.
        let client = client(&node, Some(trusting(ca)), Some(token)).await;
        client.get("k").await
    };
    assert!(call(&old_ca, "old-token").await.is_ok());
    let err = call(&new_ca, "old-token").await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // cert-manager renews from a new CA: new handshakes present the new certificate.
    let new = new_ca.issue("node", &["127.0.0.1"]);
    secret.update(&[
        ("tls.crt", &new.cert),
        ("tls.key", &new.key),
        ("ca.crt", &new_ca.pem()),
    ]);
    node.wait_for(&tls_reloads("ok"), 1).await;
    assert!(call(&new_ca, "old-token").await.is_ok());
    let err = call(&old_ca, "old-token").await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A key that does not belong to the certificate: the previous one stays in use.
    secret.update(&[
        ("tls.crt", &new.cert),
        ("tls.key", &old.key),
        ("ca.crt", &new_ca.pem()),
    ]);
    node.wait_for(&tls_reloads("error"), 1).await;
    assert!(call(&new_ca, "old-token").await.is_ok());
    assert_eq!(node.metric(&tls_reloads("ok")).await, 1);
    assert_eq!(
        node.metric(&outdated("tls")).await,
        1,
        "what the alert watches"
    );
    // Put right: the node takes it and is up to date again.
    secret.update(&[
        ("tls.crt", &new.cert),
        ("tls.key", &new.key),
        ("ca.crt", &new_ca.pem()),
    ]);
    node.wait_for(&tls_reloads("ok"), 2).await;
    assert_eq!(node.metric(&outdated("tls")).await, 0);

    // Token rotation: old and new accepted together, then the old one removed.
    tokens.update(&[("token", "new-token\nold-token\n")]);
    node.wait_for(&token_reloads("ok"), 1).await;
    assert!(call(&new_ca, "old-token").await.is_ok());
    assert!(call(&new_ca, "new-token").await.is_ok());
    tokens.update(&[("token", "new-token\n")]);
    node.wait_for(&token_reloads("ok"), 2).await;
    let err = call(&new_ca, "old-token").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    assert!(call(&new_ca, "new-token").await.is_ok());

    // An emptied token file would lock everyone out: refused, the tokens stay.
    tokens.update(&[("token", "\n")]);
    node.wait_for(&token_reloads("error"), 1).await;
    assert!(call(&new_ca, "new-token").await.is_ok());
    assert_eq!(node.metric(&outdated("token")).await, 1);
    node.stop().await;
}

#[tokio::test]
async fn a_cluster_with_mutual_tls_and_tokens_replicates_and_syncs() {
    let ca = Ca::new("kcache test CA");
    let secret = tls_secret(&ca.issue("kcache", &["127.0.0.1", PEERS]), &ca);
    let tokens = SecretDir::new(&[("token", "cluster-token\n")]);
    // Nodes check each other by the peers' name, so their Peer services answer node
    // certificates only: replication, Sync and handoff below go through that gate.
    let config = || SecurityConfig {
        peer_server_name: Some(PEERS.into()),
        ..security(Some(tls_files(&secret, true)), Some(&tokens.file("token")))
    };
    let cluster = Cluster {
        views: watch::Sender::new(Arc::new(View::default())),
    };
    // Every node owns every key (R=3), so each one's own store shows replication.
    let a = SecureNode::start("a", config(), Some((&cluster, 3))).await;
    let b = SecureNode::start("b", config(), Some((&cluster, 3))).await;
    cluster
        .views
        .send_replace(Arc::new(View::new(vec![a.member("a"), b.member("b")])));
    let identity = ca.issue("client", &["client.example"]);
    let a_client = client(&a, Some(presenting(&ca, &identity)), Some("cluster-token")).await;
    for i in 0..200 {
        a_client
            .set(format!("key-{i}"), "v", SetOptions::default())
            .await
            .unwrap();
    }
    let items = |stats: kcache_client::proto::StatsResponse| {
        let mut items: Vec<_> = stats
            .nodes
            .into_iter()
            .map(|n| (n.node_id, n.items))
            .collect();
        items.sort();
        items
    };
    // Stats on a asks b too: forwarded calls authenticate as well.
    let stats = a_client.stats().await.unwrap();
    assert_eq!(items(stats), [("a".into(), 200), ("b".into(), 200)]);

    // A third member joins: it fetches its entries from its peers (Peer.Sync, over
    // mutual TLS with the token) before it reports SERVING.
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c_member = Member {
        id: "c".into(),
        address: grpc.local_addr().unwrap().to_string(),
    };
    cluster.views.send_replace(Arc::new(View::new(vec![
        a.member("a"),
        b.member("b"),
        c_member,
    ])));
    let c = SecureNode::serve("c", grpc, admin, config(), Some((&cluster, 3)));
    let c_tls = presenting(&ca, &identity);
    let c_connection = Connection::new(
        c.grpc.to_string(),
        ConnectOptions {
            tls: Some(c_tls.clone()),
            token: Some(Token::new("cluster-token").unwrap()),
            ..ConnectOptions::default()
        },
    );
    let mut health = HealthClient::new(c_connection);
    let serving = async {
        loop {
            let request = HealthCheckRequest {
                service: "kcache.v1.Cache".into(),
            };
            if let Ok(reply) = health.check(request).await
                && reply.into_inner().status == 1
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, serving)
        .await
        .expect("c turns SERVING after its sync");
    let c_client = client(&c, Some(c_tls), Some("cluster-token")).await;
    a_client
        .set("late", "after c joined", SetOptions::default())
        .await
        .unwrap();
    let stats = c_client.stats().await.unwrap();
    assert_eq!(
        items(stats),
        [("a".into(), 201), ("b".into(), 201), ("c".into(), 201)]
    );
    for node in [&a, &b, &c] {
        assert_eq!(node.metric("kcache_replication_errors_total").await, 0);
    }
    // Each leaves as in a scale-down: off the endpoints, then SIGTERM.
    let remaining = [a.member("a"), b.member("b")];
    for (node, left) in [(c, 2), (b, 1), (a, 0)] {
        let view = View::new(remaining[..left].to_vec());
        cluster.views.send_replace(Arc::new(view));
        node.stop().await;
    }
}

/// Tries `Peer.Sync` on `node` with `token` in `authorization` and `peer_token` as the
/// peer token: the call that would stream out its store.
async fn sync_with(
    node: &SecureNode,
    token: Option<&str>,
    peer_token: Option<&str>,
) -> Result<(), tonic::Status> {
    let connection = Connection::new(
        node.grpc.to_string(),
        ConnectOptions {
            token: token.map(|t| Token::new(t).unwrap()),
            peer_token: peer_token.map(|t| Token::new(t).unwrap()),
            ..ConnectOptions::default()
        },
    );
    let request = SyncRequest {
        member_id: "intruder".into(),
    };
    let mut stream = PeerClient::new(connection)
        .sync(request)
        .await?
        .into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

#[tokio::test]
async fn with_peer_tokens_an_applications_token_does_not_open_the_peer_service() {
    let tokens = SecretDir::new(&[("token", "app-token\n")]);
    let peer_tokens = SecretDir::new(&[("token", "peer-1\n")]);
    let config = || SecurityConfig {
        peer_token_file: Some(peer_tokens.file("token")),
        ..security(None, Some(&tokens.file("token")))
    };
    let cluster = Cluster {
        views: watch::Sender::new(Arc::new(View::default())),
    };
    let a = SecureNode::start("a", config(), Some((&cluster, 2))).await;
    let b = SecureNode::start("b", config(), Some((&cluster, 2))).await;
    cluster
        .views
        .send_replace(Arc::new(View::new(vec![a.member("a"), b.member("b")])));
    let app = client(&a, None, Some("app-token")).await;
    let write = async |from: usize, to: usize| {
        for i in from..to {
            app.set(format!("key-{i}"), "v", SetOptions::default())
                .await
                .unwrap();
        }
        // Stats on a asks b, through b's Cache service.
        let stats = app.stats().await.unwrap();
        let mut items: Vec<_> = stats
            .nodes
            .into_iter()
            .map(|n| (n.node_id, n.items))
            .collect();
        items.sort();
        items
    };
    // R=2 on two nodes: every write is replicated, through the Peer services, which
    // take the peer token the nodes send.
    let to = |n| [("a".to_owned(), n), ("b".to_owned(), n)];
    assert_eq!(write(0, 100).await, to(100));

    // The application's token opens the cache, not the Peer service.
    let status = sync_with(&a, Some("app-token"), None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    assert!(status.message().contains("kcache-peer-token"), "{status}");
    let status = sync_with(&a, Some("app-token"), Some("app-token"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    assert!(status.message().contains("not accepted"), "{status}");
    sync_with(&a, None, Some("peer-1")).await.unwrap();

    // The peer token rotates on both nodes: they go on replicating with the new one,
    // and the old one opens nothing.
    peer_tokens.update(&[("token", "peer-2\n")]);
    for node in [&a, &b] {
        node.wait_for(&token_reloads("ok"), 1).await;
    }
    assert_eq!(write(100, 200).await, to(200));
    let status = sync_with(&b, None, Some("peer-1")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    sync_with(&b, None, Some("peer-2")).await.unwrap();
    for node in [&a, &b] {
        assert_eq!(node.metric("kcache_replication_errors_total").await, 0);
    }
    cluster
        .views
        .send_replace(Arc::new(View::new(vec![a.member("a")])));
    b.stop().await;
    cluster.views.send_replace(Arc::new(View::default()));
    a.stop().await;

    // During the rolling update that brings peer tokens, a new node still lets in
    // the old nodes, which send only the application's token; a wrong peer token is
    // still refused.
    let migrating = SecureNode::start(
        "m",
        SecurityConfig {
            peer_accepts_app_tokens: true,
            ..config()
        },
        None,
    )
    .await;
    sync_with(&migrating, Some("app-token"), None)
        .await
        .unwrap();
    sync_with(&migrating, None, Some("peer-2")).await.unwrap();
    for (token, peer_token) in [(Some("guess"), None), (Some("app-token"), Some("guess"))] {
        let status = sync_with(&migrating, token, peer_token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    }
    migrating.stop().await;
}

/// Turning authentication on is a rolling update: until it ends, nodes without tokens
/// replicate and forward to the new ones, sending nothing. The new nodes admit that
/// (`--auth-accepts-anonymous`) and still refuse a wrong token; without the flag the
/// old nodes' calls are refused.
#[tokio::test]
async fn while_authentication_rolls_out_nodes_without_tokens_still_reach_the_new_ones() {
    let tokens = SecretDir::new(&[("token", "app-token\n")]);
    let peer_tokens = SecretDir::new(&[("token", "peer-1\n")]);
    let with_tokens = |anonymous| SecurityConfig {
        peer_token_file: Some(peer_tokens.file("token")),
        peer_accepts_app_tokens: true,
        auth_accepts_anonymous: anonymous,
        ..security(None, Some(&tokens.file("token")))
    };
    let cluster = Cluster {
        views: watch::Sender::new(Arc::new(View::default())),
    };
    let old = SecureNode::start("old", security(None, None), Some((&cluster, 2))).await;
    let new = SecureNode::start("new", with_tokens(true), Some((&cluster, 2))).await;
    cluster.views.send_replace(Arc::new(View::new(vec![
        old.member("old"),
        new.member("new"),
    ])));
    // Applications already send the token (the old nodes ignore it).
    for (node, range) in [(&old, 0..100), (&new, 100..200)] {
        let app = client(node, None, Some("app-token")).await;
        for i in range {
            app.set(format!("key-{i}"), "v", SetOptions::default())
                .await
                .unwrap();
        }
    }
    // R=2 on two nodes: each holds every key, whichever node took the write.
    let app = client(&new, None, Some("app-token")).await;
    let stats = app.stats().await.unwrap();
    let mut items: Vec<_> = stats
        .nodes
        .iter()
        .map(|n| (n.node_id.as_str(), n.items))
        .collect();
    items.sort();
    assert_eq!(items, [("new", 200), ("old", 200)]);
    for node in [&old, &new] {
        assert_eq!(node.metric("kcache_replication_errors_total").await, 0);
    }
    // What the old node sends (nothing) opens the new one; a wrong token does not.
    sync_with(&new, None, None).await.unwrap();
    let anonymous = client(&new, None, None).await;
    assert_eq!(anonymous.get("key-1").await.unwrap().unwrap().value, "v");
    // Counted, so an operator can see who would be refused once the rollout ends.
    assert!(new.metric("kcache_anonymous_requests_total").await >= 1);
    assert_eq!(old.metric("kcache_anonymous_requests_total").await, 0);
    for (token, peer_token) in [(Some("guess"), None), (None, Some("guess"))] {
        let status = sync_with(&new, token, peer_token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    }
    let guess = client(&new, None, Some("guess")).await;
    let status = guess.get("key-1").await.unwrap_err();
    assert_eq!(status.code(), Some(Code::Unauthenticated), "{status}");
    cluster
        .views
        .send_replace(Arc::new(View::new(vec![old.member("old")])));
    new.stop().await;

    // Once the rollout is over the flag goes, and a call without a token is refused.
    let strict = SecureNode::start("strict", with_tokens(false), None).await;
    let status = sync_with(&strict, None, None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    let status = client(&strict, None, None)
        .await
        .get("key-1")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Some(Code::Unauthenticated), "{status}");
    strict.stop().await;
    cluster.views.send_replace(Arc::new(View::default()));
    old.stop().await;
}

/// Writes keys `range` through `node` with the application token; R=2 on two nodes,
/// so afterwards each of `nodes` holds `held` keys and neither failed to replicate.
async fn write_and_check_both_hold(
    node: &SecureNode,
    range: std::ops::Range<u32>,
    nodes: [(&SecureNode, &str); 2],
    held: u64,
) {
    let app = client(node, None, Some("app-token")).await;
    for i in range {
        app.set(format!("key-{i}"), "v", SetOptions::default())
            .await
            .unwrap();
    }
    let stats = app.stats().await.unwrap();
    for (node, id) in nodes {
        let items = stats
            .nodes
            .iter()
            .find(|n| n.node_id == id)
            .map(|n| n.items);
        assert_eq!(items, Some(held), "{id}");
        assert_eq!(
            node.metric("kcache_replication_errors_total").await,
            0,
            "{id}"
        );
    }
}

/// Turning authentication off is two rolling updates: the first's nodes keep their
/// tokens (sending them to the strict nodes they replace) and admit tokenless
/// callers, without `--peer-accepts-app-tokens`; the second's nodes have no tokens
/// and call the first's with nothing.
#[tokio::test]
async fn while_authentication_is_turned_off_strict_and_open_nodes_each_reach_the_retiring_ones() {
    let tokens = SecretDir::new(&[("token", "app-token\n")]);
    let peer_tokens = SecretDir::new(&[("token", "peer-1\n")]);
    let with_tokens = |anonymous| SecurityConfig {
        peer_token_file: Some(peer_tokens.file("token")),
        auth_accepts_anonymous: anonymous,
        ..security(None, Some(&tokens.file("token")))
    };
    let cluster = Cluster {
        views: watch::Sender::new(Arc::new(View::default())),
    };
    let strict = SecureNode::start("strict", with_tokens(false), Some((&cluster, 2))).await;
    let retiring = SecureNode::start("retiring", with_tokens(true), Some((&cluster, 2))).await;
    cluster.views.send_replace(Arc::new(View::new(vec![
        strict.member("strict"),
        retiring.member("retiring"),
    ])));
    let pair = [(&strict, "strict"), (&retiring, "retiring")];
    write_and_check_both_hold(&strict, 0..100, pair, 100).await;
    write_and_check_both_hold(&retiring, 100..200, pair, 200).await;
    // The retiring node admits what the open ones will send: nothing.
    sync_with(&retiring, None, None).await.unwrap();
    let anonymous = client(&retiring, None, None).await;
    assert_eq!(anonymous.get("key-1").await.unwrap().unwrap().value, "v");
    let status = client(&strict, None, None)
        .await
        .get("key-1")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Some(Code::Unauthenticated), "{status}");

    // The second rollout: the strict node is gone (the first rollout replaced it),
    // an open node joins the retiring one.
    cluster
        .views
        .send_replace(Arc::new(View::new(vec![retiring.member("retiring")])));
    strict.stop().await;
    let open = SecureNode::start("open", security(None, None), Some((&cluster, 2))).await;
    let passes = retiring
        .metric("kcache_handoff_duration_seconds_count")
        .await;
    cluster.views.send_replace(Arc::new(View::new(vec![
        retiring.member("retiring"),
        open.member("open"),
    ])));
    // The retiring node hands the open one the 200 keys; then writes through either.
    let pair = [(&retiring, "retiring"), (&open, "open")];
    let handed = async {
        while retiring
            .metric("kcache_handoff_duration_seconds_count")
            .await
            <= passes
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), handed)
        .await
        .expect("a handoff pass");
    write_and_check_both_hold(&open, 200..300, pair, 300).await;
    write_and_check_both_hold(&retiring, 300..400, pair, 400).await;
    assert!(retiring.metric("kcache_anonymous_requests_total").await >= 1);
    cluster.views.send_replace(Arc::new(View::default()));
    retiring.stop().await;
    open.stop().await;
}

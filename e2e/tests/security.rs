//! A CacheCluster with mutual TLS and token auth from Secrets, and the Secrets rotating
//! under it: the pods wait for their Secrets (ContainerCreating), then serve only TLS,
//! only to clients with a certificate of the CA and only to callers with a token; a certificate from a new CA and a new token reach the
//! running nodes through the kubelet's Secret volumes, with no pod restarted and no key
//! lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[allow(dead_code)] // the Secret-directory half is the node tests'; here the kubelet writes them
#[path = "../../node/tests/security/pki.rs"]
mod pki;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Env, missing};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kcache_client::proto::{SyncRequest, peer_client::PeerClient};
use kcache_client::{Client, ConnectOptions, Connection, SetOptions, Tls, Token};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use pki::{Ca, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const NAME: &str = "secure";
const TLS_SECRET: &str = "secure-tls";
const TOKEN_SECRET: &str = "secure-tokens";
/// The scenario's bound: it takes about 17 s on the emulator and 47 s on the real
/// control plane (whose garbage collector and pod drains make the deletion at the end
/// slower) on the 2-core dev machine.
const SCENARIO: Duration = Duration::from_secs(120);

/// What the scenario needs at hand: the cluster, a folder for CA files, the pods.
struct Secure {
    env: Env,
    dir: tempfile::TempDir,
}

impl Secure {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.env.client.clone(), &self.env.ns)
    }

    /// The name clients dial, which the certificate carries.
    fn service_host(&self) -> String {
        format!("{NAME}-headless.{}.svc.cluster.local", self.env.ns)
    }

    /// The certificate's names: what clients dial and what nodes check each other
    /// against, as examples/cachecluster-secure.yaml lists them.
    fn dns_names(&self) -> Vec<String> {
        let ns = &self.env.ns;
        vec![
            format!("{NAME}.{ns}.svc"),
            format!("{NAME}-headless.{ns}.svc"),
            format!("{NAME}-headless.{ns}.svc.cluster.local"),
            format!("*.{NAME}-headless.{ns}.svc.cluster.local"),
        ]
    }

    fn issue(&self, ca: &Ca) -> Identity {
        let names = self.dns_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        ca.issue("kcache node", &names)
    }

    /// A TLS setting that trusts exactly `cas` and presents a client certificate
    /// issued by `presenting` (the cluster demands one: mutual TLS).
    fn tls(&self, cas: &[&Ca], presenting: Option<&Ca>) -> Tls {
        let n = rand_suffix();
        let write = |file: String, text: &str| {
            let path = self.dir.path().join(file);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca = write(format!("ca-{n}.pem"), &bundle(cas));
        let identity = presenting.map(|issuer| {
            let client = issuer.issue("kcache client", &["client.example"]);
            (
                write(format!("client-{n}.crt"), &client.cert),
                write(format!("client-{n}.key"), &client.key),
            )
        });
        let identity = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        Tls::from_pem_files(&ca, identity).unwrap()
    }

    /// TLS that trusts exactly `cas` and presents a certificate of the last of them.
    fn trusting(&self, cas: &[&Ca]) -> Tls {
        self.tls(cas, cas.last().copied())
    }

    /// A new client through the headless Service (so new connections, new handshakes).
    async fn client(&self, cas: &[&Ca], token: Option<&str>) -> Client {
        self.client_with(self.trusting(cas), token).await
    }

    async fn client_with(&self, tls: Tls, token: Option<&str>) -> Client {
        let mut builder = Client::builder(format!("dns:///{}:7000", self.service_host()))
            .dns_server(self.env.dns)
            .retries(0)
            .tls(tls);
        if let Some(token) = token {
            builder = builder.token(Token::new(token).unwrap());
        }
        builder.connect().await.unwrap()
    }

    /// A new client of one pod.
    async fn pod_client(&self, ip: &str, cas: &[&Ca], token: &str) -> Client {
        let tls = self
            .trusting(cas)
            .with_server_name(&format!("{NAME}-headless.{}.svc", self.env.ns))
            .unwrap();
        Client::builder(format!("{ip}:7000"))
            .retries(0)
            .tls(tls)
            .token(Token::new(token).unwrap())
            .connect()
            .await
            .unwrap()
    }

    async fn pods(&self) -> Vec<Pod> {
        self.env
            .pods()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={NAME}")))
            .await
            .unwrap()
            .items
    }

    async fn put_secret(&self, name: &str, data: &[(&str, &str)]) {
        let data: BTreeMap<String, ByteString> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            data: Some(data.clone()),
            type_: Some(
                if name == TLS_SECRET {
                    "kubernetes.io/tls"
                } else {
                    "Opaque"
                }
                .to_owned(),
            ),
            ..Default::default()
        };
        match self.secrets().get_opt(name).await.unwrap() {
            None => {
                self.secrets()
                    .create(&PostParams::default(), &secret)
                    .await
                    .unwrap();
            }
            Some(_) => {
                // A merge of the same keys: the scenario always writes every key.
                self.secrets()
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(
                            serde_json::json!({"data": serde_json::to_value(&data).unwrap()}),
                        ),
                    )
                    .await
                    .unwrap();
            }
        }
    }

    async fn put_tls(&self, identity: &Identity, cas: &[&Ca]) {
        self.put_secret(
            TLS_SECRET,
            &[
                ("tls.crt", &identity.cert),
                ("tls.key", &identity.key),
                ("ca.crt", &bundle(cas)),
            ],
        )
        .await;
    }

    /// Each pod's address and how often its node has loaded changed `credential` files
    /// (`kcache_credential_reloads_total{result="ok"}`): taken before a Secret update.
    async fn reloads(&self, credential: &str) -> Vec<(String, u64)> {
        let mut counts = Vec::new();
        for pod in self.pods().await {
            let ip = pod.status.unwrap().pod_ip.unwrap();
            let count = metric_value(&ip, &reload_metric(credential)).await;
            counts.push((ip, count));
        }
        counts
    }

    /// Waits until every node has loaded its `credential` files again since `before`,
    /// i.e. the Secret update went through the kubelet's volume to the node.
    async fn wait_reloads(&self, credential: &str, before: &[(String, u64)]) {
        let started = Instant::now();
        let metric = reload_metric(credential);
        for (ip, count) in before {
            loop {
                let seen = metric_value(ip, &metric).await;
                if seen > *count {
                    break;
                }
                assert!(
                    started.elapsed() < common::WAIT,
                    "{ip}: {metric} stayed at {seen}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Updates a Secret and waits until every node has loaded it.
    async fn rotate(&self, credential: &str, update: impl std::future::Future<Output = ()>) {
        let before = self.reloads(credential).await;
        update.await;
        self.wait_reloads(credential, &before).await;
    }

    /// Waits until every pod's node lists all `n` pods as ready members (over TLS, with
    /// a token).
    async fn wait_members(&self, n: usize, cas: &[&Ca], token: &str) {
        let started = Instant::now();
        'again: loop {
            assert!(started.elapsed() < common::WAIT, "never {n} members");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let pods = self.pods().await;
            if pods.len() != n {
                continue;
            }
            for pod in &pods {
                let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
                    continue 'again;
                };
                match self.pod_client(&ip, cas, token).await.topology().await {
                    Ok(t) if t.members.len() == n && t.members.iter().all(|m| m.ready) => {}
                    _ => continue 'again,
                }
            }
            return;
        }
    }
}

fn reload_metric(credential: &str) -> String {
    format!("kcache_credential_reloads_total{{credential=\"{credential}\",result=\"ok\"}}")
}

fn bundle(cas: &[&Ca]) -> String {
    cas.iter().map(|ca| ca.pem()).collect()
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

/// A counter from a node's /metrics on its plaintext admin port (0 if absent).
async fn metric_value(ip: &str, metric: &str) -> u64 {
    let Ok(mut stream) = tokio::net::TcpStream::connect(format!("{ip}:7001")).await else {
        return 0;
    };
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {ip}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body).await;
    body.lines()
        .find_map(|line| line.strip_prefix(metric)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Each pod's uid and restart counts, by name.
async fn incarnations(secure: &Secure) -> BTreeMap<String, (String, Vec<i32>)> {
    secure
        .pods()
        .await
        .iter()
        .map(|p| {
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map(|cs| cs.iter().map(|c| c.restart_count).collect())
                .unwrap_or_default();
            (p.name_any(), (p.uid().unwrap(), restarts))
        })
        .collect()
}

/// The files the kubelet materialized for a pod's volume (local clusters only).
fn volume_file(env: &Env, pod: &str, volume: &str, file: &str) -> Option<PathBuf> {
    let state = env.state_dir.as_ref()?;
    Some(
        state
            .join("pods")
            .join(format!("{}_{pod}", env.ns))
            .join("volumes/kubernetes.io~secret")
            .join(volume)
            .join(file),
    )
}

async fn refused(client: &Client) -> kcache_client::Error {
    client.get("probe").await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_and_tokens_rotate_through_secrets_without_a_restart() {
    tokio::time::timeout(SCENARIO, scenario())
        .await
        .expect("the scenario finishes within its bound");
}

async fn scenario() {
    let env = Env::start("security").await;
    let secure = Secure {
        env,
        dir: tempfile::tempdir().unwrap(),
    };
    let started = Instant::now();
    let (old_ca, new_ca, stranger) = (Ca::new("old CA"), Ca::new("new CA"), Ca::new("stranger"));

    // The cluster first: without its Secrets the first pod cannot start, and says why.
    secure.env.apply_example(
        "cachecluster-secure.yaml",
        serde_json::json!({
            "replicas": 3, "replicationFactor": 2,
            "tls": {"secretName": TLS_SECRET, "requireClientCertificate": true},
            "auth": {"secretName": TOKEN_SECRET, "key": "token"},
        }),
    );
    let first = format!("{NAME}-0");
    let waiting = await_condition(secure.env.pods(), &first, |pod: Option<&Pod>| {
        pod.and_then(|p| {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()
                .cloned()
        })
        .and_then(|c| c.state?.waiting)
        .is_some_and(|w| {
            w.reason.as_deref() == Some("ContainerCreating")
                && w.message.is_some_and(|m| m.contains("not found"))
        })
    });
    let pod = tokio::time::timeout(common::WAIT, waiting)
        .await
        .expect("the pod waits for its Secret")
        .unwrap()
        .unwrap();
    let message = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap()
        .message
        .unwrap();
    assert!(
        message.contains("MountVolume.SetUp failed for volume") && message.contains("secret"),
        "{message}"
    );

    let node = secure.issue(&old_ca);
    secure.put_tls(&node, &[&old_ca]).await;
    secure
        .put_secret(TOKEN_SECRET, &[("token", "old-token\n")])
        .await;
    let ready = secure.env.wait_ready(NAME, 3).await;
    secure.wait_members(3, &[&old_ca], "old-token").await;
    println!(
        "security: 3/3 Ready with TLS and tokens {ready:?} after the Secrets, {:?} after apply",
        started.elapsed()
    );

    // Writes and reads over TLS with a token, through the headless Service.
    let client = secure.client(&[&old_ca], Some("old-token")).await;
    let keys: Vec<String> = (0..200).map(|i| format!("before-rotation:{i}")).collect();
    for key in &keys {
        client
            .set(key.clone(), key.clone(), SetOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(missing(&client, &keys).await, Vec::<String>::new());

    // The Peer service (whose Sync streams out the whole store) wants the peer token
    // the operator generated, which applications do not hold: theirs does not open it.
    let peer_secret = secure
        .secrets()
        .get(&format!("{NAME}-peer-token"))
        .await
        .unwrap();
    let owner = &peer_secret.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CacheCluster", NAME)
    );
    let ip = secure.pods().await[0]
        .status
        .clone()
        .unwrap()
        .pod_ip
        .unwrap();
    let tls = secure
        .trusting(&[&old_ca])
        .with_server_name(&format!("{NAME}-headless.{}.svc", secure.env.ns))
        .unwrap();
    let connection = Connection::new(
        format!("{ip}:7000"),
        ConnectOptions {
            tls: Some(tls),
            token: Some(Token::new("old-token").unwrap()),
            ..ConnectOptions::default()
        },
    );
    let request = SyncRequest {
        member_id: "intruder".into(),
    };
    let status = PeerClient::new(connection).sync(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    assert!(status.message().contains("kcache-peer-token"), "{status}");

    // No token: UNAUTHENTICATED. A client trusting another CA: refused at the handshake.
    let err = refused(&secure.client(&[&old_ca], None).await).await;
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    let err = refused(&secure.client(&[&stranger], Some("old-token")).await).await;
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let err = refused(&secure.client(&[&new_ca], Some("old-token")).await).await;
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // Mutual TLS: no client certificate, or one from another CA, is refused too.
    let err = refused(
        &secure
            .client_with(secure.tls(&[&old_ca], None), Some("old-token"))
            .await,
    )
    .await;
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    let err = refused(
        &secure
            .client_with(secure.tls(&[&old_ca], Some(&stranger)), Some("old-token"))
            .await,
    )
    .await;
    assert!(err.to_string().contains("UnknownCA"), "{err}");

    let before = incarnations(&secure).await;
    assert!(
        before.values().all(|(_, restarts)| restarts == &[0]),
        "{before:?}"
    );

    // CA rotation as cert-manager's trust bundles do it, so nodes that reload at
    // different moments keep trusting each other: trust both CAs, then serve the new
    // certificate, then trust the new CA alone.
    secure
        .rotate("tls", secure.put_tls(&node, &[&old_ca, &new_ca]))
        .await;
    let renewed = secure.issue(&new_ca);
    let before_renewal = secure.reloads("tls").await;
    let rotated = Instant::now();
    secure.put_tls(&renewed, &[&old_ca, &new_ca]).await;
    let mut files_at = Duration::ZERO;
    if let Some(path) = volume_file(&secure.env, &format!("{NAME}-0"), "tls", "tls.crt") {
        while std::fs::read_to_string(&path).ok().as_deref() != Some(renewed.cert.as_str()) {
            assert!(
                rotated.elapsed() < common::WAIT,
                "the kubelet never wrote the new certificate"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        files_at = rotated.elapsed();
    }
    secure.wait_reloads("tls", &before_renewal).await;
    let reached = rotated.elapsed();
    let fresh = secure.client(&[&new_ca], Some("old-token")).await;
    assert_eq!(missing(&fresh, &keys).await, Vec::<String>::new());
    let err = refused(&secure.client(&[&old_ca], Some("old-token")).await).await;
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    for pod in secure.pods().await {
        let ip = pod.status.unwrap().pod_ip.unwrap();
        let one = secure.pod_client(&ip, &[&new_ca], "old-token").await;
        assert!(
            one.get("k").await.is_ok(),
            "{ip} serves the new certificate"
        );
    }
    println!(
        "security: the new certificate was in {NAME}-0's volume {files_at:?} and served to new connections by all 3 nodes {reached:?} after the Secret update"
    );
    secure
        .rotate("tls", secure.put_tls(&renewed, &[&new_ca]))
        .await;
    // The old CA is trusted no more: its client certificates are refused.
    let err = refused(
        &secure
            .client_with(secure.tls(&[&new_ca], Some(&old_ca)), Some("old-token"))
            .await,
    )
    .await;
    assert!(err.to_string().contains("UnknownCA"), "{err}");
    secure.wait_members(3, &[&new_ca], "old-token").await;

    // Token rotation: the new token as a second line, then first, then alone.
    let token_rotated = Instant::now();
    secure
        .rotate(
            "token",
            secure.put_secret(TOKEN_SECRET, &[("token", "old-token\nnew-token\n")]),
        )
        .await;
    let token_reached = token_rotated.elapsed();
    for token in ["old-token", "new-token"] {
        let client = secure.client(&[&new_ca], Some(token)).await;
        assert_eq!(
            missing(&client, &keys).await,
            Vec::<String>::new(),
            "{token}"
        );
    }
    secure
        .rotate(
            "token",
            secure.put_secret(TOKEN_SECRET, &[("token", "new-token\nold-token\n")]),
        )
        .await;
    secure
        .rotate(
            "token",
            secure.put_secret(TOKEN_SECRET, &[("token", "new-token\n")]),
        )
        .await;
    let err = refused(&secure.client(&[&new_ca], Some("old-token")).await).await;
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    let client = secure.client(&[&new_ca], Some("new-token")).await;
    assert_eq!(missing(&client, &keys).await, Vec::<String>::new());
    // Nodes call each other with the new token: a write, then a read of it through
    // every node (those that do not own the key forward the read to an owner).
    client
        .set("after-rotation", "v", SetOptions::default())
        .await
        .unwrap();
    for pod in secure.pods().await {
        let ip = pod.status.unwrap().pod_ip.unwrap();
        let value = secure
            .pod_client(&ip, &[&new_ca], "new-token")
            .await
            .get("after-rotation")
            .await
            .unwrap();
        assert_eq!(value.map(|v| v.value), Some("v".into()), "through {ip}");
    }
    secure.wait_members(3, &[&new_ca], "new-token").await;
    println!(
        "security: a token added to the Secret was accepted by all 3 nodes {token_reached:?} after the update"
    );

    // Nothing restarted: the same pods, not one container restart.
    assert_eq!(incarnations(&secure).await, before);
    println!("security: scenario took {:?}", started.elapsed());

    // Deleted pods take their Secret files with them (once their processes are gone,
    // which may be after the pod left the API).
    secure
        .env
        .kubectl(&["delete", "cachecluster", NAME, "--wait=false"]);
    let deleted = Instant::now();
    for name in before.keys() {
        let gone = await_condition(secure.env.pods(), name, |pod: Option<&Pod>| pod.is_none());
        tokio::time::timeout(common::WAIT, gone)
            .await
            .expect("the pod goes away with its CacheCluster")
            .unwrap();
        if let Some(path) = volume_file(&secure.env, name, "tls", "tls.crt") {
            let volumes = path.ancestors().nth(3).unwrap().to_owned();
            assert!(volumes.ends_with("volumes"), "{}", volumes.display());
            while volumes.exists() {
                assert!(
                    deleted.elapsed() < common::WAIT,
                    "{} outlived its pod",
                    volumes.display()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let Secure { env, dir } = secure;
    drop(dir);
    env.stop().await;
}

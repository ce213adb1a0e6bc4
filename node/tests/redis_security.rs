//! The Redis port under the node's security flags: `--auth-token-file` tokens are
//! Redis passwords (AUTH, HELLO … AUTH), and `--tls-cert-file` puts the port behind
//! TLS, checked with redis-rs and redis-cli, clients no one here wrote.
#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

#[path = "security/pki.rs"]
mod pki;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use kcache_node::security::{SecurityConfig, TlsFiles};
use kcache_node::server::{NodeConfig, serve_with_redis};
use kcache_node::store::Limits;
use pki::{Ca, SecretDir, tls_secret};
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

struct Node {
    redis: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), kcache_node::server::Error>>,
}

impl Node {
    async fn start(security: SecurityConfig) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let redis = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = redis.local_addr().unwrap();
        let config = NodeConfig {
            security,
            ..NodeConfig::single("redis-secure", Limits::default())
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve_with_redis(config, grpc, admin, Some(redis), async {
            let _ = stopped.await;
        }));
        Self {
            redis: addr,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Sends `request` and demands exactly `reply`.
async fn expect(stream: &mut TcpStream, request: &str, reply: &str) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = vec![0; reply.len()];
    tokio::time::timeout(REPLY_TIMEOUT, stream.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got), reply);
}

#[tokio::test]
async fn with_tokens_every_command_waits_for_auth_with_one_of_them() {
    let tokens = SecretDir::new(&[("token", "first-token\nsecond-token\n")]);
    let node = Node::start(SecurityConfig {
        token_file: Some(tokens.file("token")),
        ..SecurityConfig::default()
    })
    .await;
    let mut c = TcpStream::connect(node.redis).await.unwrap();
    expect(&mut c, "GET k\r\n", "-NOAUTH Authentication required.\r\n").await;
    expect(&mut c, "PING\r\n", "-NOAUTH Authentication required.\r\n").await;
    expect(
        &mut c,
        "HELLO 3\r\n",
        "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n",
    )
    .await;
    let wrong = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    expect(&mut c, "AUTH guess\r\n", wrong).await;
    expect(&mut c, "AUTH admin second-token\r\n", wrong).await;
    expect(&mut c, "GET k\r\n", "-NOAUTH Authentication required.\r\n").await;
    expect(&mut c, "AUTH second-token\r\n", "+OK\r\n").await;
    expect(&mut c, "SET k v\r\n", "+OK\r\n").await;
    // HELLO with AUTH authenticates a new connection in one step.
    let mut c = TcpStream::connect(node.redis).await.unwrap();
    c.write_all(b"HELLO 2 AUTH default first-token\r\n")
        .await
        .unwrap();
    let mut hello = vec![0; 4];
    c.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"*14\r");
    // redis-rs with the password in the URL.
    let url = format!("redis://:first-token@{}/", node.redis);
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let value: String = conn.get("k").await.unwrap();
    assert_eq!(value, "v");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_redis_cli_connects_over_tls_and_plaintext_gets_nothing() {
    let ca = Ca::new("kcache-test-ca");
    let secret = tls_secret(&ca.issue("node", &["127.0.0.1"]), &ca);
    let node = Node::start(SecurityConfig {
        tls: Some(TlsFiles {
            cert: secret.file("tls.crt"),
            key: secret.file("tls.key"),
            client_ca: None,
            peer_ca: None,
        }),
        ..SecurityConfig::default()
    })
    .await;
    let (host, port) = (node.redis.ip().to_string(), node.redis.port().to_string());
    let ca_file = secret.file("ca.crt");
    let cli = move |tls: bool, args: &[&str]| {
        let mut command = Command::new("redis-cli");
        command.args(["-h", &host, "-p", &port]);
        if tls {
            command.arg("--tls").arg("--cacert").arg(&ca_file);
        }
        command.args(args).output().unwrap()
    };
    let set = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(true, &["SET", "tls-key", "over tls"])
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&set.stdout), "OK\n");
    let get = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli(true, &["GET", "tls-key"])
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&get.stdout), "over tls\n");
    let plain = tokio::task::spawn_blocking(move || cli(false, &["GET", "tls-key"]))
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("over tls"),
        "plaintext must not be served"
    );
    node.stop().await;
}

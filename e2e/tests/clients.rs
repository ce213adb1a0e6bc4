//! Clients no one here wrote: the README's Go snippet (grpc-go, `dns:///` resolution and
//! the round_robin policy, built through the Go module proxy from e2e/clients/go) and
//! Python snippet (grpcio, e2e/clients/python) reach a CacheCluster through the cluster
//! DNS (`dns://<server>/<name>:<port>`), read a key, and spread their calls over the
//! pods — counted by each pod's own `kcache_requests_total{op="topology"}`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::Env;
use kube::ResourceExt;
use kube::api::ListParams;

/// Calls each client sends.
const CALLS: u64 = 300;

/// Topology requests each pod has answered, by pod name.
async fn topology_counts(env: &Env, name: &str) -> BTreeMap<String, u64> {
    let pods = env
        .pods()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .unwrap();
    let mut counts = BTreeMap::new();
    for pod in pods {
        let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
        let metrics = http_get(&format!("{ip}:7001"), "/metrics").await;
        let count = metrics
            .lines()
            .filter(|l| l.starts_with("kcache_requests_total{") && l.contains("op=\"topology\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        counts.insert(pod.name_any(), count);
    }
    counts
}

async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

/// Runs a client, checks it read the key, and returns how the pods' counts moved.
async fn run_client(
    env: &Env,
    name: &str,
    label: &str,
    mut command: Command,
) -> BTreeMap<String, u64> {
    let before = topology_counts(env, name).await;
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{label} client failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("value from kcache"), "{label}: {stdout}");
    let after = topology_counts(env, name).await;
    let spread: BTreeMap<String, u64> = after
        .iter()
        .map(|(pod, n)| (pod.clone(), n - before.get(pod).copied().unwrap_or(0)))
        .collect();
    println!("clients: {label} spread {CALLS} Topology calls as {spread:?}");
    assert_eq!(spread.values().sum::<u64>(), CALLS, "{label}: {spread:?}");
    for (pod, n) in &spread {
        // Round robin over 3 pods gives each 100; anything under half of that is not
        // balancing.
        assert!(
            *n >= CALLS / 6,
            "{label}: {pod} answered only {n} of {CALLS}: {spread:?}"
        );
    }
    spread
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readmes_go_and_python_clients_balance_over_the_pods_through_cluster_dns() {
    let env = Env::start("clients").await;
    let name = env.settled_example(3, serde_json::json!({})).await;
    env.cache(&name, false)
        .await
        .set("hello", "from kcache", Default::default())
        .await
        .unwrap();
    let target = format!(
        "dns://{}/{name}-headless.{}.svc.cluster.local:7000",
        env.dns, env.ns
    );

    // Go: built from e2e/clients/go through the module proxy (go.sum pins it).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/go");
    let build_dir = tempfile::tempdir().unwrap();
    let binary = build_dir.path().join("kcache-e2e-go-client");
    let build = Command::new("go")
        .args(["build", "-mod=readonly", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&dir)
        .output()
        .expect("go is installed");
    assert!(
        build.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let mut go = Command::new(&binary);
    go.args([
        "-target",
        &target,
        "-key",
        "hello",
        "-calls",
        &CALLS.to_string(),
    ]);
    run_client(&env, &name, "grpc-go", go).await;

    // Python: grpcio from scripts/requirements.txt (scripts/test.sh installs it into
    // .venv; KCACHE_VENV names that venv).
    let python = std::env::var("KCACHE_VENV")
        .map(|venv| format!("{venv}/bin/python"))
        .unwrap_or_else(|_| "python3".into());
    let has_grpc = Command::new(&python).args(["-c", "import grpc"]).status();
    assert!(
        has_grpc.is_ok_and(|s| s.success()),
        "{python} cannot import grpc: run scripts/test.sh (it installs grpcio into .venv) or pip install -r scripts/requirements.txt"
    );
    let mut py = Command::new(&python);
    py.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/client.py"))
        .args([
            "--target",
            &target,
            "--key",
            "hello",
            "--calls",
            &CALLS.to_string(),
        ]);
    run_client(&env, &name, "grpcio", py).await;
    env.stop().await;
}

//! What every end-to-end scenario shares: a cluster reached only through a kubeconfig
//! (and its DNS server), kubectl, waits on conditions, traffic that records what was
//! acknowledged, and a sampler that checks the status never claims more than is true.
//!
//! `KCACHE_E2E_KUBECONFIG` (with `KCACHE_E2E_DNS`, the cluster DNS server's address)
//! points the suite at an existing cluster; otherwise each scenario starts a local one
//! (`kcache-local`'s parts in-process) in a temporary folder: on the API emulator, or
//! with `KCACHE_E2E_CONTROL_PLANE=real` on the real kube-apiserver, etcd and
//! kube-controller-manager (then pods need a non-loopback network:
//! `KCACHE_LOCAL_POD_NETWORK`, inside scripts/netns.sh).
#![allow(dead_code)] // each scenario uses a part of this
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot set up fails loudly

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kcache_crd::CacheCluster;
use kcache_e2e::local::{Local, UpArgs};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use tokio::sync::watch;

/// How long a scenario waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(120);
/// How long the CacheCluster's status may trail the pods it reports on: pod readiness
/// reaches it through the StatefulSet's status and a reconcile.
pub const STATUS_LAG: Duration = Duration::from_secs(3);

/// The cluster a scenario runs on.
pub struct Env {
    pub kubeconfig: PathBuf,
    pub dns: SocketAddr,
    pub client: kube::Client,
    pub ns: String,
    /// Pod folders (logs, pid files) when the cluster is local.
    pub state_dir: Option<PathBuf>,
    local: Option<Local>,
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    /// A cluster and a fresh namespace named after the scenario.
    pub async fn start(scenario: &str) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let env = match std::env::var_os("KCACHE_E2E_KUBECONFIG") {
            Some(path) => {
                let dns = std::env::var("KCACHE_E2E_DNS")
                    .expect("KCACHE_E2E_DNS: the cluster DNS server (ip:port) that resolves *.svc.cluster.local")
                    .parse()
                    .expect("KCACHE_E2E_DNS is ip:port");
                let kubeconfig = PathBuf::from(path);
                let config = kube::Config::from_custom_kubeconfig(
                    kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
                    &Default::default(),
                )
                .await
                .unwrap();
                Self {
                    client: kube::Client::try_from(config).unwrap(),
                    kubeconfig,
                    dns,
                    ns: String::new(),
                    state_dir: None,
                    local: None,
                    _dir: None,
                }
            }
            None => {
                let dir = tempfile::tempdir().unwrap();
                let mut args = UpArgs::in_dir(dir.path());
                args.real = std::env::var("KCACHE_E2E_CONTROL_PLANE").as_deref() == Ok("real");
                if let Ok(network) = std::env::var("KCACHE_LOCAL_POD_NETWORK") {
                    args.pod_network = network
                        .parse()
                        .expect("KCACHE_LOCAL_POD_NETWORK is an IPv4 address");
                }
                let local = Local::start(&args).await.unwrap();
                println!(
                    "e2e: local cluster on {} (kubeconfig {})",
                    if local.is_real() {
                        "the real control plane"
                    } else {
                        "the API emulator"
                    },
                    local.kubeconfig.display()
                );
                Self {
                    client: local.client().unwrap(),
                    kubeconfig: local.kubeconfig.clone(),
                    dns: local.dns,
                    ns: String::new(),
                    state_dir: Some(local.state_dir.clone()),
                    local: Some(local),
                    _dir: Some(dir),
                }
            }
        };
        let ns = format!("e2e-{scenario}");
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        match Api::<Namespace>::all(env.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating namespace {ns}: {e}"),
        }
        Self { ns, ..env }
    }

    /// Stops the local cluster, if this scenario started one.
    pub async fn stop(self) {
        if let Some(local) = self.local {
            local.stop().await;
        }
    }

    /// `kubectl --kubeconfig … -n <ns> ARGS`, which must succeed; its stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = self.kubectl_output(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `kubectl … ARGS`, whatever its outcome.
    pub fn kubectl_output(&self, args: &[&str]) -> std::process::Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", &self.ns])
            .args(args)
            .output()
            .expect("kubectl is installed")
    }

    /// `kubectl apply -f` of an example with `spec` fields replaced (e.g. replicas).
    pub fn apply_example(&self, file: &str, spec: serde_json::Value) -> String {
        let output = self.kubectl_output(&["apply", "-f", &self.example(file, None, spec)]);
        assert!(
            output.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.example_name(file)
    }

    /// `kubectl apply` of the minimal example with `spec` fields replaced, then waits
    /// until it is Ready with `replicas` pods and every node agrees on the members.
    pub async fn settled_example(&self, replicas: i32, spec: serde_json::Value) -> String {
        let mut spec = spec;
        spec["replicas"] = replicas.into();
        let name = self.apply_example("cachecluster-minimal.yaml", spec);
        self.wait_ready(&name, replicas).await;
        self.wait_members(&name, replicas as usize).await;
        name
    }

    /// The example's name.
    pub fn example_name(&self, file: &str) -> String {
        let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let doc: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        doc["metadata"]["name"].as_str().unwrap().to_string()
    }

    /// Writes the example, renamed when `name` is given and with `spec` fields
    /// replaced, to a file for `kubectl apply -f`; returns its path.
    pub fn example(&self, file: &str, name: Option<&str>, spec: serde_json::Value) -> String {
        let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let mut doc: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if let Some(name) = name {
            doc["metadata"]["name"] = name.into();
        }
        for (k, v) in spec.as_object().unwrap() {
            doc["spec"][k] = v.clone();
        }
        let manifest = std::env::temp_dir().join(format!(
            "{}-{}-{file}",
            self.ns,
            doc["metadata"]["name"].as_str().unwrap()
        ));
        std::fs::write(&manifest, serde_yaml::to_string(&doc).unwrap()).unwrap();
        manifest.display().to_string()
    }

    pub fn clusters(&self) -> Api<CacheCluster> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Waits until the CacheCluster reports its current generation with `replicas` ready
    /// and Available; returns how long that took.
    pub async fn wait_ready(&self, name: &str, replicas: i32) -> Duration {
        let started = Instant::now();
        let ready = await_condition(self.clusters(), name, move |cc: Option<&CacheCluster>| {
            let Some(cc) = cc else { return false };
            let Some(status) = &cc.status else {
                return false;
            };
            status.observed_generation == cc.metadata.generation
                && status.ready_replicas == replicas
                && cc.spec.replicas == replicas
                && status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True")
        });
        tokio::time::timeout(WAIT, ready)
            .await
            .unwrap_or_else(|_| {
                panic!("CacheCluster {name} not Ready with {replicas} replicas after {WAIT:?}")
            })
            .unwrap();
        started.elapsed()
    }

    /// Waits until exactly `n` pods of the cluster exist (terminated ones gone, so their
    /// drain has finished) and each node's topology lists exactly those pods as its
    /// ready members.
    pub async fn wait_members(&self, name: &str, n: usize) -> Duration {
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < WAIT,
                "{name}: never settled at {n} members"
            );
            let pods = self
                .pods()
                .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
                .await
                .unwrap();
            let ips: Vec<String> = pods
                .iter()
                .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
                .collect();
            if pods.items.len() == n && ips.len() == n {
                let mut agreed = true;
                for ip in &ips {
                    let Ok(node) = kcache_client::Client::builder(format!("{ip}:7000"))
                        .retries(0)
                        .connect()
                        .await
                    else {
                        agreed = false;
                        break;
                    };
                    let mut want: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
                    want.sort();
                    match node.topology().await {
                        Ok(t)
                            if t.members.iter().all(|m| m.ready) && {
                                let mut ids: Vec<String> =
                                    t.members.iter().map(|m| m.id.clone()).collect();
                                ids.sort();
                                ids == want
                            } => {}
                        _ => {
                            agreed = false;
                            break;
                        }
                    }
                }
                if agreed {
                    return started.elapsed();
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A client through the cluster's headless Service and DNS.
    pub async fn cache(&self, name: &str, smart: bool) -> kcache_client::Client {
        kcache_client::Client::builder(format!(
            "dns:///{name}-headless.{}.svc.cluster.local:7000",
            self.ns
        ))
        .dns_server(self.dns)
        .smart(smart)
        .connect()
        .await
        .unwrap()
    }

    /// The process id of a pod's container (local clusters: the kubelet's pid file).
    pub fn pid(&self, pod: &str, container: &str) -> u32 {
        let dir = self
            .state_dir
            .as_ref()
            .expect("killing a pod's process needs the local cluster")
            .join("pods")
            .join(format!("{}_{pod}", self.ns));
        std::fs::read_to_string(dir.join(format!("{container}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// What traffic saw.
#[derive(Debug, Default)]
pub struct TrafficReport {
    /// Keys whose write was acknowledged.
    pub acked: Vec<String>,
    /// When writes failed, and why.
    pub errors: Vec<(Duration, String)>,
    /// Writes tried.
    pub attempts: u64,
    /// How long traffic ran.
    pub ran: Duration,
}

impl TrafficReport {
    /// From the first failed write to the last (zero when none failed).
    pub fn error_window(&self) -> Duration {
        match (self.errors.first(), self.errors.last()) {
            (Some(first), Some(last)) => last.0 - first.0,
            _ => Duration::ZERO,
        }
    }
}

/// Writes `prefix:N` for N = 0, 1, … at a steady pace until stopped.
pub struct Traffic {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<TrafficReport>,
    attempts: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Pause between writes: about 200 writes a second, plenty to cover every moment of a
/// membership change while keeping verification quick.
pub const WRITE_PAUSE: Duration = Duration::from_millis(5);

impl Traffic {
    pub fn start(client: kcache_client::Client, prefix: &str) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let prefix = prefix.to_string();
        let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = attempts.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut report = TrafficReport::default();
            while !*stopped.borrow() {
                let key = format!("{prefix}:{}", report.attempts);
                report.attempts += 1;
                counter.store(report.attempts, std::sync::atomic::Ordering::Relaxed);
                match client
                    .set(key.clone(), key.clone(), Default::default())
                    .await
                {
                    Ok(_) => report.acked.push(key),
                    Err(e) => report.errors.push((started.elapsed(), e.to_string())),
                }
                tokio::select! {
                    _ = tokio::time::sleep(WRITE_PAUSE) => {}
                    _ = stopped.changed() => {}
                }
            }
            report.ran = started.elapsed();
            report
        });
        Self {
            stop,
            task,
            attempts,
        }
    }

    /// Writes tried so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn finish(self) -> TrafficReport {
        let _ = self.stop.send(true);
        self.task.await.unwrap()
    }
}

/// The acknowledged keys that cannot be read back with their own value.
pub async fn missing(client: &kcache_client::Client, keys: &[String]) -> Vec<String> {
    let mut missing = Vec::new();
    for chunk in keys.chunks(1_000) {
        let values = client.mget(chunk.iter().cloned()).await.unwrap();
        for (key, value) in chunk.iter().zip(values) {
            if value.is_none_or(|v| v.value.as_ref() != key.as_bytes()) {
                missing.push(key.clone());
            }
        }
    }
    missing
}

/// Every [`STATUS_LAG`]-persistent moment at which the CacheCluster's status claimed more
/// ready replicas than there were ready pods.
pub struct StatusSampler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl StatusSampler {
    pub fn start(env: &Env, name: &str) -> Self {
        let (stop, stopped) = watch::channel(false);
        let (clusters, pods, name) = (env.clusters(), env.pods(), name.to_string());
        let task = tokio::spawn(async move {
            let mut samples = 0;
            let mut read_errors = 0u64;
            let mut violations = Vec::new();
            let mut since: Option<Instant> = None;
            while !*stopped.borrow() {
                samples += 1;
                let claimed = match clusters.get_status(&name).await {
                    Ok(c) => c.status.map(|s| s.ready_replicas).unwrap_or(0),
                    Err(e) => {
                        read_errors += 1;
                        tracing::warn!(error = %e, "status sample failed");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                };
                let truth = pods
                    .list(
                        &ListParams::default()
                            .labels(&format!("app.kubernetes.io/instance={name}")),
                    )
                    .await
                    .map(|l| {
                        l.items
                            .iter()
                            .filter(|p| kcache_e2e::controllers::pod_ready(p))
                            .count()
                    })
                    .unwrap_or(0);
                if claimed as usize > truth {
                    let start = *since.get_or_insert_with(Instant::now);
                    if start.elapsed() > STATUS_LAG {
                        violations.push(format!(
                            "status claimed {claimed} ready for {:?} while {truth} pods were ready",
                            start.elapsed()
                        ));
                    }
                } else {
                    since = None;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            // A sampler that could not read is no witness: at most one read in ten may
            // fail (a loaded machine), and it says so.
            if read_errors * 10 > samples {
                violations.push(format!("{read_errors} of {samples} status reads failed"));
            }
            (samples, violations)
        });
        Self { stop, task }
    }

    /// Stops sampling; returns how many samples were taken and the violations.
    pub async fn finish(self) -> (u64, Vec<String>) {
        let _ = self.stop.send(true);
        self.task.await.unwrap()
    }
}

/// Names of the cluster's pods, sorted.
pub async fn pod_names(env: &Env, name: &str) -> Vec<String> {
    let mut names: Vec<String> = env
        .pods()
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .unwrap()
        .iter()
        .map(|p| p.name_any())
        .collect();
    names.sort();
    names
}

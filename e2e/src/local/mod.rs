//! The `kcache-local` command: a local Kubernetes a person (or the e2e suite) can point
//! kubectl and kube-rs at, with pods that really run.
//!
//! [`Local::start`] brings up, all on loopback: the API emulator, its StatefulSet and
//! EndpointSlice controllers, cluster DNS, a kubelet whose pods are processes on
//! 127.0.0.N, and (unless told not to) the CacheCluster CRD and the kcache operator.
//! `up` runs that until interrupted; `demo` adds the example CacheCluster and a workload.

pub mod demo;
pub mod kubeconfig;

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::apiserver::{ApiServer, Config};

/// `kcache-local up` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Where to write the kubeconfig for this control plane (`kubectl --kubeconfig PATH`).
    #[arg(
        long,
        env = "KCACHE_LOCAL_KUBECONFIG",
        default_value = "target/kcache-local/kubeconfig"
    )]
    pub kubeconfig: PathBuf,
    /// Address of the API server; port 0 picks a free one (the kubeconfig has the real one).
    #[arg(long, env = "KCACHE_LOCAL_ADDR", default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// Address of the cluster DNS server (UDP and TCP); port 0 picks a free one.
    #[arg(long, env = "KCACHE_LOCAL_DNS_ADDR", default_value = "127.0.0.1:0")]
    pub dns_addr: SocketAddr,
    /// Where pod folders (`pods/<namespace>_<pod>/`: logs, pid files) and the real
    /// control plane's files (`controlplane/`) go; default: the kubeconfig's folder.
    #[arg(long, env = "KCACHE_LOCAL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where the images' programs are (kcache-node, ...); default: the folder this
    /// binary is in (cargo's `target/<profile>`).
    #[arg(long, env = "KCACHE_LOCAL_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Run on a real control plane (etcd, kube-apiserver, kube-controller-manager built
    /// from their Go modules by e2e/controlplane/build.sh) instead of the emulator; the
    /// real StatefulSet and EndpointSlice controllers replace ours.
    #[arg(long, env = "KCACHE_LOCAL_REAL")]
    pub real: bool,
    /// The /24 pod addresses come from (`<network>.10` to `.250`). A real kube-apiserver
    /// refuses loopback endpoint addresses, so `--real` needs another one: run
    /// kcache-local in a network namespace whose `lo` has that network (see
    /// scripts/netns.sh) and pass e.g. 10.244.0.0.
    #[arg(long, env = "KCACHE_LOCAL_POD_NETWORK", default_value = "127.0.0.0")]
    pub pod_network: std::net::Ipv4Addr,
    /// Serve the API, controllers, kubelet and DNS only: no CacheCluster CRD, no operator.
    #[arg(long, env = "KCACHE_LOCAL_NO_OPERATOR")]
    pub no_operator: bool,
    /// Address of the operator's /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "KCACHE_LOCAL_OPERATOR_ADDR",
        default_value = "127.0.0.1:0"
    )]
    pub operator_addr: SocketAddr,
}

impl UpArgs {
    /// Defaults for a local cluster whose files go under `dir`.
    pub fn in_dir(dir: &std::path::Path) -> Self {
        Self {
            kubeconfig: dir.join("kubeconfig"),
            addr: "127.0.0.1:0".parse().expect("a socket address"),
            dns_addr: "127.0.0.1:0".parse().expect("a socket address"),
            state_dir: None,
            bin_dir: None,
            real: false,
            pod_network: std::net::Ipv4Addr::new(127, 0, 0, 0),
            no_operator: false,
            operator_addr: "127.0.0.1:0".parse().expect("a socket address"),
        }
    }
}

/// The folder of the running executable, or of the test binary's parent (`deps/..`):
/// where cargo put kcache-node next to it.
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(PathBuf::from).unwrap_or(dir)
    } else {
        dir
    }
}

/// A running local cluster.
#[allow(missing_debug_implementations)] // holds task handles
pub struct Local {
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API server's URL.
    pub api_url: String,
    /// The cluster DNS server.
    pub dns: SocketAddr,
    /// The operator's HTTP address, when it runs.
    pub operator: Option<SocketAddr>,
    /// Pod folders (`pods/<namespace>_<pod>/`) and the real control plane's files.
    pub state_dir: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    stop_kubelet: watch::Sender<bool>,
    kubelet: JoinHandle<()>,
    stop_server: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    real: Option<crate::controlplane::RealControlPlane>,
    client: kube::Client,
}

impl Local {
    /// Starts every part and returns once the API answers; pods follow as they are asked
    /// for.
    pub async fn start(args: &UpArgs) -> Result<Self, crate::Error> {
        let state_dir = args.state_dir.clone().unwrap_or_else(|| {
            args.kubeconfig
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
        });
        std::fs::create_dir_all(&state_dir)?;
        if let Some(parent) = args
            .kubeconfig
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)?;
        }
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        // The API server stops last, after every client of it.
        let (stop_server, server_stop) = watch::channel(false);
        if args.real && args.pod_network.is_loopback() {
            return Err(crate::Error::Operator(format!(
                "--real needs a pod network that is not loopback (a real kube-apiserver refuses 127.0.0.0/8 endpoint addresses); got {}: run inside a network namespace, e.g. scripts/netns.sh kcache-local up --real --pod-network 10.244.0.0",
                args.pod_network
            )));
        }
        let (client, api_url, server, real) = if args.real {
            let dir = state_dir.join("controlplane");
            let cp = crate::controlplane::RealControlPlane::start(
                crate::controlplane::Options::new(dir),
            )
            .await
            .map_err(|e| crate::Error::Operator(format!("real control plane: {e}")))?;
            std::fs::copy(&cp.kubeconfig, &args.kubeconfig)?;
            let client = cp
                .client()
                .await
                .map_err(|e| crate::Error::Operator(format!("real control plane: {e}")))?;
            (client, cp.server.clone(), None, Some(cp))
        } else {
            let listener = TcpListener::bind(args.addr).await?;
            let addr = listener.local_addr()?;
            let api_url = format!("http://{addr}");
            kubeconfig::write(&args.kubeconfig, &api_url)?;
            let server = ApiServer::new(Config {
                pod_logs: Some(state_dir.clone()),
                ..Config::default()
            })?;
            let server = tokio::spawn(async move {
                let mut stopped = server_stop;
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = server.serve(listener, shutdown).await {
                    tracing::error!(error = %e, "API server failed");
                }
            });
            let client = kube::Client::try_from(kube::Config::new(
                api_url.parse().expect("a socket address is a valid URI"),
            ))?;
            // A real control plane brings its own StatefulSet and EndpointSlice
            // controllers; the emulator needs ours.
            tasks.push(tokio::spawn(crate::controllers::statefulset::run(
                client.clone(),
                stopped.clone(),
            )));
            tasks.push(tokio::spawn(crate::controllers::endpointslice::run(
                client.clone(),
                stopped.clone(),
            )));
            (client, api_url, Some(server), None)
        };
        let client_for_local = client.clone();
        let (dns, dns_task) =
            crate::dns::serve(client.clone(), args.dns_addr, stopped.clone()).await?;
        tasks.push(dns_task);
        let kubelet = crate::kubelet::Config {
            node_name: "kcache-local".into(),
            state_dir: state_dir.clone(),
            bin_dir: args.bin_dir.clone().unwrap_or_else(default_bin_dir),
            kubeconfig: args.kubeconfig.clone(),
            pod_network: args.pod_network,
            pod_ips: 10..=250,
        };
        // The kubelet stops first, while the API is still there to hear about its pods.
        let (stop_kubelet, kubelet_stopped) = watch::channel(false);
        let kubelet = tokio::spawn(crate::kubelet::run(
            client.clone(),
            kubelet,
            kubelet_stopped,
        ));
        let mut operator_addr = None;
        if !args.no_operator {
            let operator = TcpListener::bind(args.operator_addr).await?;
            operator_addr = Some(operator.local_addr()?);
            install_crd(&client).await?;
            let config = kcache_operator::RunConfig {
                leader: None,
                options: kcache_operator::build::BuildOptions::default(),
                identity: "kcache-local".into(),
            };
            let operator_stop = stopped.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = kcache_operator::run(client, operator, config, operator_stop).await
                {
                    tracing::error!(error = %e, "the operator stopped");
                }
            }));
        }
        Ok(Self {
            kubeconfig: args.kubeconfig.clone(),
            api_url,
            dns,
            operator: operator_addr,
            state_dir,
            stop,
            tasks,
            stop_kubelet,
            kubelet,
            stop_server,
            server,
            real,
            client: client_for_local,
        })
    }

    /// A client of this cluster (as its admin).
    pub fn client(&self) -> Result<kube::Client, crate::Error> {
        Ok(self.client.clone())
    }

    /// Whether this runs on the real control plane.
    pub fn is_real(&self) -> bool {
        self.real.is_some()
    }

    /// Stops pods (SIGTERM, then SIGKILL after [`crate::kubelet::SHUTDOWN_GRACE`]) and
    /// every part, and waits for them.
    pub async fn stop(self) {
        let _ = self.stop_kubelet.send(true);
        let _ = self.kubelet.await;
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.stop_server.send(true);
        if let Some(server) = self.server {
            let _ = server.await;
        }
        if let Some(real) = self.real {
            real.stop().await;
        }
    }
}

/// Installs (or updates) the CacheCluster CRD the operator serves.
async fn install_crd(client: &kube::Client) -> Result<(), crate::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    use kube::api::{Patch, PatchParams};

    let crd = kcache_crd::CacheCluster::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    kube::Api::<CustomResourceDefinition>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("kcache-local").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    // A real API server serves the new kind only once the CRD is Established, and its
    // handler a moment after that: wait until a list answers.
    let clusters: kube::Api<kcache_crd::CacheCluster> = kube::Api::all(client.clone());
    let deadline = std::time::Instant::now() + CRD_READY_TIMEOUT;
    loop {
        match clusters.list(&Default::default()).await {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(crate::Error::Operator(format!(
                    "the CacheCluster CRD was not served within {CRD_READY_TIMEOUT:?}: {e}"
                )));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// How long a new CRD may take to be served.
pub const CRD_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts the local cluster, prints how to reach it, serves until `shutdown` resolves.
pub async fn up(
    args: UpArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), crate::Error> {
    let local = Local::start(&args).await?;
    print_access(&local);
    shutdown.await;
    println!("kcache-local: stopping pods and the control plane");
    local.stop().await;
    Ok(())
}

/// What to paste to reach the cluster.
pub fn print_access(local: &Local) {
    let kc = local.kubeconfig.display();
    println!(
        "kcache-local: API server {} (kubeconfig {kc})",
        local.api_url
    );
    println!("kcache-local: cluster DNS {} (udp+tcp)", local.dns);
    if let Some(operator) = local.operator {
        println!("kcache-local: operator metrics http://{operator}/metrics");
    }
    println!(
        "kcache-local: pod logs under {}",
        local.state_dir.join("pods").display()
    );
    println!("  kubectl --kubeconfig {kc} apply -f examples/cachecluster-minimal.yaml");
    println!("  kubectl --kubeconfig {kc} get cachecluster,statefulset,pods -o wide");
}

//! The `kcache-local` command: a local control plane a person (or the e2e suite) can
//! point kubectl and kube-rs at.
//!
//! `up` serves the API emulator, registers the CacheCluster CRD and runs the kcache
//! operator against it, so `kubectl apply -f examples/cachecluster-minimal.yaml`
//! creates a cluster's objects. The `demo` subcommand (a 3-node cluster of real node
//! processes with traffic) needs the StatefulSet, kubelet, EndpointSlice and DNS
//! emulation, and belongs in this module next to [`up`] when they exist.

pub mod kubeconfig;

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

use crate::apiserver::{ApiServer, Config};

/// `kcache-local up` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Where to write the kubeconfig for this control plane (`kubectl --kubeconfig PATH`).
    #[arg(long, env = "KCACHE_LOCAL_KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Address of the API server; port 0 picks a free one (the kubeconfig has the real one).
    #[arg(long, env = "KCACHE_LOCAL_ADDR", default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// Serve the API only: no CacheCluster CRD, no operator.
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

/// Starts the control plane, writes the kubeconfig, serves until `shutdown` resolves.
pub async fn up(
    args: UpArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), crate::Error> {
    let listener = TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    kubeconfig::write(&args.kubeconfig, &format!("http://{addr}"))?;
    tracing::info!(%addr, kubeconfig = %args.kubeconfig.display(), "control plane up");
    println!("kcache-local: API server on http://{addr}");
    println!(
        "kcache-local: kubectl --kubeconfig {} get namespaces",
        args.kubeconfig.display()
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(
        ApiServer::new(Config::default())?.serve(listener, async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        }),
    );
    if !args.no_operator {
        let client = kube::Client::try_from(kube::Config::new(
            format!("http://{addr}")
                .parse()
                .expect("a socket address is a valid URI"),
        ))?;
        operator(client, args.operator_addr, stop_rx).await?;
    }
    server.await.map_err(std::io::Error::other)??;
    Ok(())
}

/// Registers the CacheCluster CRD and runs the operator (one replica, no leader
/// election) until `stop` turns true.
async fn operator(
    client: kube::Client,
    addr: SocketAddr,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), crate::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;

    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    crds.create(&Default::default(), &kcache_crd::CacheCluster::crd())
        .await?;
    let listener = TcpListener::bind(addr).await?;
    println!(
        "kcache-local: operator running (metrics on http://{}/metrics); try kubectl apply -f examples/cachecluster-minimal.yaml",
        listener.local_addr()?
    );
    let config = kcache_operator::RunConfig {
        leader: None,
        options: kcache_operator::build::BuildOptions::default(),
        identity: "kcache-local".into(),
    };
    kcache_operator::run(client, listener, config, stop)
        .await
        .map_err(|e| crate::Error::Operator(e.to_string()))
}

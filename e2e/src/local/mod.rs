//! The `kcache-local` command: a local control plane a person (or the e2e suite) can
//! point kubectl and kube-rs at.
//!
//! `up` serves the API emulator. The operator joins `up`, and the `demo` subcommand
//! (control plane, operator, a 3-node cluster, traffic) arrives with the operator work;
//! both belong in this module next to [`up`].

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
    ApiServer::new(Config::default())?
        .serve(listener, shutdown)
        .await?;
    Ok(())
}

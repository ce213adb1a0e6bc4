//! `kcache-local`: the local Kubernetes for kcache. See the library for what it runs.

use clap::{Parser, Subcommand};

/// kcache's local Kubernetes: API, controllers, kubelet (pods as processes), DNS, operator.
#[derive(Debug, Parser)]
#[command(name = "kcache-local", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Start the local cluster, write a kubeconfig, run until SIGINT or SIGTERM.
    Up(kcache_e2e::local::UpArgs),
    /// `up`, then the example CacheCluster, a workload and a summary.
    Demo(kcache_e2e::local::demo::DemoArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // Signals are caught from the start: a Ctrl-C while the cluster comes up still stops
    // its pods (they run in process groups of their own, so the terminal's SIGINT
    // reaches only this process).
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        interrupted().await;
        let _ = tx.send(true);
    });
    tokio::task::yield_now().await;
    let shutdown = async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    match Cli::parse().command {
        Command::Up(args) => kcache_e2e::local::up(args, shutdown).await?,
        Command::Demo(args) => kcache_e2e::local::demo::run(args, shutdown).await?,
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

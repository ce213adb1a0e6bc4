//! The kcache-operator binary: parses arguments and hands over to the library.

use clap::Parser;
use kcache_operator::args::{Args, Command, LogFormat, RunArgs};
use kcache_operator::leader::LeaderElection;
use kcache_operator::{RunConfig, render};
use kube::config::{KubeConfigOptions, Kubeconfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Json => logs.json().with_writer(std::io::stderr).init(),
        LogFormat::Text => logs.with_writer(std::io::stderr).init(),
    }
    match args.command {
        Command::Render(r) => {
            let manifest = if r.file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&r.file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", r.file.display()))?
            };
            print!("{}", render::render(&manifest, &r.build.options())?);
            Ok(())
        }
        Command::Run(r) => run(r).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = kube::Client::try_from(config)?;
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    let identity = args.identity();
    let leader = args.leader_election.then(|| LeaderElection {
        lease_name: args.lease_name.clone(),
        namespace: args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        identity: identity.clone(),
    });
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    let config = RunConfig {
        leader,
        options: args.build.options(),
        identity,
    };
    Ok(kcache_operator::run(client, listener, config, shutdown).await?)
}

/// SIGTERM (what the kubelet sends) or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
    }
}

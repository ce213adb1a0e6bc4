use anyhow::Context;
use clap::Parser;
use kcache_node::config::{Args, LogFormat};
use kcache_node::server::{NodeConfig, serve_with_redis};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_new(&args.log).context("--log")?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    let limits = args.limits().map_err(anyhow::Error::msg)?;
    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding --grpc-addr {}", args.grpc_addr))?;
    let admin = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding --admin-addr {}", args.admin_addr))?;
    let discovery = args.discovery().map_err(anyhow::Error::msg)?;
    let redis = match args.redis_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --redis-addr {addr}"))?,
        ),
        None => None,
    };
    let config = NodeConfig {
        node_id: args.node_id(),
        limits,
        security: args.security(&discovery),
        discovery,
        replication: args.replication_factor,
        write_ack: args.write_ack,
        drain_timeout: args.drain_timeout,
        anti_entropy: Some(args.anti_entropy_interval).filter(|d| !d.is_zero()),
        advertise: args.advertise_addr(),
        redis_cluster_mode: args.redis_cluster_mode,
        memory_guard: true,
    };
    serve_with_redis(config, grpc, admin, redis, shutdown_signal()).await?;
    Ok(())
}

/// SIGTERM (Kubernetes) or SIGINT (a terminal).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

//! The kcache operator: reconciles `kcache.io/v1alpha1` CacheClusters into a
//! StatefulSet of cache nodes with its Services, RBAC, disruption budget and
//! (when asked) monitoring and network policy.
//!
//! Layers: `build` turns a spec into objects (pure), `status` turns what the cluster
//! reports into a status (pure), `controller` applies the one and writes the other,
//! `leader` and `http` make it safe and observable to run.

#![forbid(unsafe_code)]

pub mod args;
pub mod build;
pub mod controller;
mod error;
#[cfg(test)]
mod fixtures;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod render;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::Error;
pub use metrics::Metrics;

use build::BuildOptions;
use leader::LeaderElection;

/// How `run` runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Leader election, or None for a single replica that reconciles at once.
    pub leader: Option<LeaderElection>,
    pub options: BuildOptions,
    /// This replica's name in events.
    pub identity: String,
}

/// Serves the HTTP endpoints on `listener` and runs the controller (as leader, when
/// configured) until `shutdown` turns true. Ready once the API server answered.
pub async fn run(
    client: Client,
    listener: TcpListener,
    config: RunConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        ready.clone(),
        stopped(shutdown.clone()),
    ));
    let version = client.apiserver_version().await?;
    tracing::info!(version = %version.git_version, "connected to the API server");
    ready.store(true, Ordering::Relaxed);
    let controller = || {
        controller::run(
            client.clone(),
            metrics.clone(),
            config.options.clone(),
            &config.identity,
            stopped(shutdown.clone()),
        )
    };
    let result = match &config.leader {
        Some(election) => {
            leader::run_as_leader(
                client.clone(),
                election,
                &metrics,
                shutdown.clone(),
                controller,
            )
            .await
        }
        None => controller().await,
    };
    ready.store(false, Ordering::Relaxed);
    server.abort();
    result
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

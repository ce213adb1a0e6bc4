//! A Kubernetes API server emulator that unmodified kube-rs and kubectl clients cannot
//! tell from the real one, for what they use (see `shared/kube-api-emulator.md`).
//!
//! Layers: [`http`] (the edge: paths, queries, JSON, Tables, watch streams) →
//! [`cluster`] (API semantics, also the in-process API for emulated controllers) →
//! [`store`] (objects, resourceVersions, history). [`resources`] is the table of kinds,
//! [`controllers`] the in-process controllers (garbage collection).

pub mod cluster;
pub mod controllers;
pub mod error;
pub mod http;
pub mod meta;
pub mod patch;
pub mod resources;
pub mod schema;
pub mod select;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use cluster::Cluster;
pub use error::ApiError;

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Change events kept for watch resumes. Older resume points get 410 Expired — the
    /// real server keeps a few minutes of history; this is that, counted in events.
    pub history_capacity: usize,
    /// How often a watch that allows bookmarks gets one. The real server sends them
    /// about once a minute; tests lower it.
    pub bookmark_interval: Duration,
    /// The local kubelet's state folder, whose `pods/<namespace>_<pod>/<container>.log`
    /// files `pods/{name}/log` serves (`kubectl logs`); `None` answers that nothing
    /// serves pod logs here.
    pub pod_logs: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            history_capacity: DEFAULT_HISTORY_CAPACITY,
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            pod_logs: None,
        }
    }
}

/// Default for [`Config::history_capacity`]: ample for an e2e run (a few thousand writes)
/// and a few MiB of memory at most.
pub const DEFAULT_HISTORY_CAPACITY: usize = 10_000;

/// Default for [`Config::bookmark_interval`], the real server's cadence.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// An emulated API server: state plus settings. Create it, keep [`ApiServer::cluster`]
/// for in-process access, then [`ApiServer::serve`].
#[derive(Debug, Clone)]
pub struct ApiServer {
    cluster: Cluster,
    config: Arc<Config>,
}

impl ApiServer {
    /// A server with the built-in kinds and the standard namespaces.
    pub fn new(config: Config) -> Result<Self, ApiError> {
        Ok(Self {
            cluster: Cluster::new(config.history_capacity)?,
            config: Arc::new(config),
        })
    }

    /// The in-process API: what emulated controllers (and tests) use directly.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Serves HTTP on an already-bound `listener` until `shutdown` resolves; open watches
    /// end then, so shutdown does not wait for their timeouts.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        let (down_tx, down_rx) = tokio::sync::watch::channel(false);
        let state = http::AppState {
            cluster: self.cluster.clone(),
            config: self.config.clone(),
            shutdown: down_rx,
            addr,
        };
        let gc = tokio::spawn(controllers::gc::run(self.cluster.clone()));
        let result = axum::serve(listener, http::router(state))
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = down_tx.send(true);
            })
            .await;
        gc.abort();
        result
    }
}

/// Serves a default emulator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), crate::Error> {
    ApiServer::new(Config::default())?
        .serve(listener, shutdown)
        .await?;
    Ok(())
}

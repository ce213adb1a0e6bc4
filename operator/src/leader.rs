//! Leader election on a coordination.k8s.io Lease (kube-lease-manager), so two or
//! more operator replicas can run for availability while exactly one reconciles.
//! A replica that loses the lease stops at once and exits with an error: its
//! in-memory state may be stale, and a restart is the simplest clean standby.

use std::future::Future;

use kube::Client;
use kube_lease_manager::{DurationSeconds, LeaseManagerBuilder};
use tokio::sync::watch;

use crate::Error;
use crate::metrics::Metrics;

/// How long a lease holder may go silent before another replica takes over.
pub const LEASE_DURATION: DurationSeconds = 15;
/// How long before expiry the holder renews; also the clock skew tolerated.
pub const LEASE_GRACE: DurationSeconds = 5;

/// Where the lease lives and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub lease_name: String,
    pub namespace: String,
    /// Unique among replicas: the pod name.
    pub identity: String,
}

/// Waits for the lease, then runs `work` while holding it. Returns when `work`
/// returns, with [`Error::LeadershipLost`] when the lease is lost first, or with
/// `Ok` when `shutdown` turns true before the lease was won.
pub async fn run_as_leader<F>(
    client: Client,
    election: &LeaderElection,
    metrics: &Metrics,
    mut shutdown: watch::Receiver<bool>,
    work: impl FnOnce() -> F,
) -> Result<(), Error>
where
    F: Future<Output = Result<(), Error>>,
{
    let manager = LeaseManagerBuilder::new(client, &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(LEASE_DURATION)
        .with_grace(LEASE_GRACE)
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    tracing::info!(lease = %election.lease_name, identity = %election.identity, "waiting for the leader lease");
    let acquired = tokio::select! {
        won = leading.wait_for(|leader| *leader) => won.is_ok(),
        _ = shutdown.wait_for(|stop| *stop) => false,
    };
    let result = if acquired {
        tracing::info!("acquired the leader lease");
        metrics.set_leader(true);
        let result = tokio::select! {
            result = work() => result,
            _ = leading.wait_for(|leader| !*leader) => Err(Error::LeadershipLost),
        };
        metrics.set_leader(false);
        result
    } else {
        Ok(())
    };
    // Closing the channel makes the manager release the lease, so a standby takes
    // over at once instead of after the lease expires.
    drop(leading);
    match task.await {
        Ok(Ok(_)) => tracing::info!("released the leader lease"),
        Ok(Err(error)) => tracing::warn!(%error, "releasing the leader lease"),
        Err(error) => tracing::warn!(%error, "lease manager task"),
    }
    result
}

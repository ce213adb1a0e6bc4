//! The operator's one error type. A spec that cannot work is not an error here: it
//! becomes a Degraded condition and an event (see `status::Blocker`), because
//! retrying it fast would change nothing.

/// What can go wrong while reconciling, rendering or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed (network, 5xx, conflict, forbidden).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// The CacheCluster CRD is not installed, so there is nothing to watch.
    #[error(
        "the CacheCluster CRD is not installed ({0}); install it with `kubectl apply -f crds/cachecluster.yaml`"
    )]
    CrdMissing(kube::Error),

    /// Leader election could not run.
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),

    /// Another replica holds the lease now; this one must stop reconciling.
    #[error("lost the leader lease")]
    LeadershipLost,

    /// A manifest given to `render` is not a CacheCluster, or not valid.
    #[error("{0}")]
    Manifest(String),

    /// A spec given to `render` cannot work.
    #[error("CacheCluster {name}: {problems}")]
    InvalidSpec { name: String, problems: String },

    /// Reading a file or serving HTTP failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A short, bounded label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(status)) => match status.code {
                403 => "forbidden",
                404 => "not_found",
                409 => "conflict",
                422 => "invalid",
                429 => "throttled",
                500..=599 => "server_error",
                _ => "api_error",
            },
            Self::Kube(_) => "transport",
            Self::CrdMissing(_) => "crd_missing",
            Self::Lease(_) => "lease",
            Self::LeadershipLost => "leadership_lost",
            Self::Manifest(_) | Self::InvalidSpec { .. } => "invalid_manifest",
            Self::Io(_) => "io",
        }
    }
}

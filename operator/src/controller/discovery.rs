//! Whether the Prometheus Operator's kinds exist in this cluster. The answer is
//! cached for a while, so a Prometheus Operator installed after kcache is picked up
//! without a restart, and a reconcile does not cost a discovery call each time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::Client;

use crate::build::MONITORING_GROUP_VERSION;

/// How long a discovery answer is trusted.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// Which monitoring kinds the API server serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitoringKinds {
    pub service_monitor: bool,
    pub prometheus_rule: bool,
}

/// A cached answer to "is monitoring.coreos.com/v1 served, with which kinds?".
#[derive(Debug, Default)]
pub struct MonitoringDiscovery {
    cached: Mutex<Option<(Instant, MonitoringKinds)>>,
}

impl MonitoringDiscovery {
    /// The kinds served, from the cache or one discovery request. A missing group
    /// (404) is an answer, not an error.
    pub async fn kinds(&self, client: &Client) -> Result<MonitoringKinds, kube::Error> {
        if let Some((at, kinds)) = *self.cached.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(kinds);
        }
        let kinds = match client
            .list_api_group_resources(MONITORING_GROUP_VERSION)
            .await
        {
            Ok(list) => MonitoringKinds {
                service_monitor: list.resources.iter().any(|r| r.name == "servicemonitors"),
                prometheus_rule: list.resources.iter().any(|r| r.name == "prometheusrules"),
            },
            Err(kube::Error::Api(status)) if status.code == 404 => MonitoringKinds::default(),
            Err(e) => return Err(e),
        };
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), kinds));
        Ok(kinds)
    }
}

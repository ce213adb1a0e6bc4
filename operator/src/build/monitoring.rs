//! Prometheus Operator objects, built as dynamic objects: their CRDs may not be
//! installed, and the operator must not depend on their Rust types to run without
//! them.

use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::Cluster;
use super::meta::{ADMIN_PORT_NAME, SERVICE_ROLE_LABEL, headless_service_name, owned_meta};
use super::services::HEADLESS_ROLE;

/// The API group both kinds live in; one discovery call tells whether it exists.
pub const MONITORING_GROUP_VERSION: &str = "monitoring.coreos.com/v1";

/// `monitoring.coreos.com/v1` ServiceMonitor.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// `monitoring.coreos.com/v1` PrometheusRule.
pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        "prometheusrules",
    )
}

/// Scrapes `/metrics` of every node through the headless Service's endpoints (and
/// only that Service, so each node is scraped once).
pub fn service_monitor(cluster: &Cluster<'_>) -> DynamicObject {
    let wanted = &cluster.resource.spec.monitoring.service_monitor;
    let mut meta = owned_meta(cluster, cluster.name.clone());
    if let Some(extra) = &wanted.labels {
        meta.labels.get_or_insert_default().extend(extra.clone());
    }
    let mut selector = super::meta::selector_labels(&cluster.name);
    selector.insert(SERVICE_ROLE_LABEL.to_owned(), HEADLESS_ROLE.to_owned());
    let mut object = DynamicObject::new(&cluster.name, &service_monitor_resource()).data(json!({
        "spec": {
            "selector": {"matchLabels": selector},
            "endpoints": [{
                "port": ADMIN_PORT_NAME,
                "path": "/metrics",
                "interval": wanted.interval,
            }],
        }
    }));
    object.metadata = meta;
    object
}

/// The kcache alerts, scoped to this cluster's series by the `namespace` and
/// `service` labels the Prometheus Operator attaches to every scraped target.
pub fn prometheus_rule(cluster: &Cluster<'_>) -> DynamicObject {
    let wanted = &cluster.resource.spec.monitoring.prometheus_rule;
    let mut meta = owned_meta(cluster, cluster.name.clone());
    if let Some(extra) = &wanted.labels {
        meta.labels.get_or_insert_default().extend(extra.clone());
    }
    let scope = format!(
        r#"namespace="{}", service="{}""#,
        cluster.namespace,
        headless_service_name(&cluster.name)
    );
    let name = &cluster.name;
    let mut object = DynamicObject::new(name, &prometheus_rule_resource()).data(json!({
        "spec": {
            "groups": [{
                "name": format!("kcache-{name}"),
                "rules": [
                    {
                        "alert": "KcacheNodeDown",
                        "expr": format!("up{{{scope}}} == 0"),
                        "for": "5m",
                        "labels": {"severity": "warning"},
                        "annotations": {
                            "summary": "A kcache node is not being scraped",
                            "description": format!("{{{{ $labels.pod }}}} of kcache cluster {name} has been down for 5 minutes; its keys are served by their other copies, or missed."),
                        },
                    },
                    {
                        "alert": "KcacheHighErrorRate",
                        "expr": format!(
                            r#"sum(rate(kcache_requests_total{{{scope}, code=~"Unknown|Internal|Unavailable|DataLoss|DeadlineExceeded"}}[5m])) / sum(rate(kcache_requests_total{{{scope}}}[5m])) > 0.01"#
                        ),
                        "for": "10m",
                        "labels": {"severity": "warning"},
                        "annotations": {
                            "summary": "kcache requests are failing",
                            "description": format!("More than 1% of the requests to kcache cluster {name} failed with a server error over the last 10 minutes."),
                        },
                    },
                    {
                        "alert": "KcacheHighLatency",
                        "expr": format!(
                            "histogram_quantile(0.99, sum by (le) (rate(kcache_request_duration_seconds_bucket{{{scope}}}[5m]))) > 0.05"
                        ),
                        "for": "15m",
                        "labels": {"severity": "warning"},
                        "annotations": {
                            "summary": "kcache is slow",
                            "description": format!("The 99th percentile latency of kcache cluster {name} has been above 50ms for 15 minutes."),
                        },
                    },
                ],
            }],
        }
    }));
    object.metadata = meta;
    object
}

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

/// The kcache node alerts, the same rules the Helm chart ships for every cluster:
/// both come from this one file, whose placeholder stands for the label matchers.
pub(super) const NODE_ALERTS: &str =
    include_str!("../../../charts/kcache-operator/files/alerts/nodes.yaml");

/// What [`NODE_ALERTS`] writes where the label matchers go.
const SELECTOR_PLACEHOLDER: &str = "KCACHE_SELECTOR";

/// The node alerts over the series the `selector` label matchers pick.
fn node_alert_rules(selector: &str) -> serde_json::Value {
    serde_yaml::from_str(&NODE_ALERTS.replace(SELECTOR_PLACEHOLDER, selector))
        .expect("the node alerts are a YAML list of rules (tested)")
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
                "rules": node_alert_rules(&scope),
            }],
        }
    }));
    object.metadata = meta;
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_node_alerts_parse_and_every_one_is_scoped_by_the_selector() {
        let rules = node_alert_rules(r#"namespace="apps""#);
        let rules = rules.as_array().expect("a list of rules");
        assert_eq!(rules.len(), NODE_ALERTS.matches("- alert: ").count());
        for rule in rules {
            let expr = rule["expr"].as_str().expect("an expr");
            assert!(!expr.contains(SELECTOR_PLACEHOLDER), "{expr}");
            assert!(expr.contains(r#"{namespace="apps""#), "{expr}");
            assert!(rule["annotations"]["runbook_url"].is_string(), "{rule}");
        }
    }
}

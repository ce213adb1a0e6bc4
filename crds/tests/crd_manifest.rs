#![allow(clippy::unwrap_used)]
//! The committed CRD manifest is what the code generates, and it carries what
//! `kubectl` and the API server need: descriptions, subresources, printer columns.

use serde_json::Value;

const COMMITTED: &str = include_str!("../cachecluster.yaml");

fn committed() -> Value {
    serde_yaml::from_str(COMMITTED).unwrap()
}

fn version(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]
}

#[test]
fn committed_crd_matches_what_crdgen_prints() {
    assert!(
        COMMITTED == kcache_crd::crd_yaml(),
        "crds/cachecluster.yaml is stale: run `cargo run -p kcache-crd --bin crdgen > crds/cachecluster.yaml`"
    );
}

#[test]
fn every_schema_property_has_a_description_for_kubectl_explain() {
    fn walk(schema: &Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                let top_level =
                    path.is_empty() && matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
                if prop.get("description").is_none() && !top_level {
                    missing.push(here.clone());
                }
                walk(prop, &here, missing);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(inner) = schema.get(key).filter(|v| v.is_object()) {
                walk(inner, path, missing);
            }
        }
    }
    let crd = committed();
    let mut missing = Vec::new();
    walk(
        &version(&crd)["schema"]["openAPIV3Schema"],
        "",
        &mut missing,
    );
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

#[test]
fn scale_subresource_points_at_replicas_and_the_status_selector() {
    let crd = committed();
    let scale = &version(&crd)["subresources"]["scale"];
    assert_eq!(scale["specReplicasPath"], ".spec.replicas");
    assert_eq!(scale["statusReplicasPath"], ".status.replicas");
    assert_eq!(scale["labelSelectorPath"], ".status.selector");
    assert!(version(&crd)["subresources"]["status"].is_object());
}

#[test]
fn printer_columns_are_replicas_ready_phase_age() {
    let crd = committed();
    let names: Vec<&str> = version(&crd)["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Replicas", "Ready", "Phase", "Age"]);
}

#[test]
fn the_resource_is_namespaced_kcache_io_v1alpha1_with_short_name_kc() {
    let crd = committed();
    assert_eq!(crd["metadata"]["name"], "cacheclusters.kcache.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "kc");
    assert_eq!(version(&crd)["name"], "v1alpha1");
}

#[test]
fn an_empty_spec_gets_every_default() {
    let spec = kcache_crd::CacheClusterSpec::default();
    assert_eq!(spec.replicas, 3);
    assert_eq!(spec.replication_factor, 1);
    assert_eq!(spec.max_value_size, "1Mi");
    assert_eq!(spec.drain_timeout, "30s");
    assert!(spec.pod_disruption_budget.enabled);
    assert!(!spec.monitoring.service_monitor.enabled);
    assert!(!spec.network_policy.enabled);
}

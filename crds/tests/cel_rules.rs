#![allow(clippy::unwrap_used)]
//! The CEL rules of the committed CRD, evaluated the way the API server does
//! (schema defaults applied first) with kube's client-side CEL validator. Each rule
//! has a case it admits and a case it rejects, so a rule that never fires is caught.

use kube::core::cel::{ScopeContext, Validator, analyze_rule, compile_schema};
use serde_json::{Value, json};

fn schema() -> Value {
    let crd: Value = serde_yaml::from_str(include_str!("../cachecluster.yaml")).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn cluster(spec: Value) -> Value {
    json!({
        "apiVersion": "kcache.io/v1alpha1",
        "kind": "CacheCluster",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": spec,
    })
}

/// The messages of the rules that reject `spec`; empty when it is admitted.
fn violations(spec: Value) -> Vec<String> {
    match Validator::new().validate(&schema(), &cluster(spec), None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_admitted(spec: Value) {
    let v = violations(spec.clone());
    assert!(v.is_empty(), "{spec} was rejected: {v:?}");
}

fn assert_rejected(spec: Value, needle: &str) {
    let v = violations(spec.clone());
    assert!(
        v.iter().any(|m| m.contains(needle)),
        "{spec}: expected {needle:?} in {v:?}"
    );
}

#[test]
fn an_empty_spec_passes_every_rule_once_defaulted() {
    assert_admitted(json!({}));
}

#[test]
fn replication_factor_may_not_exceed_replicas() {
    assert_admitted(json!({"replicas": 2, "replicationFactor": 2}));
    assert_rejected(
        json!({"replicas": 2, "replicationFactor": 3}),
        "replicationFactor must not exceed replicas",
    );
    // Defaults count: three replicas by default.
    assert_rejected(
        json!({"replicationFactor": 4}),
        "replicationFactor must not exceed replicas",
    );
}

#[test]
fn the_replication_rule_points_kubectl_at_the_replication_factor_field() {
    let errors = Validator::new()
        .validate(
            &schema(),
            &cluster(json!({"replicas": 1, "replicationFactor": 2})),
            None,
        )
        .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.field_path.ends_with("replicationFactor")),
        "{errors:?}"
    );
}

/// maxMemory against resources.limits.memory is the operator's check (Degraded naming
/// spec.maxMemory), not a CEL rule: a rule reading the int-or-string limit has no
/// bounded cost, and a real kube-apiserver refuses the whole CRD for it ("estimated
/// rule cost exceeds budget by factor of more than 100x"). So admission lets it by.
#[test]
fn max_memory_above_the_memory_limit_is_left_to_the_operator() {
    let limits = |memory: Value| json!({"limits": {"memory": memory}});
    assert_admitted(json!({"maxMemory": "768Mi", "resources": limits(json!("1Gi"))}));
    assert_admitted(json!({"maxMemory": "2G", "resources": limits(json!("1Gi"))}));
}

#[test]
fn max_memory_has_a_floor_of_one_mebibyte() {
    assert_admitted(json!({"maxMemory": "1Mi"}));
    assert_rejected(
        json!({"maxMemory": "512Ki"}),
        "maxMemory must be at least 1Mi",
    );
}

#[test]
fn max_value_size_may_not_exceed_max_memory() {
    assert_admitted(json!({"maxMemory": "64Mi", "maxValueSize": "64Mi"}));
    assert_rejected(
        json!({"maxMemory": "64Mi", "maxValueSize": "65Mi"}),
        "maxValueSize must not exceed maxMemory",
    );
    assert_rejected(
        json!({"maxValueSize": "0"}),
        "maxValueSize must be at least 1 byte",
    );
}

#[test]
fn drain_timeout_is_bounded_between_five_seconds_and_an_hour() {
    assert_admitted(json!({"drainTimeout": "5s"}));
    assert_admitted(json!({"drainTimeout": "1h"}));
    assert_admitted(json!({"drainTimeout": "2m30s"}));
    assert_rejected(
        json!({"drainTimeout": "4s"}),
        "drainTimeout must be between 5s and 1h",
    );
    assert_rejected(
        json!({"drainTimeout": "1h1s"}),
        "drainTimeout must be between 5s and 1h",
    );
}

#[test]
fn default_ttl_is_at_most_a_year() {
    assert_admitted(json!({"defaultTTL": "8760h"}));
    assert_admitted(json!({"defaultTTL": "0s"}));
    assert_rejected(
        json!({"defaultTTL": "8761h"}),
        "defaultTTL must be at most 8760h",
    );
}

#[test]
fn a_disruption_budget_takes_min_available_or_max_unavailable_not_both() {
    assert_admitted(json!({"podDisruptionBudget": {"minAvailable": 2}}));
    assert_admitted(json!({"podDisruptionBudget": {"maxUnavailable": "25%"}}));
    assert_rejected(
        json!({"podDisruptionBudget": {"minAvailable": 2, "maxUnavailable": 1}}),
        "set at most one of minAvailable and maxUnavailable",
    );
}

#[test]
fn scrape_interval_is_at_least_a_second() {
    assert_admitted(
        json!({"monitoring": {"serviceMonitor": {"enabled": true, "interval": "15s"}}}),
    );
    assert_rejected(
        json!({"monitoring": {"serviceMonitor": {"enabled": true, "interval": "500ms"}}}),
        "interval must be at least 1s",
    );
}

#[test]
fn every_rule_compiles_and_stays_within_the_api_servers_cost_budget() {
    let compiled = compile_schema(&schema());
    assert!(
        !compiled.has_errors(),
        "{:?}",
        compiled.compilation_errors()
    );
    let rules = collect_rules(&schema());
    assert!(
        rules.len() >= 8,
        "expected every rule to be found, got {rules:?}"
    );
    for rule in rules {
        let rule = rule.as_str().unwrap();
        let warnings = analyze_rule(rule, &compiled, ScopeContext::CrdValidation);
        assert!(warnings.is_empty(), "{rule}: {warnings:?}");
    }
}

fn collect_rules(v: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                out.extend(rules.iter().map(|r| r["rule"].clone()));
            }
            map.values().for_each(|x| out.extend(collect_rules(x)));
        }
        Value::Array(items) => items.iter().for_each(|x| out.extend(collect_rules(x))),
        _ => {}
    }
    out
}

#[test]
fn the_shipped_examples_pass_every_rule() {
    for (name, text) in [
        (
            "cachecluster-minimal.yaml",
            include_str!("../../examples/cachecluster-minimal.yaml"),
        ),
        (
            "cachecluster-production.yaml",
            include_str!("../../examples/cachecluster-production.yaml"),
        ),
    ] {
        let example: Value = serde_yaml::from_str(text).unwrap();
        let result = Validator::new().validate(&schema(), &example, None);
        assert!(result.is_ok(), "{name}: {result:?}");
        // And they are CacheClusters the Rust types read.
        serde_json::from_value::<kcache_crd::CacheCluster>(example).unwrap();
    }
}

//! The EndpointSlice controller, as kube-controller-manager's behaves for what kcache
//! uses: for each Service with a selector, one slice of the matching pods that have an
//! address, with ready/serving/terminating conditions, `hostname` for pods under a
//! headless Service (their `subdomain`), `targetRef`, and named ports resolved against
//! the pods' container ports. Slices are owned by their Service, so they go with it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use super::{condition_true, run_loop, selector_matches, wake_on_changes};

/// The label naming a slice's Service (what kcache nodes and DNS select on).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The real controller's name in [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Runs the controller until `stop` is set.
pub async fn run(client: Client, stop: tokio::sync::watch::Receiver<bool>) {
    let notify = Arc::new(Notify::new());
    let watches = [
        wake_on_changes(Api::<Service>::all(client.clone()), notify.clone()),
        wake_on_changes(Api::<Pod>::all(client.clone()), notify.clone()),
        wake_on_changes(Api::<EndpointSlice>::all(client.clone()), notify.clone()),
    ];
    run_loop("endpointslice", notify, stop, || reconcile_all(&client)).await;
    for w in watches {
        w.abort();
    }
}

async fn reconcile_all(client: &Client) -> Result<(), kube::Error> {
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let managed = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    let slices = Api::<EndpointSlice>::all(client.clone())
        .list(&ListParams::default().labels(&managed))
        .await?
        .items;
    for service in services {
        let ns = service.namespace().unwrap_or_default();
        let name = service.name_any();
        let mine: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| {
                s.namespace().as_deref() == Some(ns.as_str())
                    && s.labels().get(SERVICE_NAME_LABEL) == Some(&name)
            })
            .collect();
        let Some(want) = desired(&service, &pods) else {
            continue;
        };
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
        if let Err(e) = converge(&api, &mine, want).await {
            tracing::warn!(service = %name, error = %e, "endpointslice update failed");
        }
    }
    Ok(())
}

/// Makes the Service's slices exactly `want`: update the first, delete the rest.
async fn converge(
    api: &Api<EndpointSlice>,
    existing: &[&EndpointSlice],
    mut want: EndpointSlice,
) -> Result<(), kube::Error> {
    match existing.split_first() {
        None => {
            api.create(&PostParams::default(), &want).await?;
        }
        Some((first, rest)) => {
            if !same(first, &want) {
                want.metadata.name = first.metadata.name.clone();
                want.metadata.generate_name = None;
                want.metadata.resource_version = first.metadata.resource_version.clone();
                api.replace(&first.name_any(), &PostParams::default(), &want)
                    .await?;
            }
            for extra in rest {
                api.delete(&extra.name_any(), &DeleteParams::default())
                    .await?;
            }
        }
    }
    Ok(())
}

fn same(have: &EndpointSlice, want: &EndpointSlice) -> bool {
    have.endpoints == want.endpoints
        && have.ports == want.ports
        && have.metadata.labels == want.metadata.labels
}

/// The slice a Service should have, or `None` for a Service without a selector (its
/// endpoints are someone else's business).
pub fn desired(service: &Service, pods: &[Pod]) -> Option<EndpointSlice> {
    let spec = service.spec.as_ref()?;
    let selector = spec.selector.clone().filter(|s| !s.is_empty())?;
    let ns = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let selector = LabelSelector {
        match_labels: Some(selector),
        match_expressions: None,
    };
    let mut members: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| selector_matches(&selector, p.labels()))
        .filter(|p| {
            let status = p.status.as_ref();
            let phase = status.and_then(|s| s.phase.as_deref());
            status.and_then(|s| s.pod_ip.as_deref()).is_some()
                && !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .collect();
    members.sort_by_key(|p| p.name_any());

    let endpoints = members
        .iter()
        .map(|pod| {
            let status = pod.status.clone().unwrap_or_default();
            let terminating = pod.metadata.deletion_timestamp.is_some();
            // The real controller's rule: serving follows readiness; ready is
            // serving and not terminating, or anything when not-ready addresses are
            // published.
            let serving = condition_true(&status, "Ready");
            let pod_spec = pod.spec.clone().unwrap_or_default();
            let hostname = pod_spec
                .hostname
                .clone()
                .filter(|_| pod_spec.subdomain.as_deref() == Some(name.as_str()));
            Endpoint {
                addresses: vec![status.pod_ip.clone().unwrap_or_default()],
                conditions: Some(EndpointConditions {
                    ready: Some(publish_not_ready || (serving && !terminating)),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                hostname,
                node_name: pod_spec.node_name.clone(),
                target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some(pod.name_any()),
                    namespace: Some(ns.clone()),
                    uid: pod.uid(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();

    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|port| EndpointPort {
            name: Some(port.name.clone().unwrap_or_default()),
            port: Some(resolve_target_port(port, &members)),
            protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: port.app_protocol.clone(),
        })
        .collect();

    let mut labels: BTreeMap<String, String> = service.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    if headless {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    Some(EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: Some(ns),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name,
                uid: service.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports),
    })
}

/// A Service port's target: a number, a container port name (looked up on the pods), or
/// the Service port itself when unset.
fn resolve_target_port(port: &k8s_openapi::api::core::v1::ServicePort, pods: &[&Pod]) -> i32 {
    match &port.target_port {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(named)) => pods
            .iter()
            .flat_map(|p| p.spec.iter().flat_map(|s| s.containers.iter()))
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(named.as_str()))
            .map(|p| p.container_port)
            .unwrap_or(port.port),
        None => port.port,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, ip: Option<&str>, ready: bool, terminating: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "demo"},
                         "deletionTimestamp": terminating.then_some("2026-01-01T00:00:00Z")},
            "spec": {"hostname": name, "subdomain": "demo-headless",
                     "containers": [{"name": "c", "ports": [{"name": "grpc", "containerPort": 7000}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .expect("a valid pod")
    }

    fn service(headless: bool) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "demo-headless", "namespace": "default", "uid": "u1"},
            "spec": {"selector": {"app": "demo"}, "clusterIP": if headless {"None"} else {"10.0.0.1"},
                     "ports": [{"name": "grpc", "port": 7000, "targetPort": "grpc"}]},
        }))
        .expect("a valid service")
    }

    #[test]
    fn endpoints_carry_readiness_termination_hostname_and_resolved_ports() {
        let pods = [
            pod("demo-0", Some("127.0.0.10"), true, false),
            pod("demo-1", Some("127.0.0.11"), false, false),
            pod("demo-2", Some("127.0.0.12"), true, true),
            pod("demo-3", None, false, false),
        ];
        let slice = desired(&service(true), &pods).expect("a slice");
        let summary: Vec<_> = slice
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap_or_default();
                (
                    e.addresses[0].as_str(),
                    e.hostname.as_deref(),
                    c.ready,
                    c.serving,
                    c.terminating,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "127.0.0.10",
                    Some("demo-0"),
                    Some(true),
                    Some(true),
                    Some(false)
                ),
                (
                    "127.0.0.11",
                    Some("demo-1"),
                    Some(false),
                    Some(false),
                    Some(false)
                ),
                (
                    "127.0.0.12",
                    Some("demo-2"),
                    Some(false),
                    Some(true),
                    Some(true)
                ),
            ]
        );
        let ports = slice.ports.expect("ports");
        assert_eq!(ports[0].port, Some(7000));
        assert_eq!(ports[0].name.as_deref(), Some("grpc"));
        let labels = slice.metadata.labels.expect("labels");
        assert_eq!(labels[SERVICE_NAME_LABEL], "demo-headless");
        assert!(labels.contains_key("service.kubernetes.io/headless"));
    }

    #[test]
    fn published_not_ready_addresses_are_ready_and_serving_follows_readiness() {
        let mut svc = service(true);
        svc.spec.as_mut().expect("spec").publish_not_ready_addresses = Some(true);
        let pods = [
            pod("demo-0", Some("127.0.0.10"), false, false),
            pod("demo-1", Some("127.0.0.11"), true, true),
        ];
        let slice = desired(&svc, &pods).expect("a slice");
        let conditions: Vec<_> = slice
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap_or_default();
                (c.ready, c.serving, c.terminating)
            })
            .collect();
        assert_eq!(
            conditions,
            vec![
                (Some(true), Some(false), Some(false)),
                (Some(true), Some(true), Some(true)),
            ]
        );
    }

    #[test]
    fn a_service_without_a_selector_gets_no_slice() {
        let mut svc = service(false);
        svc.spec.as_mut().expect("spec").selector = None;
        assert!(desired(&svc, &[]).is_none());
    }
}

//! The records of the cluster domain, computed from Services and EndpointSlices.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

/// The cluster domain.
pub const DOMAIN: &str = "cluster.local";

/// One SRV answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    /// Port.
    pub port: u16,
    /// Target host name (fully qualified, no trailing dot).
    pub target: String,
}

/// Every record, by lower-case name without the trailing dot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Zone {
    /// A records.
    pub a: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// SRV records.
    pub srv: BTreeMap<String, BTreeSet<Srv>>,
}

impl Zone {
    /// The zone for these Services and slices.
    pub fn build(services: &[Service], slices: &[EndpointSlice]) -> Self {
        let mut zone = Self::default();
        for service in services {
            zone.add_service(service, slices);
        }
        zone
    }

    /// Whether `name` (lower case, no trailing dot) is inside the cluster domain.
    pub fn covers(name: &str) -> bool {
        name == DOMAIN || name.ends_with(&format!(".{DOMAIN}"))
    }

    /// Whether any record type exists at `name` (NODATA rather than NXDOMAIN).
    pub fn has_name(&self, name: &str) -> bool {
        self.a.contains_key(name) || self.srv.contains_key(name)
    }

    fn add_service(&mut self, service: &Service, slices: &[EndpointSlice]) {
        let name = service.name_any();
        let ns = service.namespace().unwrap_or_default();
        let base = format!("{name}.{ns}.svc.{DOMAIN}");
        let spec = service.spec.clone().unwrap_or_default();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        // The name exists even while no endpoint is ready (NODATA, not NXDOMAIN).
        self.a.entry(base.clone()).or_default();
        let mine = slices.iter().filter(|s| {
            s.namespace().as_deref() == Some(ns.as_str())
                && s.labels().get("kubernetes.io/service-name") == Some(&name)
        });
        for slice in mine {
            if slice.address_type != "IPv4" {
                continue;
            }
            for endpoint in &slice.endpoints {
                // `ready` unset means ready (the API's rule for consumers).
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    let Ok(ip) = address.parse::<Ipv4Addr>() else {
                        continue;
                    };
                    self.a.entry(base.clone()).or_default().insert(ip);
                    let host = endpoint
                        .hostname
                        .clone()
                        .unwrap_or_else(|| address.replace('.', "-"));
                    let host_name = format!("{host}.{base}");
                    if headless {
                        self.a.entry(host_name.clone()).or_default().insert(ip);
                    }
                    for port in slice.ports.iter().flatten() {
                        let (Some(port_name), Some(number)) = (&port.name, port.port) else {
                            continue;
                        };
                        if port_name.is_empty() {
                            continue;
                        }
                        let proto = port.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                        let srv_name = format!("_{port_name}._{proto}.{base}");
                        let target = if headless {
                            host_name.clone()
                        } else {
                            base.clone()
                        };
                        let port = if headless {
                            u16::try_from(number).unwrap_or(0)
                        } else {
                            spec.ports
                                .iter()
                                .flatten()
                                .find(|p| p.name.as_deref() == Some(port_name.as_str()))
                                .and_then(|p| u16::try_from(p.port).ok())
                                .unwrap_or(0)
                        };
                        self.srv
                            .entry(srv_name)
                            .or_default()
                            .insert(Srv { port, target });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_headless_service_resolves_to_its_ready_pods_by_name_and_srv() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "demo-headless", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"name": "grpc", "port": 7000}]},
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "demo-headless-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "demo-headless"}},
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": 7000, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["127.0.0.10"], "hostname": "demo-0", "conditions": {"ready": true}},
                {"addresses": ["127.0.0.11"], "hostname": "demo-1", "conditions": {"ready": false}},
            ],
        }))
        .unwrap();
        let zone = Zone::build(&[service], &[slice]);
        let base = "demo-headless.default.svc.cluster.local";
        assert_eq!(
            zone.a[base].iter().copied().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(127, 0, 0, 10)]
        );
        assert!(zone.a.contains_key(&format!("demo-0.{base}")));
        assert!(!zone.a.contains_key(&format!("demo-1.{base}")));
        let srv = &zone.srv[&format!("_grpc._tcp.{base}")];
        assert_eq!(
            srv.iter().cloned().collect::<Vec<_>>(),
            vec![Srv {
                port: 7000,
                target: format!("demo-0.{base}")
            }]
        );
        assert!(Zone::covers(base));
        assert!(!Zone::covers("example.com"));
    }
}

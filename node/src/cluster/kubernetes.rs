//! Membership from the Kubernetes EndpointSlice API: the ready endpoints of the
//! headless Service are the members, their pod names the ids. Needs only list and
//! watch on `endpointslices` in the namespace.
//!
//! A reflector keeps the slices; it swaps its whole state only when a relist has
//! finished, so an API-server disconnect or a relist never drops members on the way.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kcache_client::placement::{Member, View};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

/// The members the slices describe: every endpoint not marked unready, named by its
/// pod (`targetRef.name`, else `hostname`), at its first address and `port`.
pub fn members_of(slices: &[Arc<EndpointSlice>], port: u16) -> Vec<Member> {
    slices
        .iter()
        .flat_map(|slice| {
            let port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some("grpc"))
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(port);
            slice.endpoints.iter().filter_map(move |endpoint| {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                let id = endpoint
                    .target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .or_else(|| endpoint.hostname.clone())?;
                let address = endpoint.addresses.first()?;
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address.clone()
                };
                ready.then(|| Member {
                    id,
                    address: format!("{host}:{port}"),
                })
            })
        })
        .collect()
}

/// Watches the EndpointSlices of `service` in `namespace` and publishes a view on
/// every change, until the sender has no receivers.
pub async fn watch_members(
    client: Client,
    namespace: &str,
    service: &str,
    port: u16,
    views: watch::Sender<Arc<View>>,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let config =
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
    let (reader, writer) = reflector::store();
    let mut events = reflector(writer, watcher(api, config))
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Err(err) => {
                tracing::warn!(%err, "EndpointSlice watch failed; retrying");
                continue;
            }
            // Mid-(re)list: the reflector swaps in the new state at InitDone; until
            // then it holds the previous one, which is what stays published.
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(_) => {}
        }
        let view = View::new(members_of(&reader.state(), port));
        let changed = views.send_if_modified(|current| {
            if current.epoch() == view.epoch() {
                return false;
            }
            tracing::info!(
                members = view.len(),
                epoch = view.epoch(),
                "membership changed"
            );
            *current = Arc::new(view);
            true
        });
        if !changed && views.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn endpoint(name: &str, ip: &str, ready: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready,
                ..EndpointConditions::default()
            }),
            target_ref: Some(ObjectReference {
                name: Some(name.into()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }

    #[test]
    fn ready_endpoints_become_members_named_by_their_pod() {
        let slice = EndpointSlice {
            endpoints: vec![
                endpoint("demo-0", "10.0.0.1", Some(true)),
                endpoint("demo-1", "10.0.0.2", None),
                endpoint("demo-2", "10.0.0.3", Some(false)),
            ],
            ports: Some(vec![EndpointPort {
                name: Some("grpc".into()),
                port: Some(7100),
                ..EndpointPort::default()
            }]),
            ..EndpointSlice::default()
        };
        let members = members_of(&[Arc::new(slice)], 7000);
        let ids: Vec<_> = members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["demo-0", "demo-1"]);
        assert_eq!(members[0].address, "10.0.0.1:7100");
    }

    #[test]
    fn an_endpoint_without_a_name_falls_back_to_its_hostname_or_is_skipped() {
        let mut named = endpoint("x", "fd00::1", Some(true));
        named.target_ref = None;
        named.hostname = Some("demo-4".into());
        let mut anonymous = endpoint("y", "10.0.0.9", Some(true));
        anonymous.target_ref = None;
        let slice = EndpointSlice {
            endpoints: vec![named, anonymous],
            ..EndpointSlice::default()
        };
        let members = members_of(&[Arc::new(slice)], 7000);
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].address, "[fd00::1]:7000");
    }
}

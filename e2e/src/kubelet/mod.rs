//! A kubelet for one node, as an ordinary API client: it registers its Node and keeps
//! its Lease, binds pods that have no node to itself (there is no scheduler here), and
//! runs each pod's containers as local processes, each pod on its own loopback address
//! 127.0.0.N, with the pod's probes, restarts and graceful termination.
//!
//! Containers become programs through [`runtime::IMAGE_TABLE`]; a pod's logs are in
//! `<state dir>/pods/<namespace>_<pod>/<container>.log`, the running process's id in
//! `<container>.pid` beside it. Their `secret`, `configMap` and `emptyDir` volumes are
//! files in the pod's folder that the containers are pointed at by rewriting mount paths
//! in their command, args and env, and kept up to date as the Secrets change: see
//! [`volume`].

pub mod node;
pub mod pod;
pub mod probe;
pub mod runtime;
pub mod volume;

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::controllers::{RESYNC, wake_on_changes};
use pod::StopKind;

/// How long pods get to stop when the kubelet itself stops (the local cluster going
/// down): long enough for a clean exit, short enough for a Ctrl-C.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Kubelet settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Node's name.
    pub node_name: String,
    /// Pod folders and logs.
    pub state_dir: PathBuf,
    /// Where the programs of [`runtime::IMAGE_TABLE`] are.
    pub bin_dir: PathBuf,
    /// The kubeconfig the kubelet uses; pods get its server (see [`pod::Shared`]).
    pub kubeconfig: PathBuf,
    /// The /24 pods get addresses in (its last octet is ignored): 127.0.0.0 by default;
    /// on a real control plane, which refuses loopback endpoint addresses, a network of
    /// a network namespace the caller made (e.g. 10.244.0.0 on its `lo`).
    pub pod_network: Ipv4Addr,
    /// Pod addresses are `<pod_network>.N` for N in this range.
    pub pod_ips: std::ops::RangeInclusive<u8>,
}

/// Pod addresses: `<network>.N`, handed out round the range so a freed address is not
/// reused at once (peers may still hold connections to it).
#[derive(Debug)]
struct IpPool {
    network: [u8; 3],
    range: std::ops::RangeInclusive<u8>,
    used: BTreeSet<u8>,
    next: u8,
}

impl IpPool {
    fn new(network: Ipv4Addr, range: std::ops::RangeInclusive<u8>) -> Self {
        let [a, b, c, _] = network.octets();
        Self {
            network: [a, b, c],
            next: *range.start(),
            range,
            used: BTreeSet::new(),
        }
    }

    /// The next free address where every port in `ports` can be bound.
    fn allocate(&mut self, ports: &[u16]) -> Option<Ipv4Addr> {
        let (start, end) = (*self.range.start(), *self.range.end());
        let span = u16::from(end - start) + 1;
        for _ in 0..span {
            let n = self.next;
            self.next = if n >= end { start } else { n + 1 };
            if self.used.contains(&n) {
                continue;
            }
            let [a, b, c] = self.network;
            let ip = Ipv4Addr::new(a, b, c, n);
            if ports
                .iter()
                .all(|p| std::net::TcpListener::bind((ip, *p)).is_ok())
            {
                self.used.insert(n);
                return Some(ip);
            }
        }
        None
    }

    fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip.octets()[3]);
    }
}

struct Worker {
    /// `namespace/name`.
    name: String,
    stop: watch::Sender<Option<StopKind>>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the kubelet until `stop` is set; then stops its pods (without removing them).
pub async fn run(client: Client, config: Config, mut stop: watch::Receiver<bool>) {
    let node = tokio::spawn(node::run(
        client.clone(),
        config.node_name.clone(),
        stop.clone(),
    ));
    let notify = Arc::new(Notify::new());
    let shared = Arc::new(pod::Shared {
        wake: notify.clone(),
        client: client.clone(),
        bin_dir: config.bin_dir.clone(),
        state_dir: config.state_dir.clone(),
        kubeconfig: config.kubeconfig.clone(),
    });
    let pool = Arc::new(Mutex::new(IpPool::new(
        config.pod_network,
        config.pod_ips.clone(),
    )));
    let watch = wake_on_changes(Api::<Pod>::all(client.clone()), notify.clone());
    let mut workers: HashMap<String, Worker> = HashMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        if let Err(e) = sync(&client, &config, &shared, &pool, &mut workers).await {
            tracing::warn!(error = %e, "kubelet sync failed (retrying)");
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
            // A dropped sender means stop too.
            changed = stop.changed() => if changed.is_err() { break },
        }
    }
    watch.abort();
    for worker in workers.values() {
        let _ = worker.stop.send(Some(StopKind {
            grace: SHUTDOWN_GRACE,
            delete: false,
        }));
    }
    for (_, worker) in workers.drain() {
        let _ = worker.task.await;
    }
    let _ = node.await;
}

async fn sync(
    client: &Client,
    config: &Config,
    shared: &Arc<pod::Shared>,
    pool: &Arc<Mutex<IpPool>>,
    workers: &mut HashMap<String, Worker>,
) -> Result<(), kube::Error> {
    workers.retain(|_, w| !w.task.is_finished());
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let mut seen = BTreeSet::new();
    for pod in pods {
        let uid = pod.uid().unwrap_or_default();
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        match node.as_deref() {
            None | Some("") if !deleting => bind(&api, &pod, &config.node_name).await,
            Some(n) if n == config.node_name => {
                seen.insert(uid.clone());
                if let Some(worker) = workers.get(&uid) {
                    if deleting && worker.stop.borrow().is_none() {
                        let grace = pod
                            .metadata
                            .deletion_grace_period_seconds
                            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
                            .unwrap_or_else(|| pod::pod_grace(&pod));
                        tracing::info!(pod = %worker.name, ?grace, "stopping pod (deleted)");
                        let _ = worker.stop.send(Some(StopKind {
                            grace,
                            delete: true,
                        }));
                    }
                } else if deleting {
                    // Never started here (or by a kubelet before this one): nothing to stop.
                    let _ = api
                        .delete(
                            &pod.name_any(),
                            &DeleteParams {
                                grace_period_seconds: Some(0),
                                ..Default::default()
                            },
                        )
                        .await;
                } else if !matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
                    // One incarnation of a pod name at a time, as the kubelet's pod
                    // workers do: a StatefulSet's successor waits until its predecessor's
                    // processes are gone (its worker's end wakes this loop again).
                    let full = format!("{ns}/{}", pod.name_any());
                    if workers
                        .values()
                        .any(|w| w.name == full && !w.task.is_finished())
                    {
                        tracing::info!(pod = %full, "waiting for the previous pod of this name to stop");
                    } else {
                        start(shared, pool, workers, pod);
                    }
                }
            }
            _ => {}
        }
    }
    // Pods removed from the API without waiting for us (force deletion): stop now.
    for (uid, worker) in workers.iter() {
        if !seen.contains(uid) && worker.stop.borrow().is_none() {
            let _ = worker.stop.send(Some(StopKind {
                grace: Duration::ZERO,
                delete: false,
            }));
        }
    }
    Ok(())
}

async fn bind(api: &Api<Pod>, pod: &Pod, node: &str) {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": pod.name_any(), "namespace": pod.namespace()},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let result: Result<serde_json::Value, _> = api
        .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
        .await;
    match result {
        Ok(_) => tracing::info!(pod = %pod.name_any(), %node, "bound pod"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %pod.name_any(), error = %e, "binding failed"),
    }
}

fn start(
    shared: &Arc<pod::Shared>,
    pool: &Arc<Mutex<IpPool>>,
    workers: &mut HashMap<String, Worker>,
    pod: Pod,
) {
    let uid = pod.uid().unwrap_or_default();
    let ports: Vec<u16> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    let Some(ip) = pool.lock().allocate(&ports) else {
        tracing::warn!(pod = %pod.name_any(), "no free pod address");
        return;
    };
    let (stop, stopped) = watch::channel(None);
    let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let (shared, pool) = (shared.clone(), pool.clone());
    let done = shared.wake.clone();
    let task = tokio::spawn(async move {
        pod::run(shared, pod, ip.to_string(), stopped).await;
        pool.lock().release(ip);
        // A successor of the same name may be waiting for this one to end.
        done.notify_one();
    });
    workers.insert(uid, Worker { name, stop, task });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_round_the_range_and_skip_busy_ones() {
        let busy = std::net::TcpListener::bind("127.0.0.41:0").unwrap();
        let busy_port = busy.local_addr().unwrap().port();
        let mut pool = IpPool::new(Ipv4Addr::LOCALHOST, 40..=42);
        assert_eq!(
            pool.allocate(&[busy_port]),
            Some(Ipv4Addr::new(127, 0, 0, 40))
        );
        // .41 has the port taken: skipped.
        assert_eq!(
            pool.allocate(&[busy_port]),
            Some(Ipv4Addr::new(127, 0, 0, 42))
        );
        assert_eq!(pool.allocate(&[busy_port]), None);
        pool.release(Ipv4Addr::new(127, 0, 0, 40));
        assert_eq!(
            pool.allocate(&[busy_port]),
            Some(Ipv4Addr::new(127, 0, 0, 40))
        );
    }
}

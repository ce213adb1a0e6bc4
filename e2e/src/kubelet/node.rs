//! The kubelet's Node: registered at start, its status and its Lease in
//! `kube-node-lease` renewed on the cadence a real kubelet keeps, so a real node
//! lifecycle controller sees a healthy node.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Memory this node reports (the machine's, roughly): what an unset memory limit is.
pub const MEMORY_BYTES: u64 = 16 << 30;
/// CPUs this node reports.
pub const CPUS: u64 = 2;
/// How often the Lease is renewed (the kubelet's default: a quarter of its 40 s duration).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The Lease duration the node lifecycle controller measures against.
pub const LEASE_SECONDS: i32 = 40;
/// The version this kubelet reports.
pub const KUBELET_VERSION: &str = "v1.33.0-kcache-local";

fn now() -> String {
    crate::apiserver::meta::now_time()
}

fn now_micro() -> String {
    crate::apiserver::meta::now_micro_time()
}

fn status(ready_since: &str) -> serde_json::Value {
    let heartbeat = now();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": heartbeat, "lastTransitionTime": ready_since})
    };
    json!({
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "localhost"}],
        "capacity": {"cpu": CPUS.to_string(), "memory": format!("{}Ki", MEMORY_BYTES >> 10), "pods": "110"},
        "allocatable": {"cpu": CPUS.to_string(), "memory": format!("{}Ki", MEMORY_BYTES >> 10), "pods": "110"},
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "kcache-local",
            "containerRuntimeVersion": "process://kcache-local", "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
        },
    })
}

/// Registers the Node (or takes over an existing one), then keeps its status and Lease
/// fresh until `stop` is set.
pub async fn run(client: Client, name: String, mut stop: tokio::sync::watch::Receiver<bool>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let ready_since = now();
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH, "node.kubernetes.io/instance-type": "kcache-local"}},
        "spec": {},
    }))
    .expect("a valid Node");
    loop {
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => break,
            Err(e) => tracing::warn!(error = %e, "registering the node (retrying)"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
    let uid = nodes.get(&name).await.ok().and_then(|n| n.metadata.uid);
    loop {
        let patch = Patch::Merge(json!({"status": status(&ready_since)}));
        if let Err(e) = nodes
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            tracing::warn!(error = %e, "node status update failed");
        }
        if let Err(e) = renew_lease(&leases, &name, uid.as_deref()).await {
            tracing::warn!(error = %e, "node lease renewal failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(LEASE_RENEW) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn renew_lease(
    leases: &Api<Lease>,
    name: &str,
    node_uid: Option<&str>,
) -> Result<(), kube::Error> {
    let owner =
        node_uid.map(|uid| json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]));
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": owner},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()},
    });
    leases
        .patch(
            name,
            &PatchParams::apply("kubelet").force(),
            &Patch::Apply(lease),
        )
        .await
        .map(drop)
}

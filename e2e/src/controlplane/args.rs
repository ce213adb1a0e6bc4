//! The command lines of etcd, kube-apiserver and kube-controller-manager: plain
//! functions of a [`Plan`], so what the control plane is made of reads in one place and
//! is unit-tested without starting anything.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::pki::Pki;

/// The controllers kcache relies on, and those they need to work as in a cluster
/// (namespaces and their deletion, the RBAC aggregated roles, Deployments and Jobs for
/// whatever a chart installs). Left out on purpose: the node lifecycle, IPAM and pod GC
/// controllers (they would evict or delete pods of a kubelet that does not report node
/// conditions the way the real one does) and the volume controllers (no storage here).
pub const CONTROLLERS: &[&str] = &[
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "statefulset-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "endpoints-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "clusterrole-aggregation-controller",
    "replicaset-controller",
    "deployment-controller",
    "disruption-controller",
    "job-controller",
    "resourcequota-controller",
];

/// Everything the three command lines are made from, decided before anything starts.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where etcd serves clients (kube-apiserver).
    pub etcd_client: SocketAddr,
    /// Where etcd's (single-member) peer listener binds.
    pub etcd_peer: SocketAddr,
    /// etcd's data directory.
    pub etcd_data: PathBuf,
    /// Where kube-apiserver serves HTTPS.
    pub apiserver: SocketAddr,
    /// Cluster IPs of Services, e.g. `10.96.0.0/16`.
    pub service_cidr: String,
    /// Keys and certificates.
    pub pki: Pki,
    /// The static token file with the admin token.
    pub token_file: PathBuf,
    /// The admin kubeconfig, which the controller-manager uses too.
    pub kubeconfig: PathBuf,
    /// Scratch directory kube-apiserver and kube-controller-manager would otherwise
    /// create under /var/run/kubernetes.
    pub cert_dir: PathBuf,
}

/// The service-account issuer: the in-cluster URL of the apiserver, as kubeadm sets it.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// etcd: one member, plain HTTP on loopback, no fsync (test data is disposable and
/// fsync dominates write latency on a shared disk).
pub fn etcd(plan: &Plan) -> Vec<String> {
    let client = format!("http://{}", plan.etcd_client);
    let peer = format!("http://{}", plan.etcd_peer);
    vec![
        "--name=default".into(),
        format!("--data-dir={}", path(&plan.etcd_data)),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=default={peer}"),
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

/// kube-apiserver: TLS with our CA's certificate, the admin token, RBAC (and the Node
/// authorizer, as in a real cluster), the default admission plugins (no
/// `--enable-admission-plugins`: the release's defaults are what clusters run),
/// service-account tokens signed with our key.
pub fn apiserver(plan: &Plan) -> Vec<String> {
    let host = plan.apiserver.ip();
    vec![
        format!("--etcd-servers=http://{}", plan.etcd_client),
        format!("--bind-address={host}"),
        format!("--advertise-address={}", advertise(host)),
        format!("--secure-port={}", plan.apiserver.port()),
        format!("--cert-dir={}", path(&plan.cert_dir)),
        format!("--tls-cert-file={}", path(&plan.pki.serving_cert)),
        format!("--tls-private-key-file={}", path(&plan.pki.serving_key)),
        format!("--client-ca-file={}", path(&plan.pki.ca_cert)),
        format!("--token-auth-file={}", path(&plan.token_file)),
        "--authorization-mode=Node,RBAC".into(),
        format!("--service-cluster-ip-range={}", plan.service_cidr),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!("--service-account-key-file={}", path(&plan.pki.sa_pub)),
        format!(
            "--service-account-signing-key-file={}",
            path(&plan.pki.sa_key)
        ),
        // The lease reconciler refuses a loopback advertise address, so the `kubernetes`
        // Service has no endpoints; clients here use the kubeconfig, not that Service.
        "--endpoint-reconciler-type=none".into(),
        "--allow-privileged=true".into(),
        "--v=1".into(),
    ]
}

/// kube-controller-manager: the [`CONTROLLERS`], talking to the apiserver with the admin
/// kubeconfig, signing service-account tokens with our key, no HTTPS endpoint of its own
/// and no leader election (one instance).
pub fn controller_manager(plan: &Plan) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", path(&plan.kubeconfig)),
        format!("--controllers={}", CONTROLLERS.join(",")),
        format!(
            "--service-account-private-key-file={}",
            path(&plan.pki.sa_key)
        ),
        format!("--root-ca-file={}", path(&plan.pki.ca_cert)),
        format!("--service-cluster-ip-range={}", plan.service_cidr),
        format!("--cert-dir={}", path(&plan.cert_dir)),
        "--secure-port=0".into(),
        "--leader-elect=false".into(),
        "--v=1".into(),
    ]
}

/// The address the apiserver publishes in the `kubernetes` Service's endpoints. It must
/// be a concrete address; loopback is what clients on this machine reach it by.
fn advertise(host: IpAddr) -> IpAddr {
    if host.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let dir = PathBuf::from("/state");
        Plan {
            etcd_client: "127.0.0.5:2379".parse().unwrap(),
            etcd_peer: "127.0.0.5:2380".parse().unwrap(),
            etcd_data: dir.join("etcd"),
            apiserver: "127.0.0.5:6443".parse().unwrap(),
            service_cidr: "10.96.0.0/16".into(),
            pki: Pki {
                ca_cert: dir.join("ca.crt"),
                serving_cert: dir.join("apiserver.crt"),
                serving_key: dir.join("apiserver.key"),
                sa_key: dir.join("sa.key"),
                sa_pub: dir.join("sa.pub"),
            },
            token_file: dir.join("tokens.csv"),
            kubeconfig: dir.join("admin.kubeconfig"),
            cert_dir: dir.join("certs"),
        }
    }

    #[test]
    fn the_apiserver_authorizes_with_rbac_and_keeps_the_default_admission_plugins() {
        let args = apiserver(&plan());
        assert!(args.contains(&"--authorization-mode=Node,RBAC".to_string()));
        assert!(args.contains(&"--etcd-servers=http://127.0.0.5:2379".to_string()));
        assert!(args.contains(&"--secure-port=6443".to_string()));
        assert!(
            !args.iter().any(|a| a.contains("admission-plugins")),
            "{args:?}"
        );
    }

    #[test]
    fn tokens_are_signed_by_the_apiserver_and_the_controller_manager_with_one_key() {
        let (api, kcm) = (apiserver(&plan()), controller_manager(&plan()));
        assert!(api.contains(&"--service-account-signing-key-file=/state/sa.key".to_string()));
        assert!(kcm.contains(&"--service-account-private-key-file=/state/sa.key".to_string()));
    }

    #[test]
    fn the_controller_manager_runs_the_statefulset_endpointslice_and_gc_controllers() {
        let kcm = controller_manager(&plan());
        let controllers = kcm
            .iter()
            .find_map(|a| a.strip_prefix("--controllers="))
            .unwrap();
        for c in [
            "statefulset-controller",
            "endpointslice-controller",
            "garbage-collector-controller",
            "serviceaccount-controller",
            "serviceaccount-token-controller",
        ] {
            assert!(
                controllers.split(',').any(|x| x == c),
                "{c} in {controllers}"
            );
        }
        assert!(!controllers.contains("node-lifecycle"), "{controllers}");
    }
}

//! A real Kubernetes control plane for the suite and `kcache-local up --real`: etcd,
//! kube-apiserver and kube-controller-manager built from the Go modules pinned in
//! `e2e/controlplane/go.mod`, run as child processes on loopback. Where the emulator and
//! this disagree, this is right.
//!
//! ```no_run
//! # async fn f() -> Result<(), kcache_e2e::controlplane::Error> {
//! use kcache_e2e::controlplane::{Options, RealControlPlane};
//! let cp = RealControlPlane::start(Options::new("/tmp/kcache-real")).await?;
//! let client = cp.client().await?; // admin (system:masters), verifies the serving cert
//! // ... kubectl --kubeconfig cp.kubeconfig ...
//! cp.stop().await;
//! # Ok(()) }
//! ```
//!
//! There is no scheduler: the e2e kubelet binds pods itself. Each process logs to
//! `<state_dir>/<name>.log`; errors quote the tail of the log of the process that failed.

mod args;
mod binaries;
mod pki;
mod process;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::json;
use tokio::time::Instant;

pub use args::{CONTROLLERS, Plan, SERVICE_ACCOUNT_ISSUER};
pub use binaries::{
    BIN_ENV, BINARIES, build_script, check as check_binaries, locate as locate_binaries,
};
pub use pki::{Pki, San};
use process::Process;

/// Name of the cluster, user and context in the admin kubeconfig.
pub const CONTEXT: &str = "kcache-real";

/// The admin user of the static token file; in `system:masters`, so RBAC allows it all.
pub const ADMIN_USER: &str = "kcache-admin";

/// How often start-up conditions are polled: short next to the seconds the apiserver
/// takes to become ready, long enough not to load a 2-core machine.
const POLL: Duration = Duration::from_millis(200);

/// Errors of starting the real control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binaries are missing or could not be built.
    #[error("control plane binaries: {0}")]
    Binaries(String),
    /// A program could not be started at all.
    #[error("could not run {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing the state dir failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Making keys or certificates failed.
    #[error("openssl ({step}) failed: {stderr}")]
    Openssl {
        /// What was being made.
        step: &'static str,
        /// openssl's complaint.
        stderr: String,
    },
    /// A control-plane process stopped while it should be serving.
    #[error("{name} exited ({status}); last lines of {}:\n{tail}", log.display())]
    Exited {
        /// Which process.
        name: &'static str,
        /// How it ended.
        status: std::process::ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },
    /// A start-up condition did not hold in time.
    #[error("{what} not reached within {timeout:?}; last: {last}")]
    Timeout {
        /// The condition.
        what: &'static str,
        /// How long it was given.
        timeout: Duration,
        /// The last probe's failure.
        last: String,
    },
    /// The kubeconfig could not be written or read.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// Talking to the apiserver failed.
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// How to start the control plane.
#[derive(Debug, Clone)]
#[must_use]
pub struct Options {
    /// Where keys, etcd's data, the kubeconfig and the logs go (created if missing).
    pub state_dir: PathBuf,
    /// The binaries; `None` finds them with [`locate_binaries`].
    pub bin_dir: Option<PathBuf>,
    /// The loopback address every process listens on (each on a free port).
    pub host: IpAddr,
    /// Cluster IPs of Services.
    pub service_cidr: String,
    /// How long start-up may take, from etcd's launch to the controllers' first work.
    pub ready_timeout: Duration,
    /// How long each process gets between SIGTERM and SIGKILL on [`RealControlPlane::stop`].
    pub stop_grace: Duration,
}

impl Options {
    /// Defaults: 127.0.0.1, Services in 10.96.0.0/16, two minutes to become ready (the
    /// apiserver alone takes 5–20 s on a busy 2-core machine), 10 s to stop.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            bin_dir: None,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            service_cidr: "10.96.0.0/16".into(),
            ready_timeout: Duration::from_secs(120),
            stop_grace: Duration::from_secs(10),
        }
    }

    /// Listen on `host` (e.g. 127.0.0.2, to keep apart from the emulator).
    pub fn host(mut self, host: IpAddr) -> Self {
        self.host = host;
        self
    }

    /// Use the binaries in `dir`.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }
}

/// A running etcd, kube-apiserver and kube-controller-manager. Dropping it SIGKILLs them;
/// [`RealControlPlane::stop`] stops them gracefully.
#[derive(Debug)]
pub struct RealControlPlane {
    /// The admin kubeconfig (`kubectl --kubeconfig`).
    pub kubeconfig: PathBuf,
    /// The apiserver's URL, `https://127.0.0.1:PORT`.
    pub server: String,
    /// The CA that signed the apiserver's serving certificate.
    pub ca_cert: PathBuf,
    /// The admin's bearer token.
    pub token: String,
    /// The `gitVersion` the apiserver reports (`v1.37.2`).
    pub version: String,
    /// Where the binaries are (kubectl of the same release among them).
    pub bin_dir: PathBuf,
    /// The state dir, with `etcd.log`, `kube-apiserver.log`, `kube-controller-manager.log`.
    pub state_dir: PathBuf,
    /// In start order; stopped in reverse.
    processes: Vec<Process>,
    stop_grace: Duration,
}

impl RealControlPlane {
    /// Starts etcd, then kube-apiserver (waiting for `/readyz`), then
    /// kube-controller-manager (waiting until it has created the `default`
    /// ServiceAccount, the first sign its controllers run). Fails, killing what it
    /// started, if any process exits or `ready_timeout` passes.
    pub async fn start(opts: Options) -> Result<Self, Error> {
        let bin_dir = match &opts.bin_dir {
            Some(dir) => {
                check_binaries(dir)?;
                dir.clone()
            }
            None => locate_binaries().await?,
        };
        // After the binaries: building them cold takes minutes, starting them seconds.
        let deadline = Instant::now() + opts.ready_timeout;
        let state = &opts.state_dir;
        std::fs::create_dir_all(state)?;
        let plan = plan(&opts).await?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(&plan.token_file, token_file(&token))?;
        let server = format!("https://{}", plan.apiserver);
        let kubeconfig = render_kubeconfig(&server, &plan.pki.ca_cert, &token)
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        std::fs::write(&plan.kubeconfig, kubeconfig)?;

        let mut cp = Self {
            kubeconfig: plan.kubeconfig.clone(),
            server,
            ca_cert: plan.pki.ca_cert.clone(),
            token,
            version: String::new(),
            bin_dir,
            state_dir: state.clone(),
            processes: Vec::new(),
            stop_grace: opts.stop_grace,
        };
        cp.spawn("etcd", &args::etcd(&plan))?;
        let etcd = plan.etcd_client;
        cp.wait(
            "etcd accepting connections",
            deadline,
            opts.ready_timeout,
            || async move {
                tokio::net::TcpStream::connect(etcd)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        )
        .await?;

        cp.spawn("kube-apiserver", &args::apiserver(&plan))?;
        let client = cp.client().await?;
        let c = client.clone();
        cp.wait(
            "kube-apiserver /readyz",
            deadline,
            opts.ready_timeout,
            move || {
                let c = c.clone();
                async move { readyz(&c).await }
            },
        )
        .await?;
        cp.version = client.apiserver_version().await?.git_version;

        cp.spawn("kube-controller-manager", &args::controller_manager(&plan))?;
        let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client, "default");
        cp.wait(
            "ServiceAccount default/default",
            deadline,
            opts.ready_timeout,
            move || {
                let accounts = accounts.clone();
                async move {
                    match accounts.get_opt("default").await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err("not created yet".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await?;
        tracing::info!(server = %cp.server, version = %cp.version, "real control plane ready");
        Ok(cp)
    }

    /// An admin client that verifies the apiserver's certificate against [`Self::ca_cert`].
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&self.kubeconfig)
                .map_err(|e| Error::Kubeconfig(e.to_string()))?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Writes a kubeconfig that acts as ServiceAccount `namespace/name`, with a token from
    /// the TokenRequest API valid for `ttl` (at least 10 minutes, the API's floor), so a
    /// process run with it (the operator, a node) has exactly the RBAC the account is
    /// bound to. The account must exist. Returns the file's path.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<PathBuf, Error> {
        let accounts: kube::Api<ServiceAccount> =
            kube::Api::namespaced(self.client().await?, namespace);
        let request: TokenRequest = serde_json::from_value(json!({
            "spec": {"audiences": [], "expirationSeconds": ttl.as_secs().max(600)},
        }))
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let issued = accounts
            .create_token_request(name, &Default::default(), &request)
            .await?;
        let token = issued.status.map(|s| s.token).unwrap_or_default();
        let path = self
            .state_dir
            .join(format!("serviceaccount-{namespace}-{name}.kubeconfig"));
        let text = render_kubeconfig(&self.server, &self.ca_cert, &token)
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// `kubectl` of the pinned release, pointed at this control plane.
    pub fn kubectl(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.bin_dir.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// The CRD manifests of the pinned prometheus-operator release
    /// (`monitoring.coreos.com_servicemonitors.yaml`, `…_prometheusrules.yaml`, …), which
    /// build.sh puts beside the bin dir; not installed until a caller applies them.
    pub fn prometheus_operator_crds(&self) -> PathBuf {
        prometheus_operator_crds(&self.bin_dir)
    }

    /// The log file of a process (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log(&self, name: &str) -> PathBuf {
        self.state_dir.join(format!("{name}.log"))
    }

    /// An error if any process has exited (call it where a failure needs explaining).
    pub fn check_running(&mut self) -> Result<(), Error> {
        for p in &mut self.processes {
            if let Some(status) = p.exited() {
                return Err(p.exited_error(status));
            }
        }
        Ok(())
    }

    /// Stops the processes in reverse start order: SIGTERM, then SIGKILL after the grace.
    pub async fn stop(mut self) {
        while let Some(p) = self.processes.pop() {
            p.stop(self.stop_grace).await;
        }
    }

    fn spawn(&mut self, name: &'static str, args: &[String]) -> Result<(), Error> {
        let program = self.bin_dir.join(name);
        let p = Process::spawn(name, &program, args, self.log(name))?;
        self.processes.push(p);
        Ok(())
    }

    /// Polls `probe` until it succeeds, failing early if a process exits.
    async fn wait<F, Fut>(
        &mut self,
        what: &'static str,
        deadline: Instant,
        timeout: Duration,
        mut probe: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        loop {
            self.check_running()?;
            let last = match probe().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what,
                    timeout,
                    last,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Where build.sh puts the prometheus-operator CRDs for the binaries in `bin_dir`.
pub fn prometheus_operator_crds(bin_dir: &Path) -> PathBuf {
    bin_dir.join("../crds/prometheus-operator")
}

/// Decides addresses and paths, and makes the keys.
async fn plan(opts: &Options) -> Result<Plan, Error> {
    let state = &opts.state_dir;
    let host = opts.host;
    let service_ip = first_service_ip(&opts.service_cidr)?;
    let mut sans = vec![
        San::Ip(host),
        San::Ip(service_ip),
        San::Dns("localhost".into()),
    ];
    for name in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        sans.push(San::Dns(name.into()));
    }
    Ok(Plan {
        etcd_client: free_addr(host).await?,
        etcd_peer: free_addr(host).await?,
        etcd_data: state.join("etcd-data"),
        apiserver: free_addr(host).await?,
        service_cidr: opts.service_cidr.clone(),
        pki: Pki::create(&state.join("pki"), &sans).await?,
        token_file: state.join("tokens.csv"),
        kubeconfig: state.join("admin.kubeconfig"),
        cert_dir: state.join("certs"),
    })
}

/// A port free on `host` now. Another process could take it before ours binds; on a
/// test machine that is rare, and the bind failure names the port in the log.
async fn free_addr(host: IpAddr) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind((host, 0)).await?;
    Ok(listener.local_addr()?)
}

/// The `kubernetes` Service's cluster IP: the first address of the range.
fn first_service_ip(cidr: &str) -> Result<IpAddr, Error> {
    let bad = || Error::Kubeconfig(format!("service CIDR {cidr:?} is not an IPv4 a.b.c.d/n"));
    let (net, _) = cidr.split_once('/').ok_or_else(bad)?;
    let net: Ipv4Addr = net.parse().map_err(|_| bad())?;
    Ok(IpAddr::V4(Ipv4Addr::from(u32::from(net) + 1)))
}

/// The static token file: one admin in `system:masters`.
fn token_file(token: &str) -> String {
    format!("{token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n")
}

/// The admin kubeconfig: the server, the CA that signed it, the bearer token.
pub fn render_kubeconfig(
    server: &str,
    ca: &Path,
    token: &str,
) -> Result<String, serde_yaml::Error> {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {
            "server": server,
            "certificate-authority": ca.display().to_string(),
        }}],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"}}],
        "current-context": CONTEXT,
        "preferences": {},
    });
    serde_yaml::to_string(&config)
}

async fn readyz(client: &kube::Client) -> Result<(), String> {
    let request = axum::http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request_text(request)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_service_ip_is_the_first_of_the_range() {
        assert_eq!(
            first_service_ip("10.96.0.0/16").unwrap(),
            "10.96.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(first_service_ip("10.96.0.0").is_err());
    }

    #[test]
    fn the_admin_is_a_cluster_admin_by_group() {
        assert_eq!(
            token_file("abc"),
            "abc,kcache-admin,kcache-admin,\"system:masters\"\n"
        );
    }

    #[test]
    fn the_kubeconfig_trusts_the_ca_and_carries_the_token() {
        let yaml = render_kubeconfig("https://127.0.0.1:1", Path::new("/s/ca.crt"), "t").unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority"].as_str(),
            Some("/s/ca.crt")
        );
        assert_eq!(v["users"][0]["user"]["token"].as_str(), Some("t"));
        assert_eq!(v["current-context"].as_str(), Some(CONTEXT));
    }
}

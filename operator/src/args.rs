//! Command-line arguments. Every flag of `run` also reads an environment variable,
//! so a Deployment can configure the operator either way.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args as ClapArgs, Parser, Subcommand, ValueEnum};

use crate::build::{BuildOptions, DEFAULT_IMAGE};

/// kcache-operator: runs kcache CacheClusters on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "kcache-operator", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,

    /// Log format.
    #[arg(long, global = true, env = "KCACHE_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax (e.g. info, kcache_operator=debug).
    #[arg(
        long,
        global = true,
        env = "KCACHE_OPERATOR_LOG",
        default_value = "info"
    )]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reconcile CacheClusters (in-cluster, or with a kubeconfig).
    Run(RunArgs),
    /// Print the objects the operator would apply for the CacheClusters in a file, as
    /// YAML documents separated by `---`; needs no cluster.
    Render(RenderArgs),
}

#[derive(Debug, ClapArgs)]
pub struct RunArgs {
    /// A kubeconfig file. Default: the in-cluster configuration, else $KUBECONFIG,
    /// else ~/.kube/config.
    #[arg(long, env = "KCACHE_OPERATOR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "KCACHE_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,

    /// Elect a leader on a Lease, so several replicas can run and one reconciles.
    #[arg(long, env = "KCACHE_OPERATOR_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "KCACHE_OPERATOR_LEASE_NAME",
        default_value = "kcache-operator"
    )]
    pub lease_name: String,

    /// Namespace of the Lease. Default: the operator's own ($POD_NAMESPACE), else the
    /// kubeconfig's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the election and in events. Default: $POD_NAME,
    /// else the hostname and process id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, ClapArgs)]
pub struct RenderArgs {
    /// The CacheCluster manifest to render ("-" reads standard input).
    #[arg(short = 'f', long = "filename", env = "KCACHE_OPERATOR_RENDER_FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub build: BuildArgs,
}

/// Settings that shape the objects built for a cluster.
#[derive(Debug, Clone, ClapArgs)]
pub struct BuildArgs {
    /// Image of the nodes of clusters whose spec names none.
    #[arg(long, env = "KCACHE_OPERATOR_NODE_IMAGE", default_value = DEFAULT_IMAGE)]
    pub node_image: String,

    /// The cluster's DNS domain, for the client endpoint shown in the status.
    #[arg(
        long,
        env = "KCACHE_OPERATOR_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
}

impl BuildArgs {
    pub fn options(&self) -> BuildOptions {
        BuildOptions {
            default_image: self.node_image.clone(),
            cluster_domain: self.cluster_domain.clone(),
        }
    }
}

impl RunArgs {
    /// The identity given, else one unique on this machine.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let host = host.trim();
            let host = if host.is_empty() {
                "kcache-operator"
            } else {
                host
            };
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_takes_a_file_and_run_has_working_defaults() {
        let args = Args::try_parse_from(["kcache-operator", "render", "-f", "cc.yaml"]).unwrap();
        assert!(
            matches!(args.command, Command::Render(ref r) if r.file.as_path() == std::path::Path::new("cc.yaml"))
        );
        let args = Args::try_parse_from(["kcache-operator", "run"]).unwrap();
        let Command::Run(run) = args.command else {
            panic!("expected run");
        };
        assert!(run.leader_election);
        assert_eq!(run.metrics_addr.port(), 8080);
        assert_eq!(run.build.options().default_image, DEFAULT_IMAGE);
    }

    #[test]
    fn leader_election_can_be_turned_off_for_a_single_replica() {
        let args =
            Args::try_parse_from(["kcache-operator", "run", "--leader-election", "false"]).unwrap();
        assert!(matches!(args.command, Command::Run(ref r) if !r.leader_election));
    }
}

//! `kcache-local demo`: the local cluster, the example CacheCluster, a workload through
//! the headless Service, and a summary of what ran.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kcache_crd::CacheCluster;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::{Local, UpArgs, print_access};

/// The example a newcomer starts from (3 nodes).
pub const EXAMPLE: &str = include_str!("../../../examples/cachecluster-minimal.yaml");
/// How long the demo waits for the example to be Ready before it gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Keys the demo workload writes.
pub const KEYS: usize = 2_000;

/// `kcache-local demo` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub up: UpArgs,
    /// Stop after the summary instead of running until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

fn step(started: Instant, what: &str) {
    println!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
}

/// Runs the demo; with `exit` unset, serves until `shutdown` resolves.
pub async fn run(
    args: DemoArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    step(
        started,
        "starting the control plane, controllers, kubelet, DNS and operator",
    );
    let local = tokio::select! {
        local = Local::start(&args.up) => local?,
        _ = &mut shutdown => return Ok(()),
    };
    let (result, interrupted) = tokio::select! {
        result = drive(&local, started) => (result, false),
        _ = &mut shutdown => (Ok(()), true),
    };
    match &result {
        Ok(()) if !interrupted => {
            print_access(&local);
            let kc = local.kubeconfig.display();
            println!("  kubectl --kubeconfig {kc} scale cachecluster demo --replicas=5");
            println!(
                "  target/release/kcache --addr dns:///demo-headless.default.svc.cluster.local:7000 --dns-server {} get demo:key:1",
                local.dns
            );
        }
        Ok(()) => {}
        Err(e) => eprintln!("demo failed: {e:#}"),
    }
    if result.is_ok() && !interrupted && !args.exit {
        println!("kcache-local: running until Ctrl-C");
        shutdown.await;
    }
    step(started, "stopping pods and the control plane");
    local.stop().await;
    result
}

async fn drive(local: &Local, started: Instant) -> anyhow::Result<()> {
    let client = local.client()?;
    let clusters: Api<CacheCluster> = Api::namespaced(client.clone(), "default");
    let example: CacheCluster = serde_yaml::from_str(EXAMPLE)?;
    let name = example.name_any();
    step(
        started,
        &format!(
            "kubectl apply -f examples/cachecluster-minimal.yaml  (CacheCluster {name}, 3 replicas)"
        ),
    );
    clusters
        .patch(
            &name,
            &PatchParams::apply("kubectl"),
            &Patch::Apply(&example),
        )
        .await?;

    step(
        started,
        "waiting for the CacheCluster to be Available (pods start, probes pass, members join)",
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::new();
    loop {
        let cluster = clusters.get_status(&name).await?;
        let status = cluster.status.clone().unwrap_or_default();
        let available = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True");
        let phase = status
            .phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "-".into());
        let line = format!(
            "phase {phase}, ready {}/{}",
            status.ready_replicas, cluster.spec.replicas
        );
        if line != last {
            step(started, &format!("  {line}"));
            last = line;
        }
        if available && status.ready_replicas == cluster.spec.replicas {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the CacheCluster was not Available after {READY_TIMEOUT:?} ({last}); pod logs are under {}",
                local.state_dir.join("pods").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let target = format!("dns:///{name}-headless.default.svc.cluster.local:7000");
    step(
        started,
        &format!(
            "workload: {KEYS} sets and {} gets through {target}",
            KEYS * 2
        ),
    );
    let cache = kcache_client::Client::builder(target)
        .dns_server(local.dns)
        .connect()
        .await?;
    for i in 0..KEYS {
        cache
            .set(
                format!("demo:key:{i}"),
                format!("value {i}"),
                Default::default(),
            )
            .await?;
    }
    let (mut hits, mut misses) = (0u64, 0u64);
    for i in 0..KEYS * 2 {
        // Half the reads ask for keys that were never written: an honest hit ratio.
        match cache.get(format!("demo:key:{i}")).await? {
            Some(_) => hits += 1,
            None => misses += 1,
        }
    }
    let stats = cache.stats().await?;

    println!();
    println!("== summary");
    for pod in pods
        .list(&ListParams::default().labels("app.kubernetes.io/instance=demo"))
        .await?
    {
        let status = pod.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        println!(
            "  pod {:<8} {:<12} ready={ready}",
            pod.name_any(),
            status.pod_ip.unwrap_or_default()
        );
    }
    let items: u64 = stats.nodes.iter().map(|n| n.items).sum();
    println!(
        "  keys written {KEYS}, items in the cluster {items} over {} nodes",
        stats.nodes.len()
    );
    println!(
        "  reads {}: hits {hits}, misses {misses}, hit ratio {:.2}",
        hits + misses,
        hits as f64 / (hits + misses).max(1) as f64
    );
    step(started, "demo ready");
    Ok(())
}

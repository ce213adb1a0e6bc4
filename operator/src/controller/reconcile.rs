//! One reconciliation: resolve the spec, apply what it asks for, compute the status
//! from what the cluster reports, and tell the user what changed.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kcache_crd::{CacheCluster, CacheClusterStatus};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::Context;
use super::apply::{ApplyError, apply, apply_dynamic, delete, delete_dynamic, get_opt};
use crate::Error;
use crate::build::meta::{FIELD_MANAGER, client_endpoint, selector_string};
use crate::build::{
    Cluster, Desired, peer_token, prometheus_rule_resource, service_monitor_resource,
};
use crate::status::notices::{self, Notice};
use crate::status::{self, Blocker, Observed};

/// How often a cluster is reconciled when nothing happens: restores owned objects
/// whose kinds the operator does not watch (the monitoring ones) and refreshes the
/// monitoring discovery.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(300);

/// Reconciles one CacheCluster. A spec that cannot work ends in `Ok` (with a
/// Degraded condition), so only failures worth retrying reach the error policy.
pub async fn reconcile(cluster: Arc<CacheCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.time_reconcile();
    if cluster.meta().deletion_timestamp.is_some() {
        // Every owned object has an owner reference; the garbage collector removes
        // them, and re-applying anything now would fight it.
        return Ok(Action::await_change());
    }
    match reconcile_live(&cluster, &ctx).await {
        Ok(blocked) => {
            ctx.backoff.reset(&key(&cluster));
            ctx.metrics.reconciled(blocked);
            Ok(Action::requeue(RESYNC_INTERVAL))
        }
        Err(error) => {
            let notice = Notice {
                warning: true,
                reason: "ReconcileFailed".to_owned(),
                note: error.to_string(),
            };
            ctx.events.publish_recurring(&cluster, &notice).await;
            Err(error)
        }
    }
}

/// Requeues a failed reconciliation with backoff and counts the failure.
pub fn error_policy(cluster: Arc<CacheCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error);
    let delay = ctx.backoff.next_delay(&key(&cluster));
    tracing::warn!(cluster = %key(&cluster), %error, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

fn key(cluster: &CacheCluster) -> String {
    format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

/// Applies the spec (unless it cannot work), then reports. Returns whether the
/// spec was blocked.
async fn reconcile_live(cc: &CacheCluster, ctx: &Context) -> Result<bool, Error> {
    let outcome = apply_spec(cc, ctx).await?;
    report(cc, ctx, &outcome).await?;
    Ok(outcome.blocker.is_some())
}

/// What applying the spec left behind.
struct Outcome {
    stateful_set: Option<StatefulSet>,
    blocker: Option<Blocker>,
    max_memory: Option<u64>,
}

async fn apply_spec(cc: &CacheCluster, ctx: &Context) -> Result<Outcome, Error> {
    let mut cluster = match Cluster::new(cc, &ctx.options) {
        Ok(cluster) => cluster,
        Err(problems) => return blocked(cc, ctx, Blocker::InvalidSpec(problems)).await,
    };
    let running = get_opt::<StatefulSet>(&ctx.client, &cluster.namespace, &cluster.name).await?;
    if cluster.auth.is_some() {
        cluster.migration = peer_token::migration(running.as_ref());
    } else if let Some(auth) = peer_token::retiring(running.as_ref()) {
        // Turning spec.auth off: the next nodes keep the running ones' Secret. (The
        // operator cannot read Secrets, so one deleted first leaves these pods
        // waiting for it: SECURITY.md says to delete it after the rollouts.)
        cluster.auth = Some(auth);
        cluster.migration = peer_token::Migration::Retiring;
    }
    if cluster.auth.is_some() {
        create_peer_token(ctx, &cluster).await?;
    }
    match apply_all(ctx, &cluster).await {
        Ok(sts) => Ok(Outcome {
            stateful_set: Some(sts),
            blocker: None,
            max_memory: Some(cluster.settings.max_memory),
        }),
        Err(ApplyError::Rejected { object, message }) => {
            blocked(cc, ctx, Blocker::Rejected { object, message }).await
        }
        Err(ApplyError::Kube(error)) => Err(error.into()),
    }
}

/// Creates the cluster's peer token Secret unless it exists: created once, never
/// rewritten (a new token on every reconcile would lock the nodes out of each other).
async fn create_peer_token(ctx: &Context, cluster: &Cluster<'_>) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &cluster.namespace);
    let secret = peer_token::secret(cluster, &peer_token::generate());
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(cluster = %cluster.name, "generated the peer token");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// A blocked spec changes nothing; the status still describes the StatefulSet
/// that runs, if one does.
async fn blocked(cc: &CacheCluster, ctx: &Context, blocker: Blocker) -> Result<Outcome, Error> {
    let namespace = cc.namespace().unwrap_or_else(|| "default".to_owned());
    let sts = get_opt::<StatefulSet>(&ctx.client, &namespace, &cc.name_any()).await?;
    Ok(Outcome {
        stateful_set: sts,
        blocker: Some(blocker),
        max_memory: None,
    })
}

/// Publishes the events the change deserves and writes the status if it changed.
async fn report(cc: &CacheCluster, ctx: &Context, outcome: &Outcome) -> Result<(), Error> {
    let namespace = cc.namespace().unwrap_or_else(|| "default".to_owned());
    let name = cc.name_any();
    let endpoint = client_endpoint(&name, &namespace, &ctx.options.cluster_domain);
    let observed = Observed {
        stateful_set: outcome.stateful_set.as_ref(),
        blocker: outcome.blocker.as_ref(),
        max_memory: outcome.max_memory,
        endpoint: &endpoint,
        selector: &selector_string(&name),
    };
    let status = status::compute(cc, observed, Timestamp::now());
    let applied = match outcome.blocker {
        None => notices::applied(cc.status.as_ref(), cc.metadata.generation, cc.spec.replicas),
        Some(_) => None,
    };
    for notice in applied
        .iter()
        .chain(&notices::between(cc.status.as_ref(), &status))
    {
        ctx.events.publish(cc, notice).await;
    }
    if cc.status.as_ref() != Some(&status) {
        patch_status(ctx, &namespace, &name, &status).await?;
    }
    Ok(())
}

/// Applies every desired object, identity and permissions first, and returns the
/// StatefulSet as stored (its status is what the cluster status is computed from).
async fn apply_all(ctx: &Context, cluster: &Cluster<'_>) -> Result<StatefulSet, ApplyError> {
    let desired = Desired::build(cluster);
    let client = &ctx.client;
    let (namespace, name) = (&cluster.namespace, &cluster.name);
    apply(client, &desired.service_account).await?;
    apply(client, &desired.role).await?;
    apply(client, &desired.role_binding).await?;
    apply(client, &desired.headless_service).await?;
    apply(client, &desired.client_service).await?;
    let sts = apply(client, &desired.stateful_set).await?;
    match &desired.pod_disruption_budget {
        Some(pdb) => drop(apply(client, pdb).await?),
        None => delete::<PodDisruptionBudget>(client, namespace, name).await?,
    }
    match &desired.network_policy {
        Some(policy) => drop(apply(client, policy).await?),
        None => delete::<NetworkPolicy>(client, namespace, name).await?,
    }
    apply_monitoring(ctx, cluster, &desired).await?;
    Ok(sts)
}

/// The ServiceMonitor and PrometheusRule, when asked for and when their CRDs are
/// installed; a warning event when asked for but not installed.
async fn apply_monitoring(
    ctx: &Context,
    cluster: &Cluster<'_>,
    desired: &Desired,
) -> Result<(), ApplyError> {
    let client = &ctx.client;
    let wanted = desired.service_monitor.is_some() || desired.prometheus_rule.is_some();
    let kinds = if wanted {
        ctx.discovery.kinds(client).await?
    } else {
        Default::default()
    };
    let objects = [
        (
            &desired.service_monitor,
            service_monitor_resource(),
            kinds.service_monitor,
        ),
        (
            &desired.prometheus_rule,
            prometheus_rule_resource(),
            kinds.prometheus_rule,
        ),
    ];
    let mut skipped = Vec::new();
    for (object, resource, served) in objects {
        match object {
            Some(object) if served => drop(apply_dynamic(client, object, &resource).await?),
            Some(_) => skipped.push(resource.kind),
            None => delete_dynamic(client, &cluster.namespace, &cluster.name, &resource).await?,
        }
    }
    if !skipped.is_empty() {
        let notice = Notice {
            warning: true,
            reason: "MonitoringUnavailable".to_owned(),
            note: format!(
                "spec.monitoring asks for {} but monitoring.coreos.com/v1 (the Prometheus Operator's CRDs) is not installed; skipped",
                skipped.join(" and ")
            ),
        };
        ctx.events
            .publish_recurring(cluster.resource, &notice)
            .await;
    }
    Ok(())
}

impl From<kube::Error> for ApplyError {
    fn from(error: kube::Error) -> Self {
        Self::Kube(error)
    }
}

async fn patch_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &CacheClusterStatus,
) -> Result<(), Error> {
    let api: Api<CacheCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": CacheCluster::api_version(&()),
        "kind": CacheCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

//! The Secret of a cluster's peer token: with spec.auth, the nodes present it to each
//! other's Peer service (whose `Sync` streams out the whole store), which takes no
//! other credential, so the applications holding spec.auth's token use the cache but
//! cannot dump it. The operator generates it once and never rewrites it; deleting it
//! makes the operator generate a new one (the nodes reload it without a restart,
//! refusing each other's calls until every node has read it).
//!
//! Bringing peer tokens to a running cluster takes two rollouts, so that no node
//! refuses a peer at any point: first every node learns the peer token and sends it
//! while it still admits peers that send only the application token
//! (`--peer-accepts-app-tokens`); once that rollout is complete, the flag goes.
//! Turning spec.auth on for a running cluster goes the same way, with the first
//! rollout admitting callers that send no token at all (`--auth-accepts-anonymous`):
//! the nodes it replaces have none, and replicate, hand off and forward to the new
//! ones until they are gone.
//!
//! Turning spec.auth off goes the other way round: the nodes running now refuse
//! callers without tokens, so the first rollout keeps the tokens (the new nodes send
//! them to the old ones) and admits tokenless callers ([`Migration::Retiring`]); once
//! it is complete, a second rollout drops authentication. The running StatefulSet
//! names the Secret the first rollout keeps mounting ([`retiring`]), since the spec
//! no longer does.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kcache_crd::AuthSpec;

use super::Cluster;
use super::meta::owned_meta;
use super::node::{AUTH_VOLUME, CONTAINER_NAME};

/// The key of the token in the Secret.
pub const KEY: &str = "token";
/// The node flag of the first rollout.
pub const MIGRATING_FLAG: &str = "--peer-accepts-app-tokens";
/// The node flag that gives nodes peer tokens (its value is the file).
pub const FILE_FLAG: &str = "--peer-token-file";
/// The node flag of the first rollout of spec.auth itself.
pub const ANONYMOUS_FLAG: &str = "--auth-accepts-anonymous";
/// The node flag of spec.auth's token file.
pub const AUTH_FLAG: &str = "--auth-token-file";

/// What the nodes about to be rolled out must admit besides their tokens, so that
/// the running nodes they replace are not refused meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Migration {
    /// Nothing: a new cluster, or every node has peer tokens.
    #[default]
    Done,
    /// Peers that send the application token but no peer token
    /// ([`MIGRATING_FLAG`]): nodes that predate peer tokens.
    AppTokens,
    /// Callers that send no token at all ([`ANONYMOUS_FLAG`]): nodes that ran
    /// without spec.auth.
    Anonymous,
    /// Spec.auth is off but the running nodes require tokens: the nodes keep theirs
    /// (sending them to the running ones) and admit callers without any
    /// ([`ANONYMOUS_FLAG`]): the nodes of the next rollout, which have none.
    Retiring,
}

impl Migration {
    /// The node flags of this stage.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Self::Done => &[],
            Self::AppTokens => &[MIGRATING_FLAG],
            Self::Anonymous => &[MIGRATING_FLAG, ANONYMOUS_FLAG],
            Self::Retiring => &[ANONYMOUS_FLAG],
        }
    }
}

pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-peer-token")
}

/// The Secret holding `token`.
pub fn secret(cluster: &Cluster<'_>, token: &str) -> Secret {
    Secret {
        metadata: owned_meta(cluster, secret_name(&cluster.name)),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            KEY.to_owned(),
            ByteString(format!("{token}\n").into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// A new token: 32 bytes from the thread's CSPRNG, as hex.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the nodes about to be rolled out must still admit, judged by the
/// StatefulSet that runs now: nodes without tokens while some running node may have
/// none (spec.auth was off, or the rollout that turned it on is not complete); nodes
/// with only the application token while some may predate peer tokens; nothing for a
/// new cluster, and nothing once the tokens are everywhere.
pub fn migration(current: Option<&StatefulSet>) -> Migration {
    let Some(sts) = current else {
        return Migration::Done;
    };
    let has = |flag: &str| has_flag(sts, flag);
    if !has(FILE_FLAG) {
        return if has(AUTH_FLAG) {
            Migration::AppTokens
        } else {
            Migration::Anonymous
        };
    }
    if rolled_out(sts) {
        Migration::Done
    } else if has(ANONYMOUS_FLAG) {
        Migration::Anonymous
    } else if has(MIGRATING_FLAG) {
        Migration::AppTokens
    } else {
        Migration::Done
    }
}

/// With spec.auth off: the authentication the nodes about to be rolled out keep (with
/// [`Migration::Retiring`]), read from the running StatefulSet: the Secret its nodes
/// mount, while some running node may still refuse callers without a token (its
/// template requires tokens, or the rollout that began admitting tokenless callers
/// is not complete). None once every node admits them, and for a cluster that never
/// had spec.auth.
pub fn retiring(current: Option<&StatefulSet>) -> Option<AuthSpec> {
    let sts = current?;
    if !has_flag(sts, AUTH_FLAG) || (has_flag(sts, ANONYMOUS_FLAG) && rolled_out(sts)) {
        return None;
    }
    let mounted = || {
        let volume = sts
            .spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .volumes
            .as_ref()?
            .iter()
            .find(|v| v.name == AUTH_VOLUME)?
            .secret
            .as_ref()?;
        let key = volume
            .items
            .as_ref()?
            .iter()
            .find(|item| item.path == "token")?
            .key
            .clone();
        Some(AuthSpec {
            secret_name: volume.secret_name.clone()?,
            key,
        })
    };
    let auth = mounted();
    if auth.is_none() {
        tracing::warn!(
            statefulset = sts.metadata.name.as_deref().unwrap_or_default(),
            "the nodes run with tokens but their template mounts no `{AUTH_VOLUME}` Secret \
             with a `token` item: turning spec.auth off in one rollout, so the running nodes \
             refuse the new ones' calls until they are replaced"
        );
    }
    auth
}

/// Whether the node container of `sts`'s template has `flag` (alone or `flag=value`).
fn has_flag(sts: &StatefulSet, flag: &str) -> bool {
    sts.spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.containers.iter().find(|c| c.name == CONTAINER_NAME))
        .and_then(|c| c.args.as_deref())
        .unwrap_or_default()
        .iter()
        .any(|a| {
            a == flag
                || a.strip_prefix(flag)
                    .is_some_and(|rest| rest.starts_with('='))
        })
}

/// Whether every pod of `sts` runs its current template.
fn rolled_out(sts: &StatefulSet) -> bool {
    let Some(status) = &sts.status else {
        return false;
    };
    let wanted = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let observed = status.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0);
    observed
        && status.current_revision.is_some()
        && status.current_revision == status.update_revision
        && status.updated_replicas.unwrap_or(0) >= wanted
        && status.replicas <= wanted
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
    use k8s_openapi::api::core::v1::{
        Container, KeyToPath, PodSpec, PodTemplateSpec, SecretVolumeSource, Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn sts(args: &[&str], revisions: (&str, &str), updated: i32) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                generation: Some(4),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(3),
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: CONTAINER_NAME.to_owned(),
                            args: Some(args.iter().map(|a| (*a).to_owned()).collect()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                    ..PodTemplateSpec::default()
                },
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(4),
                replicas: 3,
                current_revision: Some(revisions.0.to_owned()),
                update_revision: Some(revisions.1.to_owned()),
                updated_replicas: Some(updated),
                ..StatefulSetStatus::default()
            }),
        }
    }

    const FILE: &str = "--peer-token-file=/etc/kcache/peer-auth/token";
    const AUTH: &str = "--auth-token-file=/etc/kcache/auth/token";

    fn migrating(current: Option<&StatefulSet>) -> bool {
        migration(current) == Migration::AppTokens
    }

    #[test]
    fn a_new_cluster_starts_with_peer_tokens_required() {
        assert_eq!(migration(None), Migration::Done);
    }

    #[test]
    fn nodes_without_peer_tokens_get_them_in_a_rollout_that_still_admits_them() {
        assert!(migrating(Some(&sts(
            &["--auth-token-file=/a"],
            ("r1", "r1"),
            3
        ))));
    }

    #[test]
    fn the_admitting_flag_stays_until_every_node_runs_the_template_that_has_it() {
        let flags = [AUTH, FILE, MIGRATING_FLAG];
        assert!(migrating(Some(&sts(&flags, ("r1", "r2"), 1))));
        assert!(migrating(Some(&sts(&flags, ("r1", "r2"), 3))));
        assert!(migrating(Some(&sts(&flags, ("r2", "r2"), 2))));
        let mut unobserved = sts(&flags, ("r2", "r2"), 3);
        unobserved.metadata.generation = Some(5);
        assert!(migrating(Some(&unobserved)));
        assert_eq!(
            migration(Some(&sts(&flags, ("r2", "r2"), 3))),
            Migration::Done
        );
    }

    #[test]
    fn a_statefulset_without_status_or_with_pods_to_remove_is_not_rolled_out() {
        let flags = [AUTH, FILE, MIGRATING_FLAG];
        let mut fresh = sts(&flags, ("r2", "r2"), 3);
        fresh.status = None;
        assert!(migrating(Some(&fresh)));
        // Scaled down from 4: a pod of the old template may still be draining.
        let mut scaled = sts(&flags, ("r2", "r2"), 3);
        scaled.status.as_mut().unwrap().replicas = 4;
        assert!(migrating(Some(&scaled)));
    }

    #[test]
    fn once_required_peer_tokens_stay_required() {
        assert_eq!(
            migration(Some(&sts(&[AUTH, FILE], ("r1", "r2"), 0))),
            Migration::Done
        );
    }

    #[test]
    fn turning_auth_on_admits_tokenless_callers_until_the_rollout_is_complete() {
        // The running nodes have no tokens at all.
        let open = sts(&["--max-memory=1GiB"], ("r1", "r1"), 3);
        assert_eq!(migration(Some(&open)), Migration::Anonymous);
        // The rollout with the flag is under way: it stays.
        let flags = [AUTH, FILE, MIGRATING_FLAG, ANONYMOUS_FLAG];
        assert_eq!(
            migration(Some(&sts(&flags, ("r1", "r2"), 2))),
            Migration::Anonymous
        );
        // Complete: the next rollout makes every node strict.
        assert_eq!(
            migration(Some(&sts(&flags, ("r2", "r2"), 3))),
            Migration::Done
        );
    }

    /// `sts` whose pods mount spec.auth's Secret `tokens` (key `app`).
    fn mounting(args: &[&str], revisions: (&str, &str), updated: i32) -> StatefulSet {
        let mut sts = sts(args, revisions, updated);
        let pod = sts.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        pod.volumes = Some(vec![Volume {
            name: AUTH_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("tokens".to_owned()),
                items: Some(vec![KeyToPath {
                    key: "app".to_owned(),
                    path: "token".to_owned(),
                    mode: None,
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }]);
        sts
    }

    #[test]
    fn turning_auth_off_keeps_the_running_secret_until_every_node_admits_tokenless_callers() {
        let kept = Some(AuthSpec {
            secret_name: "tokens".to_owned(),
            key: "app".to_owned(),
        });
        // Strict nodes run: the next ones keep their Secret.
        assert_eq!(
            retiring(Some(&mounting(&[AUTH, FILE], ("r1", "r1"), 3))),
            kept
        );
        // The rollout that admits tokenless callers is under way.
        let flags = [AUTH, FILE, ANONYMOUS_FLAG];
        assert_eq!(retiring(Some(&mounting(&flags, ("r1", "r2"), 1))), kept);
        // Complete (or the cluster never had auth): nothing to keep.
        assert_eq!(retiring(Some(&mounting(&flags, ("r2", "r2"), 3))), None);
        assert_eq!(
            retiring(Some(&sts(&["--max-memory=1GiB"], ("r1", "r1"), 3))),
            None
        );
        assert_eq!(retiring(None), None);
        // Off while turning it on was under way: the old nodes may be tokenless or
        // admitting, the next ones keep tokens and admit.
        let on = [AUTH, FILE, MIGRATING_FLAG, ANONYMOUS_FLAG];
        assert_eq!(retiring(Some(&mounting(&on, ("r1", "r2"), 1))), kept);
        // Nodes from before peer tokens.
        assert_eq!(retiring(Some(&mounting(&[AUTH], ("r1", "r1"), 3))), kept);
        // A flag that only begins like the auth flag is not it.
        assert_eq!(
            retiring(Some(&mounting(&["--auth-token-filex=/a"], ("r1", "r1"), 3))),
            None
        );
    }

    #[test]
    fn turning_auth_on_again_while_it_is_being_turned_off_admits_until_complete() {
        let retiring = [AUTH, FILE, ANONYMOUS_FLAG];
        assert_eq!(
            migration(Some(&sts(&retiring, ("r1", "r2"), 1))),
            Migration::Anonymous
        );
        assert_eq!(
            migration(Some(&sts(&retiring, ("r2", "r2"), 3))),
            Migration::Done
        );
        assert_eq!(Migration::Retiring.flags(), [ANONYMOUS_FLAG]);
    }

    #[test]
    fn generated_tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }
}

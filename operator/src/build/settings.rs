//! What a spec means for a node: the memory limit (derived when not given), value
//! size, TTL and drain timeout, checked for what would make a node refuse to start
//! or a cluster misbehave. The CRD's schema and CEL rules reject most of these
//! already; the checks are repeated here because a spec may have been stored under
//! an older CRD, and because some (a derived memory limit too small) no schema can
//! see.

use std::fmt;
use std::time::Duration;

use kcache_crd::CacheClusterSpec;
use kcache_crd::units::{self, UnitError};

/// The node's floor for `--max-memory`; it refuses to start below it.
pub const MIN_MAX_MEMORY: u64 = 1 << 20;
/// The node's memory limit when neither maxMemory nor a memory limit is set: the
/// node's own default.
pub const DEFAULT_MAX_MEMORY: u64 = 256 << 20;
/// Share of the container memory limit given to the store when maxMemory is not
/// set, in percent. The rest covers connection buffers, gRPC and handoff streams and
/// the allocator's slack; Redis' operators give the same advice.
pub const DERIVED_MEMORY_PERCENT: u64 = 75;
/// Longest default TTL the node accepts (its `MAX_TTL`, 365 days).
pub const MAX_DEFAULT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Bounds of drainTimeout, as in the CRD's CEL rule: below 5s a drain cannot hand
/// anything over; above an hour a stuck pod blocks a rollout for too long.
pub const MIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);

/// A spec value that passed the schema but cannot work, with the field to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// The path of the field, e.g. `spec.maxMemory`.
    pub field: String,
    /// Why it cannot work, in words a user can act on.
    pub message: String,
}

impl SpecProblem {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl From<UnitError> for SpecProblem {
    fn from(e: UnitError) -> Self {
        Self {
            field: e.field,
            message: e.message,
        }
    }
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The node configuration a valid spec resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Bytes the store may use (`--max-memory`).
    pub max_memory: u64,
    /// Largest value accepted (`--max-value-size`).
    pub max_value_size: u64,
    /// TTL of writes that set none (`--default-ttl`); None = never expire.
    pub default_ttl: Option<Duration>,
    /// Time a stopping node has to hand its keys over (`--drain-timeout`).
    pub drain_timeout: Duration,
}

impl NodeSettings {
    /// Resolves a spec, or lists every problem in it (all at once, so a user fixes
    /// them in one round).
    pub fn resolve(spec: &CacheClusterSpec) -> Result<Self, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        let parsed = Parsed::read(spec, &mut problems);
        problems.extend(parsed.problems(spec));
        problems.extend(structural_problems(spec));
        match parsed.settings() {
            Some(settings) if problems.is_empty() => Ok(settings),
            _ => Err(problems),
        }
    }
}

/// The spec's quantities and durations, each None when it did not parse.
#[derive(Debug, Default)]
struct Parsed {
    limit: Option<u64>,
    request: Option<u64>,
    max_memory: Option<u64>,
    max_value_size: Option<u64>,
    default_ttl: Option<Option<Duration>>,
    drain_timeout: Option<Duration>,
}

impl Parsed {
    fn read(spec: &CacheClusterSpec, problems: &mut Vec<SpecProblem>) -> Self {
        let limit = keep(problems, memory_of(spec, "limits").transpose()).flatten();
        let ttl = spec.default_ttl.as_deref();
        Self {
            limit,
            request: keep(problems, memory_of(spec, "requests").transpose()).flatten(),
            max_memory: keep(problems, max_memory(spec, limit)),
            max_value_size: keep(
                problems,
                units::quantity_bytes("spec.maxValueSize", &spec.max_value_size),
            ),
            default_ttl: keep(
                problems,
                ttl.map(|t| units::duration("spec.defaultTTL", t))
                    .transpose(),
            ),
            drain_timeout: keep(
                problems,
                units::duration("spec.drainTimeout", &spec.drain_timeout),
            ),
        }
    }

    /// Values that parsed but do not fit the node or each other.
    fn problems(&self, spec: &CacheClusterSpec) -> Vec<SpecProblem> {
        let mut problems = Vec::new();
        if let (Some(request), Some(limit)) = (self.request, self.limit)
            && request > limit
        {
            problems.push(SpecProblem::new(
                "spec.resources.requests.memory",
                "is above resources.limits.memory; Kubernetes would refuse every pod",
            ));
        }
        if let Some(max) = self.max_memory {
            check_max_memory(spec, max, self.limit, &mut problems);
            check_value_size(spec, max, self.max_value_size, &mut problems);
        }
        if self.max_value_size == Some(0) {
            problems.push(SpecProblem::new(
                "spec.maxValueSize",
                "must be at least 1 byte",
            ));
        }
        if self
            .default_ttl
            .flatten()
            .is_some_and(|t| t > MAX_DEFAULT_TTL)
        {
            problems.push(SpecProblem::new(
                "spec.defaultTTL",
                "must be at most 8760h (365 days)",
            ));
        }
        let drain_bounds = MIN_DRAIN_TIMEOUT..=MAX_DRAIN_TIMEOUT;
        if self
            .drain_timeout
            .is_some_and(|d| !drain_bounds.contains(&d))
        {
            problems.push(SpecProblem::new(
                "spec.drainTimeout",
                "must be between 5s and 1h",
            ));
        }
        problems
    }

    /// The settings, when every value parsed.
    fn settings(&self) -> Option<NodeSettings> {
        Some(NodeSettings {
            max_memory: self.max_memory?,
            max_value_size: self.max_value_size?,
            default_ttl: self.default_ttl?.filter(|t| !t.is_zero()),
            drain_timeout: self.drain_timeout?,
        })
    }
}

/// The value of a parse, or None with its problem recorded.
fn keep<T>(problems: &mut Vec<SpecProblem>, parsed: Result<T, UnitError>) -> Option<T> {
    parsed.map_err(|e| problems.push(e.into())).ok()
}

/// The container's memory `limits` or `requests`, in bytes, if set.
fn memory_of(spec: &CacheClusterSpec, which: &str) -> Option<Result<u64, UnitError>> {
    let resources = spec.resources.as_ref()?;
    let map = match which {
        "limits" => resources.limits.as_ref(),
        _ => resources.requests.as_ref(),
    }?;
    let quantity = map.get("memory")?;
    Some(units::quantity_bytes(
        &format!("spec.resources.{which}.memory"),
        &quantity.0,
    ))
}

/// spec.maxMemory, else [`DERIVED_MEMORY_PERCENT`] of the limit rounded down to a
/// whole MiB, else the node's default.
fn max_memory(spec: &CacheClusterSpec, limit: Option<u64>) -> Result<u64, UnitError> {
    match (&spec.max_memory, limit) {
        (Some(q), _) => units::quantity_bytes("spec.maxMemory", q),
        (None, Some(limit)) => {
            let derived =
                u64::try_from(u128::from(limit) * u128::from(DERIVED_MEMORY_PERCENT) / 100)
                    .unwrap_or(u64::MAX);
            Ok(derived / MIN_MAX_MEMORY * MIN_MAX_MEMORY)
        }
        (None, None) => Ok(DEFAULT_MAX_MEMORY),
    }
}

fn check_max_memory(
    spec: &CacheClusterSpec,
    max: u64,
    limit: Option<u64>,
    problems: &mut Vec<SpecProblem>,
) {
    let explicit = spec.max_memory.is_some();
    if max < MIN_MAX_MEMORY {
        problems.push(if explicit {
            SpecProblem::new("spec.maxMemory", "must be at least 1Mi, the node's minimum")
        } else {
            SpecProblem::new(
                "spec.resources.limits.memory",
                "is too small: the node's memory limit, derived as 75% of it, would be below the node's minimum of 1Mi",
            )
        });
    }
    if let Some(limit) = limit
        && max >= limit
    {
        problems.push(SpecProblem::new(
            "spec.maxMemory",
            format!(
                "must be below resources.limits.memory ({}); the node needs memory beyond its store",
                units::quantity_string(limit)
            ),
        ));
    }
}

/// A value must fit in the store; only meaningful once the store's own size is
/// valid (a too small limit is reported by itself).
fn check_value_size(
    spec: &CacheClusterSpec,
    max: u64,
    size: Option<u64>,
    problems: &mut Vec<SpecProblem>,
) {
    if let Some(size) = size
        && size > max
        && max >= MIN_MAX_MEMORY
    {
        problems.push(SpecProblem::new(
            "spec.maxValueSize",
            format!(
                "{} exceeds the memory limit {}; no such value could be stored",
                spec.max_value_size,
                units::quantity_string(max)
            ),
        ));
    }
}

/// Problems no quantity parsing finds: counts that do not fit together.
fn structural_problems(spec: &CacheClusterSpec) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    if spec.replication_factor > spec.replicas {
        problems.push(SpecProblem::new(
            "spec.replicationFactor",
            format!(
                "{} exceeds replicas ({}); a key cannot have more owners than there are nodes",
                spec.replication_factor, spec.replicas
            ),
        ));
    }
    let pdb = &spec.pod_disruption_budget;
    if pdb.min_available.is_some() && pdb.max_unavailable.is_some() {
        problems.push(SpecProblem::new(
            "spec.podDisruptionBudget",
            "set at most one of minAvailable and maxUnavailable",
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    use super::*;

    fn spec(value: serde_json::Value) -> CacheClusterSpec {
        serde_json::from_value(value).unwrap()
    }

    fn fields(spec: &CacheClusterSpec) -> Vec<String> {
        NodeSettings::resolve(spec)
            .unwrap_err()
            .into_iter()
            .map(|p| p.field)
            .collect()
    }

    #[test]
    fn without_memory_settings_the_node_gets_its_default() {
        let settings = NodeSettings::resolve(&spec(json!({}))).unwrap();
        assert_eq!(settings.max_memory, DEFAULT_MAX_MEMORY);
        assert_eq!(settings.max_value_size, 1 << 20);
        assert_eq!(settings.default_ttl, None);
        assert_eq!(settings.drain_timeout, Duration::from_secs(30));
    }

    #[test]
    fn max_memory_defaults_to_three_quarters_of_the_limit_in_whole_mebibytes() {
        let s = spec(json!({"resources": {"limits": {"memory": "1Gi"}}}));
        assert_eq!(NodeSettings::resolve(&s).unwrap().max_memory, 768 << 20);
        let s = spec(json!({"resources": {"limits": {"memory": "1000M"}}}));
        // 750,000,000 bytes is 715.25 MiB: rounded down, never above the limit.
        assert_eq!(NodeSettings::resolve(&s).unwrap().max_memory, 715 << 20);
    }

    #[test]
    fn an_explicit_max_memory_wins_and_must_stay_below_the_limit() {
        let s = spec(json!({"maxMemory": "900Mi", "resources": {"limits": {"memory": "1Gi"}}}));
        assert_eq!(NodeSettings::resolve(&s).unwrap().max_memory, 900 << 20);
        let s = spec(json!({"maxMemory": "1Gi", "resources": {"limits": {"memory": "1Gi"}}}));
        assert_eq!(fields(&s), ["spec.maxMemory"]);
    }

    #[test]
    fn a_limit_too_small_for_a_derived_max_memory_names_the_limit() {
        let mut s = spec(json!({}));
        s.resources = Some(ResourceRequirements {
            limits: Some([("memory".to_owned(), Quantity("1Mi".into()))].into()),
            ..ResourceRequirements::default()
        });
        assert_eq!(fields(&s), ["spec.resources.limits.memory"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let s = spec(json!({
            "replicas": 1, "replicationFactor": 2,
            "maxMemory": "10Mi", "maxValueSize": "20Mi",
            "drainTimeout": "2h", "defaultTTL": "9000h",
            "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
        }));
        let mut got = fields(&s);
        got.sort();
        assert_eq!(
            got,
            [
                "spec.defaultTTL",
                "spec.drainTimeout",
                "spec.maxValueSize",
                "spec.replicationFactor",
                "spec.resources.requests.memory",
            ]
        );
    }

    #[test]
    fn unparsable_quantities_name_their_field() {
        let s = spec(json!({"maxMemory": "lots"}));
        assert_eq!(fields(&s), ["spec.maxMemory"]);
    }

    #[test]
    fn a_zero_default_ttl_means_entries_never_expire() {
        let s = spec(json!({"defaultTTL": "0s"}));
        assert_eq!(NodeSettings::resolve(&s).unwrap().default_ttl, None);
    }

    #[test]
    fn tls_and_auth_are_accepted_now_that_the_node_serves_them() {
        let s = spec(json!({
            "tls": {"secretName": "certs", "requireClientCertificate": true},
            "auth": {"secretName": "tokens"},
        }));
        assert!(NodeSettings::resolve(&s).is_ok());
    }
}

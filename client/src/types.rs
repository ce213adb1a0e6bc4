//! Plain domain types the [`Client`](crate::Client) speaks, and their mapping to the
//! wire messages. No I/O here, so the mapping is unit-tested on its own.

use std::time::Duration;

use bytes::Bytes;

use crate::proto;

/// A stored value as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The bytes, shared with the response buffer rather than copied.
    pub value: Bytes,
    /// The version to pass to [`Condition::IfVersion`] or `delete` for compare-and-set.
    pub version: u64,
    /// Time left before the key expires; `None` when it never expires.
    pub ttl: Option<Duration>,
}

impl Value {
    /// Turns a `GetResponse` into `None` on a miss, so callers (including users of the
    /// raw pipeline stream) need not remember that a miss is `found == false`.
    pub fn from_reply(reply: proto::GetResponse) -> Option<Value> {
        reply.found.then(|| Value {
            value: reply.value,
            version: reply.version,
            ttl: reply.ttl_ms.map(Duration::from_millis),
        })
    }
}

/// How long a written key lives. Three cases because the wire has three: the node's
/// `--default-ttl`, no expiry, or an explicit time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ttl {
    /// Whatever the node's `--default-ttl` says (the field is left absent).
    #[default]
    Default,
    /// The key never expires (sent as 0 ms).
    Never,
    /// The key expires after this long. Sub-millisecond parts round *up*, so a tiny
    /// TTL can never turn into 0 ms, which the wire reads as "never expires".
    After(Duration),
}

impl Ttl {
    /// The proto's `optional uint64 ttl_ms`.
    pub fn to_millis(self) -> Option<u64> {
        match self {
            Ttl::Default => None,
            Ttl::Never => Some(0),
            Ttl::After(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000).max(1);
                Some(u64::try_from(ms).unwrap_or(u64::MAX))
            }
        }
    }
}

/// When a `set` may store. A condition that does not hold is an answer
/// (`stored: false`), not an error, as with Redis `SET NX` or memcached `cas`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Condition {
    /// Store unconditionally.
    #[default]
    Always,
    /// Store only if the key is absent (Redis `SET NX`, memcached `add`).
    IfAbsent,
    /// Store only if the key is present (Redis `SET XX`, memcached `replace`).
    IfPresent,
    /// Store only if the current version equals this one (memcached `cas`).
    IfVersion(u64),
}

/// The knobs of a `set`; `SetOptions::default()` is a plain unconditional write with the
/// node's default TTL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// How long the key lives.
    pub ttl: Ttl,
    /// When the write may happen.
    pub condition: Condition,
}

/// What a `set` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetOutcome {
    /// False when the condition did not hold.
    pub stored: bool,
    /// The new version when stored; otherwise the current one (0 when absent), so a
    /// compare-and-set loop can retry without another read.
    pub version: u64,
}

impl From<proto::SetResponse> for SetOutcome {
    fn from(r: proto::SetResponse) -> Self {
        SetOutcome {
            stored: r.stored,
            version: r.version,
        }
    }
}

/// Builds the wire request for one `set`, shared by `set`, `mset` and callers that drive
/// the raw stubs ([`Client::raw`](crate::Client::raw)), such as a Pipeline stream.
pub fn set_request(key: Bytes, value: Bytes, options: SetOptions) -> proto::SetRequest {
    use proto::SetCondition as C;
    let (condition, version) = match options.condition {
        Condition::Always => (C::Always, 0),
        Condition::IfAbsent => (C::IfAbsent, 0),
        Condition::IfPresent => (C::IfPresent, 0),
        Condition::IfVersion(v) => (C::IfVersion, v),
    };
    proto::SetRequest {
        key,
        value,
        ttl_ms: options.ttl.to_millis(),
        condition: condition.into(),
        version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_maps_to_absent_zero_or_millis() {
        assert_eq!(Ttl::Default.to_millis(), None);
        assert_eq!(Ttl::Never.to_millis(), Some(0));
        assert_eq!(Ttl::After(Duration::from_secs(3)).to_millis(), Some(3000));
    }

    #[test]
    fn tiny_ttl_rounds_up_instead_of_meaning_never() {
        assert_eq!(Ttl::After(Duration::ZERO).to_millis(), Some(1));
        assert_eq!(Ttl::After(Duration::from_micros(1500)).to_millis(), Some(2));
    }

    #[test]
    fn huge_ttl_saturates() {
        assert_eq!(Ttl::After(Duration::MAX).to_millis(), Some(u64::MAX));
    }

    #[test]
    fn if_version_carries_the_expected_version() {
        let options = SetOptions {
            ttl: Ttl::Never,
            condition: Condition::IfVersion(7),
        };
        let req = set_request("k".into(), "v".into(), options);
        assert_eq!(req.condition(), proto::SetCondition::IfVersion);
        assert_eq!(req.version, 7);
        assert_eq!(req.ttl_ms, Some(0));
    }

    #[test]
    fn a_miss_is_none_and_a_hit_keeps_version_and_ttl() {
        assert_eq!(Value::from_reply(proto::GetResponse::default()), None);
        let hit = proto::GetResponse {
            found: true,
            value: "v".into(),
            version: 3,
            ttl_ms: Some(1500),
            deleted_version: 0,
        };
        let value = Value::from_reply(hit).expect("a hit");
        assert_eq!(value.version, 3);
        assert_eq!(value.ttl, Some(Duration::from_millis(1500)));
    }
}

//! Small accessors for `metadata` on untyped objects, and the server's clock.
//!
//! The emulator stores objects as `serde_json::Value`: it serves every kind, including
//! custom resources it learns at run time, so there is no typed model to lean on.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value};

/// `metadata` of an object, if it has one.
pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

/// `metadata` of an object, created if missing. Non-object inputs are replaced by `{}`.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("just made an object");
    let entry = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("just made an object")
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)?.get(field)?.as_str()
}

/// `metadata.name`.
pub fn name(obj: &Value) -> Option<&str> {
    meta_str(obj, "name").filter(|n| !n.is_empty())
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace").filter(|n| !n.is_empty())
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> Option<&str> {
    meta_str(obj, "uid")
}

/// `metadata.finalizers`, empty when absent.
pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The uids in `metadata.ownerReferences`.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The value at a path of object keys, if every step exists.
pub fn get_path<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, key| v.get(*key))
}

/// Now. (k8s-openapi builds jiff without `std`, so the clock is read through std here.)
pub fn now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let micros = i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX);
    Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Now, as the RFC 3339 second-precision UTC string the API uses for `Time` fields.
pub fn now_time() -> String {
    format_time(now())
}

/// Now, with microseconds, as the API's `MicroTime` fields hold.
pub fn now_micro_time() -> String {
    now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// `seconds` from now, as a `Time` string (a graceful deletion's deadline).
pub fn time_in(seconds: u64) -> String {
    let micros = i64::try_from(seconds.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    let later = Timestamp::from_microsecond(now().as_microsecond().saturating_add(micros))
        .unwrap_or_else(|_| now());
    format_time(later)
}

fn format_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A fresh object uid (UUID v4), new for every create — also a re-create of the same name.
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether `name` is a DNS-1123 subdomain, the rule for most object names.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Five characters in the alphabet the real server uses for `generateName` suffixes
/// (no vowels, no look-alikes, so generated names never spell words or confuse).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn time_strings_have_the_api_format() {
        let t = now_time();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z'));
        assert_eq!(now_micro_time().len(), 27);
    }

    #[test]
    fn dns_subdomain_rule_rejects_uppercase_and_edges() {
        assert!(is_dns_subdomain("demo-0.x"));
        assert!(!is_dns_subdomain("Demo"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain(""));
    }

    #[test]
    fn owner_uids_reads_every_reference() {
        let obj = json!({"metadata": {"ownerReferences": [{"uid": "a"}, {"uid": "b"}]}});
        assert_eq!(owner_uids(&obj), vec!["a", "b"]);
    }
}

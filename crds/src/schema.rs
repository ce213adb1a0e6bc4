//! Schema pieces shared by several fields: the formats of quantities and durations,
//! and the list-map marker that lets server-side apply merge conditions by type.

use schemars::Schema;

/// A non-negative Kubernetes quantity without exponent or milli suffix (`256Mi`,
/// `1.5Gi`, `500M`, `1048576`): the subset that makes sense for a byte count, and that
/// CEL's `quantity()` reads.
pub const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";

/// A Go duration of whole units (`30s`, `1h30m`, `250ms`): what CEL's `duration()`
/// reads, so the cross-field rules can compare durations.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// Longest quantity or duration string. A bound on every string a CEL rule reads
/// keeps the API server's rule cost estimate low; 32 characters is far more than
/// any sensible value needs.
pub const MAX_SHORT_STRING: u32 = 32;

/// Marks a list of conditions as a map keyed by `type`, so status updates from
/// server-side apply replace conditions one by one and `kubectl` shows them merged.
pub fn conditions_list_map(schema: &mut Schema) {
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
}

//! Patches: JSON merge (RFC 7386), JSON patch (RFC 6902), strategic merge (as merge for
//! built-ins) and server-side apply with field ownership.

pub mod apply;
pub mod fields;

use json_patch::PatchOperation;
use serde_json::Value;

use crate::apiserver::error::{ApiError, ApiResult};

/// The patch types of the `Content-Type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (JSON is YAML).
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type`, or 415.
    pub fn from_content_type(content_type: &str) -> ApiResult<Self> {
        let mime = content_type.split(';').next().unwrap_or("").trim();
        match mime {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ))),
        }
    }
}

/// RFC 7386: `null` deletes, objects merge, everything else (arrays too) replaces.
///
/// Strategic merge patch is served with this too: for what kubectl and the lease crate
/// send to built-in kinds (scalars, maps, `null` deletions) the results are the same;
/// list merge keys are the difference, and nothing kcache relies on sends those.
pub fn merge(doc: &mut Value, patch: &Value) -> ApiResult<()> {
    if !patch.is_object() {
        return Err(ApiError::bad_request("merge patch must be a JSON object"));
    }
    json_patch::merge(doc, patch);
    Ok(())
}

/// RFC 6902, all or nothing, with one deliberate difference from the RFC that the real
/// server (through the Go `evanphx/json-patch` library) has: `test` of `null` against a
/// missing path passes. kube's `finalizer()` helper depends on that to add the first
/// finalizer. A failed patch is 422, as the real server answers.
pub fn json(doc: &mut Value, ops: &Value) -> ApiResult<()> {
    let ops: Vec<PatchOperation> = serde_json::from_value(ops.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    let mut working = doc.clone();
    for op in &ops {
        if let PatchOperation::Test(test) = op
            && test.value.is_null()
            && working.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(&mut working, std::slice::from_ref(op))
            .map_err(|e| unprocessable(e.to_string()))?;
    }
    *doc = working;
    Ok(())
}

/// 422 for a patch that cannot be applied, with the reason kube and kubectl expect.
fn unprocessable(message: String) -> ApiError {
    let mut err = ApiError::invalid("", "", "", Vec::new());
    err.message =
        format!("the server rejected our request due to an error in our request: {message}");
    err.details = None;
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_null_deletes_and_arrays_replace() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge(&mut doc, &json!({"a": null, "b": {"c": 5}, "l": [3]})).unwrap();
        assert_eq!(doc, json!({"b": {"c": 5, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_test_of_null_on_a_missing_path_passes() {
        let mut doc = json!({"metadata": {}});
        let ops = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
        ]);
        json(&mut doc, &ops).unwrap();
        assert_eq!(doc["metadata"]["finalizers"][0], "f");
    }

    #[test]
    fn a_failed_json_patch_changes_nothing_and_is_422() {
        let mut doc = json!({"a": 1});
        let ops = json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "test", "path": "/a", "value": 1}]);
        let err = json(&mut doc, &ops).unwrap_err();
        assert_eq!((err.code, err.reason), (422, "Invalid"));
        assert_eq!(doc, json!({"a": 1}));
    }
}

//! The scale subresource (`autoscaling/v1` Scale), mapped through the kind's replica and
//! selector paths: `kubectl scale` and HorizontalPodAutoscalers use it.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::AppState;
use super::json_response;
use super::resource::ResourceRequest;
use super::table::json_path;
use crate::apiserver::cluster::Subresource;
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::patch::{self, PatchType};
use crate::apiserver::resources::{ResourceType, ScalePaths};

pub(super) fn handle(
    state: &AppState,
    rt: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    request: &ResourceRequest,
) -> ApiResult<Response> {
    let paths = rt
        .scale
        .as_ref()
        .ok_or_else(|| ApiError::no_route("scale"))?;
    let current = state.cluster.get(rt, namespace, name)?;
    let desired = match request.method {
        Method::GET => return Ok(json_response(StatusCode::OK, &scale_of(&current, paths))),
        Method::PUT => request_body_json(request)?,
        Method::PATCH => {
            let mut scale = scale_of(&current, paths);
            let body: Value = serde_json::from_slice(&request.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            match PatchType::from_content_type(
                request
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            )? {
                PatchType::Json => patch::json(&mut scale, &body)?,
                _ => patch::merge(&mut scale, &body)?,
            }
            scale
        }
        _ => {
            return Err(ApiError::method_not_allowed(
                "scale supports get, update and patch",
            ));
        }
    };
    let replicas = desired
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::bad_request("Scale.spec.replicas must be an integer"))?;
    let mut change = nested(&paths.spec_replicas, replicas.into());
    if let Some(rv) = desired
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
    {
        change["metadata"] = json!({"resourceVersion": rv});
    }
    let mut options = request_write_options(request);
    options.strict = false;
    let (updated, _) = state.cluster.patch(
        rt,
        namespace,
        name,
        PatchType::Merge,
        change,
        Subresource::Main,
        &options,
    )?;
    Ok(json_response(StatusCode::OK, &scale_of(&updated, paths)))
}

fn request_body_json(request: &ResourceRequest) -> ApiResult<Value> {
    serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::bad_request(format!("couldn't decode Scale: {e}")))
}

fn request_write_options(request: &ResourceRequest) -> crate::apiserver::cluster::WriteOptions {
    crate::apiserver::cluster::WriteOptions {
        field_manager: request.query.get("fieldManager").map(str::to_string),
        default_manager: Some("kubectl-scale".into()),
        dry_run: request.query.get("dryRun") == Some("All"),
        force: false,
        strict: false,
    }
}

/// The Scale view of an object.
fn scale_of(obj: &Value, paths: &ScalePaths) -> Value {
    let metadata = obj.get("metadata").cloned().unwrap_or_default();
    let keep = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ];
    let metadata: Map<String, Value> = metadata
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let spec_replicas = json_path(obj, &paths.spec_replicas).unwrap_or(json!(0));
    let status_replicas = json_path(obj, &paths.status_replicas).unwrap_or(json!(0));
    let mut status = json!({"replicas": status_replicas});
    if let Some(selector) = paths
        .label_selector
        .as_deref()
        .and_then(|p| json_path(obj, p))
    {
        status["selector"] = selector_string(&selector).into();
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": metadata,
        "spec": {"replicas": spec_replicas}, "status": status})
}

/// `status.selector` is a string: a CRD points at one; a built-in's LabelSelector object
/// is rendered in the label-selector grammar.
fn selector_string(selector: &Value) -> String {
    if let Some(s) = selector.as_str() {
        return s.to_string();
    }
    let mut terms: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expr["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        terms.push(match expr["operator"].as_str() {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("DoesNotExist") => format!("!{key}"),
            _ => key.to_string(),
        });
    }
    terms.join(",")
}

/// `{"spec": {"replicas": value}}` from `.spec.replicas`.
fn nested(path: &str, value: Value) -> Value {
    path.trim_start_matches('.')
        .split('.')
        .rev()
        .fold(value, |inner, key| json!({ key: inner }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_selector_object_becomes_selector_grammar() {
        let selector = json!({"matchLabels": {"app": "kcache"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert_eq!(selector_string(&selector), "app=kcache,tier in (a,b)");
    }

    #[test]
    fn nested_builds_the_patch_for_a_replicas_path() {
        assert_eq!(
            nested(".spec.replicas", json!(3)),
            json!({"spec": {"replicas": 3}})
        );
    }
}

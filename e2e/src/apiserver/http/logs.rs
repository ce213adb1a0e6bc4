//! `GET pods/{name}/log` (`kubectl logs`): the real server proxies it to the pod's
//! kubelet; here the kubelet is local, so its log files are read directly.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use super::{AppState, Query};
use crate::apiserver::error::{ApiError, ApiResult};

/// The log of one container of pod `namespace/name`: `container` names it (required when
/// the pod has several), `tailLines` keeps the last lines.
pub(super) fn handle(
    state: &AppState,
    namespace: Option<&str>,
    name: &str,
    query: &Query,
) -> ApiResult<Response> {
    let rt = state.cluster.resource("", "v1", "pods")?;
    let pod = state.cluster.get(&rt, namespace, name)?;
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let container = match query.get("container") {
        Some(c) if containers.contains(&c) => c,
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if containers.len() == 1 => containers[0],
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let Some(dir) = &state.config.pod_logs else {
        return Err(ApiError::bad_request(
            "pod logs are not served by this API server (no local kubelet)",
        ));
    };
    let path = dir
        .join("pods")
        .join(format!("{}_{name}", namespace.unwrap_or_default()))
        .join(format!("{container}.log"));
    let text = std::fs::read_to_string(&path).map_err(|_| {
        ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        ))
    })?;
    let text = match query.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let mut tail = lines[lines.len().saturating_sub(n)..].join("\n");
            if !tail.is_empty() {
                tail.push('\n');
            }
            tail
        }
        None => text,
    };
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    Ok(response)
}

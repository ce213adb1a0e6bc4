//! Handlers for resource paths: CRUD, patches, subresources, lists and watches.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::table::{IncludeObject, table};
use super::{AppState, Query, Rendering, Target, json_response, partial_metadata, verb};
use crate::apiserver::cluster::{DeleteOptions, Subresource, WriteOptions};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::patch::PatchType;
use crate::apiserver::resources::ResourceType;
use crate::apiserver::select::Selectors;

/// A parsed request for a resource path.
#[derive(Debug)]
pub(super) struct ResourceRequest {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Query,
    pub target: Target,
    pub body: Bytes,
}

impl ResourceRequest {
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
    }

    /// The body as JSON (or YAML, which apply and `application/yaml` bodies may be).
    fn json_body(&self) -> ApiResult<Value> {
        let content_type = self.content_type();
        if content_type.contains("protobuf") || content_type.contains("cbor") {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({content_type})"
            )));
        }
        if self.body.is_empty() {
            return Err(ApiError::bad_request("the request body is empty"));
        }
        if content_type.contains("yaml") {
            return serde_yaml::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })
    }

    fn write_options(&self) -> WriteOptions {
        let user_agent = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        WriteOptions {
            field_manager: self.query.get("fieldManager").map(str::to_string),
            default_manager: user_agent.split('/').next().map(str::to_string),
            dry_run: self.query.get("dryRun") == Some("All"),
            force: self.query.flag("force"),
            strict: self.query.get("fieldValidation") == Some("Strict"),
        }
    }
}

pub(super) async fn handle(state: &AppState, request: ResourceRequest) -> ApiResult<Response> {
    let target = &request.target;
    let rt = state
        .cluster
        .resource(&target.group, &target.version, &target.plural)?;
    if target.namespace.is_some() && !rt.namespaced {
        return Err(ApiError::no_route(&format!(
            "{} is not namespaced",
            rt.plural
        )));
    }
    let namespace = target.namespace.as_deref();
    let rendering = Rendering::from_headers(&request.headers);
    let Some(name) = target.name.clone() else {
        return collection(state, &rt, namespace, &request, rendering).await;
    };
    if rt.namespaced && namespace.is_none() {
        return Err(ApiError::no_route(&format!("{} is namespaced", rt.plural)));
    }
    match target.subresource.as_deref() {
        None => object(
            state,
            &rt,
            namespace,
            &name,
            Subresource::Main,
            &request,
            rendering,
        ),
        Some("status") if rt.status => object(
            state,
            &rt,
            namespace,
            &name,
            Subresource::Status,
            &request,
            rendering,
        ),
        Some("scale") if rt.scale.is_some() => {
            super::scale::handle(state, &rt, namespace, &name, &request)
        }
        Some("log") if rt.group.is_empty() && rt.plural == "pods" => {
            if request.method != Method::GET {
                return Err(ApiError::method_not_allowed(format!(
                    "{} is not supported on pods/log",
                    verb(&request.method)
                )));
            }
            super::logs::handle(state, namespace, &name, &request.query)
        }
        Some("binding") if rt.group.is_empty() && rt.plural == "pods" => {
            if request.method != Method::POST {
                return Err(ApiError::method_not_allowed(format!(
                    "{} is not supported on pods/binding",
                    verb(&request.method)
                )));
            }
            let binding = request.json_body()?;
            state.cluster.bind(namespace, &name, &binding)?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        Some(other) => Err(ApiError::no_route(&format!("{}/{other}", rt.plural))),
    }
}

async fn collection(
    state: &AppState,
    rt: &Arc<ResourceType>,
    namespace: Option<&str>,
    request: &ResourceRequest,
    rendering: Rendering,
) -> ApiResult<Response> {
    let cluster = &state.cluster;
    let query = &request.query;
    match request.method {
        Method::GET if query.flag("watch") || request.target.watch_prefix => {
            super::watch::serve(state, rt.clone(), namespace, query, rendering)
        }
        Method::GET => {
            let selectors =
                Selectors::parse(query.get("labelSelector"), query.get("fieldSelector"), rt)?;
            let (items, rv) = cluster.list(rt, namespace, &selectors);
            Ok(json_response(
                StatusCode::OK,
                &render_list(rt, items, rv, rendering, query),
            ))
        }
        Method::POST => {
            let body = request.json_body()?;
            if rt.namespaced && namespace.is_none() {
                return Err(ApiError::bad_request(
                    "a namespace is required to create a namespaced resource",
                ));
            }
            let created = cluster.create(rt, namespace, body, &request.write_options())?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        Method::DELETE => {
            let selectors =
                Selectors::parse(query.get("labelSelector"), query.get("fieldSelector"), rt)?;
            let options = delete_options(request)?;
            let (items, rv) = cluster.delete_collection(rt, namespace, &selectors, &options)?;
            Ok(json_response(
                StatusCode::OK,
                &render_list(rt, items, rv, Rendering::Objects, query),
            ))
        }
        ref other => Err(ApiError::method_not_allowed(format!(
            "{} is not supported on a collection",
            verb(other)
        ))),
    }
}

fn object(
    state: &AppState,
    rt: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    sub: Subresource,
    request: &ResourceRequest,
    rendering: Rendering,
) -> ApiResult<Response> {
    let cluster = &state.cluster;
    match request.method {
        Method::GET => {
            let obj = cluster.get(rt, namespace, name)?;
            Ok(json_response(
                StatusCode::OK,
                &render_one(rt, obj, rendering, &request.query),
            ))
        }
        Method::PUT => {
            let obj = cluster.replace(
                rt,
                namespace,
                name,
                request.json_body()?,
                sub,
                &request.write_options(),
            )?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        Method::PATCH => {
            let patch_type = PatchType::from_content_type(request.content_type())?;
            let body = if patch_type == PatchType::Apply {
                serde_yaml::from_slice(&request.body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
            } else {
                serde_json::from_slice(&request.body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
            };
            let (obj, created) = cluster.patch(
                rt,
                namespace,
                name,
                patch_type,
                body,
                sub,
                &request.write_options(),
            )?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(status, &obj))
        }
        Method::DELETE if sub == Subresource::Main => {
            let (obj, gone) = cluster.delete(rt, namespace, name, &delete_options(request)?)?;
            match (gone, rt.custom) {
                // Built-in registries answer an immediate delete with a Status (kube's
                // `Either::Right`); custom resources return the deleted object.
                (true, false) => Ok(json_response(StatusCode::OK, &deleted_status(rt, &obj))),
                (true, true) => Ok(json_response(StatusCode::OK, &obj)),
                (false, _) => Ok(json_response(StatusCode::ACCEPTED, &obj)),
            }
        }
        ref other => Err(ApiError::method_not_allowed(format!(
            "{} is not supported here",
            verb(other)
        ))),
    }
}

/// The `Status` of a completed delete.
fn deleted_status(rt: &ResourceType, obj: &Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": obj.pointer("/metadata/name"), "group": rt.group, "kind": rt.plural, "uid": obj.pointer("/metadata/uid")}
    })
}

/// DeleteOptions from the body (kube and kubectl send one) and the query.
fn delete_options(request: &ResourceRequest) -> ApiResult<DeleteOptions> {
    let mut options: DeleteOptions = if request.body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(&request.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    if let Some(policy) = request.query.get("propagationPolicy") {
        options.propagation_policy = serde_json::from_value(Value::from(policy))
            .map_err(|_| ApiError::bad_request(format!("invalid propagationPolicy {policy:?}")))?;
    }
    if request.query.get("dryRun") == Some("All") {
        options.dry_run = vec!["All".into()];
    }
    if let Some(grace) = request.query.get("gracePeriodSeconds") {
        options.grace_period_seconds =
            Some(grace.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds {grace:?}"))
            })?);
    }
    Ok(options)
}

fn render_one(rt: &ResourceType, obj: Value, rendering: Rendering, query: &Query) -> Value {
    match rendering {
        Rendering::Objects => obj,
        Rendering::Metadata => partial_metadata(&obj),
        Rendering::Table => table(
            rt,
            &[obj],
            None,
            IncludeObject::parse(query.get("includeObject")),
        ),
    }
}

/// A list response. Everything is one page: `continue` is absent, which kube's watcher
/// and kubectl accept for any `limit`.
fn render_list(
    rt: &ResourceType,
    items: Vec<Value>,
    rv: u64,
    rendering: Rendering,
    query: &Query,
) -> Value {
    match rendering {
        Rendering::Table => table(
            rt,
            &items,
            Some(rv),
            IncludeObject::parse(query.get("includeObject")),
        ),
        Rendering::Metadata => json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
        }),
        Rendering::Objects => json!({
            "kind": rt.list_kind(), "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        }),
    }
}

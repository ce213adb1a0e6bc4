//! The HTTP edge: parses requests, calls the [`Cluster`], renders JSON (or Tables, or
//! watch streams). Plain `http://` on loopback, no authentication.

mod discovery;
mod logs;
mod openapi;
mod path;
mod query;
mod resource;
mod scale;
mod table;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

pub use path::{Route, Target};
pub use query::Query;

use super::Config;
use super::cluster::Cluster;
use super::error::{ApiError, ApiResult};

/// Largest accepted request body: the real server's limit (3 MiB) is what clients assume.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What every request handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The API's state and semantics.
    pub cluster: Cluster,
    /// Emulator settings.
    pub config: Arc<Config>,
    /// Flips to `true` on shutdown, so long-running watches end and shutdown completes.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The listening address, for `/api`'s `serverAddressByClientCIDRs`.
    pub addr: SocketAddr,
}

/// The router: one handler that parses the path itself, because the set of resources
/// changes at run time as CRDs come and go.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<AppState>, request: Request) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    tracing::debug!(%method, %uri, "request");
    let result = dispatch(&state, request).await;
    result.unwrap_or_else(|e| {
        tracing::debug!(%method, %uri, code = e.code, reason = e.reason, "error");
        error_response(&e)
    })
}

async fn dispatch(state: &AppState, request: Request) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let query = Query::parse(parts.uri.query());
    let path = parts.uri.path().to_string();
    let route = path::parse(&path).ok_or_else(|| ApiError::no_route(&path))?;
    let registry = &state.cluster.registry;
    let found = |v: Option<Value>| {
        v.map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(|| ApiError::no_route(&path))
    };
    match route {
        Route::Version => Ok(json_response(StatusCode::OK, &discovery::version())),
        Route::Health => Ok(Response::new(Body::from("ok"))),
        Route::CoreVersions => Ok(json_response(
            StatusCode::OK,
            &discovery::core_versions(&state.addr.to_string()),
        )),
        Route::Groups => Ok(json_response(
            StatusCode::OK,
            &discovery::group_list(registry),
        )),
        Route::Group(group) => found(discovery::group(registry, &group)),
        Route::GroupVersion(group, version) => {
            found(discovery::resource_list(registry, &group, &version))
        }
        Route::OpenApiRoot => Ok(json_response(StatusCode::OK, &openapi::root(registry))),
        Route::OpenApi(gv) => found(openapi::document(registry, &gv)),
        Route::Resource(target) => {
            let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
                .await
                .map_err(|e| ApiError::too_large(format!("request body: {e}")))?;
            let request = resource::ResourceRequest {
                method: parts.method,
                headers: parts.headers,
                query,
                target,
                body,
            };
            resource::handle(state, request).await
        }
    }
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The `Status` response for an error.
pub(crate) fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &error.to_status())
}

/// How the client wants objects rendered (`Accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rendering {
    /// Plain objects.
    Objects,
    /// `as=Table`.
    Table,
    /// `as=PartialObjectMetadata[List]` (`Controller::owns`, metadata watchers).
    Metadata,
}

impl Rendering {
    fn from_headers(headers: &HeaderMap) -> Self {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // The first acceptable media type wins, as content negotiation goes.
        for media in accept.split(',') {
            if media.contains("as=Table") {
                return Self::Table;
            }
            if media.contains("as=PartialObjectMetadata") {
                return Self::Metadata;
            }
            if media.trim().starts_with("application/json") || media.trim().starts_with("*/*") {
                return Self::Objects;
            }
        }
        Self::Objects
    }
}

/// `PartialObjectMetadata` of an object.
pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// The method's name in messages.
pub(crate) fn verb(method: &Method) -> &str {
    method.as_str()
}

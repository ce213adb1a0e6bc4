//! Watch streams: HTTP 200, chunked, one JSON event per line, flushed per event.
//!
//! A too-old resourceVersion is answered with 200 and an ERROR event (410 Expired), then
//! the stream closes — never with an HTTP 410 at the start, which kube retries forever.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::table::{IncludeObject, table};
use super::{AppState, Query, Rendering, partial_metadata};
use crate::apiserver::cluster::watch::{Item, Start};
use crate::apiserver::error::{ApiError, ApiResult, Cause};
use crate::apiserver::resources::ResourceType;
use crate::apiserver::select::Selectors;

/// How long a watch lasts without `timeoutSeconds`: the real server's default
/// `--min-request-timeout`.
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Events buffered per watch before the stream applies backpressure to its producer.
const WATCH_BUFFER: usize = 64;

pub(super) fn serve(
    state: &AppState,
    rt: Arc<ResourceType>,
    namespace: Option<&str>,
    query: &Query,
    rendering: Rendering,
) -> ApiResult<Response> {
    let selectors = Selectors::parse(query.get("labelSelector"), query.get("fieldSelector"), &rt)?;
    let bookmarks = query.flag("allowWatchBookmarks");
    let start = start_of(query, bookmarks)?;
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let include = IncludeObject::parse(query.get("includeObject"));
    let mut watch = state.cluster.watch(rt.clone(), namespace, selectors, start);
    let bookmark_interval = state.config.bookmark_interval;
    let mut shutdown = state.shutdown.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(WATCH_BUFFER);

    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + bookmark_interval,
            bookmark_interval,
        );
        loop {
            let item = tokio::select! {
                item = watch.next() => match item {
                    Some(item) => item,
                    None => return,
                },
                _ = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => Item::Bookmark { rv: watch.cursor(), initial_events_end: false },
                _ = shutdown.wait_for(|down| *down).map(|_| ()) => return,
            };
            let last = matches!(item, Item::Error(_));
            if tx
                .send(encode(&rt, item, rendering, include))
                .await
                .is_err()
                || last
            {
                return;
            }
        }
    });

    let stream = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Where the watch starts, from `resourceVersion`, `resourceVersionMatch` and
/// `sendInitialEvents`.
fn start_of(query: &Query, bookmarks: bool) -> ApiResult<Start> {
    let rv = query.get("resourceVersion");
    if query.flag("sendInitialEvents") {
        if query.get("resourceVersionMatch") != Some("NotOlderThan") || !bookmarks {
            let cause = Cause::new(
                "sendInitialEvents",
                "FieldValueForbidden",
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks to true",
            );
            return Err(ApiError::invalid(
                "ListOptions",
                "meta.k8s.io",
                "",
                vec![cause],
            ));
        }
        return Ok(Start::Snapshot {
            initial_events_end: true,
        });
    }
    match rv {
        None | Some("0") => Ok(Start::Snapshot {
            initial_events_end: false,
        }),
        Some(rv) => rv.parse().map(Start::After).map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {rv:?}: must be a number"))
        }),
    }
}

/// One event line.
fn encode(rt: &ResourceType, item: Item, rendering: Rendering, include: IncludeObject) -> Bytes {
    let (type_, object) = match item {
        Item::Event(type_, object) => {
            let object = match rendering {
                Rendering::Objects => object,
                Rendering::Metadata => partial_metadata(&object),
                Rendering::Table => table(rt, &[object], None, include),
            };
            (type_, object)
        }
        Item::Bookmark {
            rv,
            initial_events_end,
        } => {
            let mut metadata = json!({"resourceVersion": rv.to_string()});
            if initial_events_end {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            (
                "BOOKMARK",
                json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata}),
            )
        }
        Item::Error(error) => ("ERROR", error.to_status()),
    };
    let mut line =
        serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

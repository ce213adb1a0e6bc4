//! What goes over the wire, checked byte for byte: the spec's "must"s that clients see
//! only indirectly (they break in loops or hangs rather than with a clear error).

use std::time::Duration;

use kcache_e2e::apiserver::Config;
use serde_json::json;

use crate::support::{TestServer, configmap};

#[tokio::test]
async fn errors_are_status_objects_with_the_exact_reason() {
    let server = TestServer::start().await;
    let cm = configmap("a", json!({})).to_string();
    let path = "/api/v1/namespaces/default/configmaps";

    let missing = server.raw("GET", &format!("{path}/nope"), "", "").await;
    assert_eq!(
        (missing.status, missing.json()["reason"].as_str()),
        (404, Some("NotFound"))
    );
    assert_eq!(missing.json()["kind"], "Status");
    assert!(
        missing
            .headers
            .iter()
            .any(|h| h == "content-type: application/json"),
        "{:?}",
        missing.headers
    );

    assert_eq!(
        server
            .raw("POST", path, "application/json", &cm)
            .await
            .status,
        201
    );
    let again = server.raw("POST", path, "application/json", &cm).await;
    assert_eq!(
        (again.status, again.json()["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    let stale = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "1"}}).to_string();
    let conflict = server
        .raw("PUT", &format!("{path}/a"), "application/json", &stale)
        .await;
    assert_eq!(
        (conflict.status, conflict.json()["reason"].as_str()),
        (409, Some("Conflict"))
    );

    let bad_name = configmap("Not_Valid", json!({})).to_string();
    let invalid = server
        .raw("POST", path, "application/json", &bad_name)
        .await;
    assert_eq!(
        (invalid.status, invalid.json()["reason"].as_str()),
        (422, Some("Invalid"))
    );

    let bad_json = server
        .raw("POST", path, "application/json", "{not json")
        .await;
    assert_eq!(
        (bad_json.status, bad_json.json()["reason"].as_str()),
        (400, Some("BadRequest"))
    );

    let bad_patch = server
        .raw("PATCH", &format!("{path}/a"), "application/xml", "<a/>")
        .await;
    assert_eq!(
        (bad_patch.status, bad_patch.json()["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    server.stop().await;
}

#[tokio::test]
async fn query_strings_with_leading_ampersands_trailing_marks_and_plus_signs_decode() {
    let server = TestServer::start().await;
    let path = "/api/v1/namespaces/default/configmaps";
    for (name, tier) in [("a", "x"), ("b", "y"), ("c", "z")] {
        let body = configmap(name, json!({"tier": tier})).to_string();
        assert_eq!(
            server
                .raw("POST", path, "application/json", &body)
                .await
                .status,
            201
        );
    }
    let list = server
        .raw(
            "GET",
            &format!("{path}?&labelSelector=tier+in+(x,y)&limit=500"),
            "",
            "",
        )
        .await
        .json();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    let all = server.raw("GET", &format!("{path}?"), "", "").await;
    assert_eq!(
        (all.status, all.json()["items"].as_array().unwrap().len()),
        (200, 3)
    );
    server.stop().await;
}

#[tokio::test]
async fn an_empty_list_still_carries_a_resource_version_and_no_continue_token() {
    let server = TestServer::start().await;
    let list = server
        .raw(
            "GET",
            "/api/v1/namespaces/default/secrets?limit=500",
            "",
            "",
        )
        .await
        .json();
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap();
    assert!(!rv.is_empty() && rv.parse::<u64>().unwrap() > 0, "{list}");
    assert!(
        list["metadata"]
            .get("continue")
            .is_none_or(|c| c.as_str() == Some(""))
    );
    assert_eq!(list["kind"], "SecretList");
    server.stop().await;
}

#[tokio::test]
async fn a_too_old_resource_version_is_an_error_event_in_a_200_stream_then_the_end() {
    let server = TestServer::start().await;
    let path = "/api/v1/namespaces/default/configmaps";
    server
        .raw(
            "POST",
            path,
            "application/json",
            &configmap("a", json!({})).to_string(),
        )
        .await;
    server.cluster().store.compact();
    let mut watch = server
        .watch(&format!(
            "{path}?watch=true&resourceVersion=1&allowWatchBookmarks=true"
        ))
        .await;
    assert_eq!(watch.status, 200, "never an HTTP 410 at watch start");
    let event = watch.next_event().await.unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(
        (
            event["object"]["code"].as_i64(),
            event["object"]["reason"].as_str()
        ),
        (Some(410), Some("Expired"))
    );
    assert!(
        watch.next_event().await.is_none(),
        "the stream ends after an ERROR"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_resume_point_older_than_the_kept_history_is_expired() {
    let server = TestServer::start_with(Config {
        history_capacity: 2,
        ..Config::default()
    })
    .await;
    let path = "/api/v1/namespaces/default/configmaps";
    let first = server
        .raw(
            "POST",
            path,
            "application/json",
            &configmap("a", json!({})).to_string(),
        )
        .await
        .json();
    let from = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ["b", "c", "d"] {
        server
            .raw(
                "POST",
                path,
                "application/json",
                &configmap(name, json!({})).to_string(),
            )
            .await;
    }
    let mut watch = server
        .watch(&format!("{path}?watch=true&resourceVersion={from}"))
        .await;
    assert_eq!(watch.status, 200);
    assert_eq!(
        watch.next_event().await.unwrap()["object"]["reason"],
        "Expired"
    );
    assert!(watch.next_event().await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn list_items_carry_exactly_their_own_kind_and_api_version() {
    let server = TestServer::start().await;
    let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
        "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "c", "reportingInstance": "i",
        "action": "A", "reason": "R", "type": "Normal", "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}});
    let created = server
        .raw(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/default/events",
            "application/json",
            &event.to_string(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let v1 = server
        .raw(
            "GET",
            "/apis/events.k8s.io/v1/namespaces/default/events",
            "",
            "",
        )
        .await
        .json();
    assert_eq!(
        (
            v1["items"][0]["apiVersion"].as_str(),
            v1["items"][0]["kind"].as_str()
        ),
        (Some("events.k8s.io/v1"), Some("Event"))
    );
    let core = server
        .raw("GET", "/api/v1/namespaces/default/events", "", "")
        .await
        .json();
    assert_eq!(
        (
            core["items"][0]["apiVersion"].as_str(),
            core["items"][0]["kind"].as_str()
        ),
        (Some("v1"), Some("Event"))
    );
    assert_eq!(core["items"][0]["involvedObject"]["name"], "p");
    server.stop().await;
}

#[tokio::test]
async fn a_watch_delivers_every_later_change_in_order_with_its_resource_version() {
    let server = TestServer::start().await;
    let path = "/api/v1/namespaces/default/configmaps";
    let created = server
        .raw(
            "POST",
            path,
            "application/json",
            &configmap("a", json!({})).to_string(),
        )
        .await
        .json();
    let from = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let patch = json!({"data": {"k": "v2"}}).to_string();
    server
        .raw(
            "PATCH",
            &format!("{path}/a"),
            "application/merge-patch+json",
            &patch,
        )
        .await;
    server
        .raw("DELETE", &format!("{path}/a"), "application/json", "{}")
        .await;

    let mut watch = server
        .watch(&format!("{path}?watch=true&resourceVersion={from}"))
        .await;
    assert!(
        watch
            .headers
            .iter()
            .any(|h| h == "transfer-encoding: chunked"),
        "{:?}",
        watch.headers
    );
    let modified = watch.next_event().await.unwrap();
    let deleted = watch.next_event().await.unwrap();
    assert_eq!(
        (modified["type"].as_str(), deleted["type"].as_str()),
        (Some("MODIFIED"), Some("DELETED"))
    );
    let rv = |e: &serde_json::Value| {
        e["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&modified) > from.parse().unwrap());
    assert!(
        rv(&deleted) > rv(&modified),
        "a DELETED event carries the deletion's resourceVersion"
    );
    assert_eq!(modified["object"]["data"]["k"], "v2");
    server.stop().await;
}

#[tokio::test]
async fn objects_entering_and_leaving_a_selector_arrive_as_added_and_deleted() {
    let server = TestServer::start().await;
    let path = "/api/v1/namespaces/default/configmaps";
    let mut watch = server
        .watch(&format!(
            "{path}?watch=true&labelSelector=app%3Dweb&resourceVersion={}",
            server.cluster().store.current_rv()
        ))
        .await;
    server
        .raw(
            "POST",
            path,
            "application/json",
            &configmap("a", json!({"app": "db"})).to_string(),
        )
        .await;
    let label = |app: &str| json!({"metadata": {"labels": {"app": app}}}).to_string();
    server
        .raw(
            "PATCH",
            &format!("{path}/a"),
            "application/merge-patch+json",
            &label("web"),
        )
        .await;
    server
        .raw(
            "PATCH",
            &format!("{path}/a"),
            "application/merge-patch+json",
            &label("db"),
        )
        .await;
    let first = watch.next_event().await.unwrap();
    let second = watch.next_event().await.unwrap();
    assert_eq!(
        (first["type"].as_str(), second["type"].as_str()),
        (Some("ADDED"), Some("DELETED"))
    );
    // Another namespace never shows up in a namespaced watch.
    server
        .raw(
            "POST",
            "/api/v1/namespaces",
            "application/json",
            &json!({"metadata": {"name": "other"}}).to_string(),
        )
        .await;
    server
        .raw(
            "POST",
            "/api/v1/namespaces/other/configmaps",
            "application/json",
            &configmap("b", json!({"app": "web"})).to_string(),
        )
        .await;
    assert!(watch.quiet_for(Duration::from_millis(300)).await);
    server.stop().await;
}

#[tokio::test]
async fn a_streaming_list_sends_every_object_then_the_initial_events_end_bookmark() {
    let server = TestServer::start().await;
    let path = "/api/v1/namespaces/default/configmaps";
    for name in ["a", "b"] {
        server
            .raw(
                "POST",
                path,
                "application/json",
                &configmap(name, json!({})).to_string(),
            )
            .await;
    }
    let query = "watch=true&timeoutSeconds=290&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0";
    let mut watch = server.watch(&format!("{path}?&{query}")).await;
    assert_eq!(watch.next_event().await.unwrap()["type"], "ADDED");
    assert_eq!(watch.next_event().await.unwrap()["type"], "ADDED");
    let bookmark = watch.next_event().await.unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    let object = &bookmark["object"];
    assert_eq!(
        (object["apiVersion"].as_str(), object["kind"].as_str()),
        (Some("v1"), Some("ConfigMap"))
    );
    assert!(
        !object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        object["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    server.stop().await;
}

#[tokio::test]
async fn periodic_bookmarks_carry_api_version_kind_and_resource_version() {
    let server = TestServer::start_with(Config {
        bookmark_interval: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let rv = server.cluster().store.current_rv();
    let mut watch = server.watch(&format!("/api/v1/namespaces/default/pods?watch=true&allowWatchBookmarks=true&resourceVersion={rv}")).await;
    let bookmark = watch.next_event().await.unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(bookmark["object"]["kind"], "Pod");
    assert_eq!(bookmark["object"]["apiVersion"], "v1");
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"],
        rv.to_string()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_watch_closes_cleanly_after_its_timeout() {
    let server = TestServer::start().await;
    let rv = server.cluster().store.current_rv();
    let mut watch = server
        .watch(&format!(
            "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1&resourceVersion={rv}"
        ))
        .await;
    let started = std::time::Instant::now();
    assert!(
        watch.next_event().await.is_none(),
        "ends with the final chunk, not a reset"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    server.stop().await;
}

#[tokio::test]
async fn one_resource_version_counter_spans_all_kinds() {
    let server = TestServer::start().await;
    let cm = server
        .raw(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &configmap("a", json!({})).to_string(),
        )
        .await
        .json();
    let secret =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}).to_string();
    let secret = server
        .raw(
            "POST",
            "/api/v1/namespaces/default/secrets",
            "application/json",
            &secret,
        )
        .await
        .json();
    let rv = |o: &serde_json::Value| {
        o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(rv(&secret), rv(&cm) + 1);
    let list = server
        .raw("GET", "/api/v1/namespaces/default/configmaps", "", "")
        .await
        .json();
    assert_eq!(
        list["metadata"]["resourceVersion"],
        rv(&secret).to_string(),
        "the list reports the global version"
    );
    server.stop().await;
}

#[tokio::test]
async fn discovery_lists_groups_resources_and_subresources() {
    let server = TestServer::start().await;
    assert_eq!(
        server.raw("GET", "/api", "", "").await.json()["versions"][0],
        "v1"
    );
    let groups = server.raw("GET", "/apis", "", "").await.json();
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    for group in [
        "apps",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "networking.k8s.io",
        "apiextensions.k8s.io",
    ] {
        assert!(names.contains(&group), "{group} in {names:?}");
    }
    let core = server.raw("GET", "/api/v1", "", "").await.json();
    let pods = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap();
    assert_eq!(
        (pods["kind"].as_str(), pods["namespaced"].as_bool()),
        (Some("Pod"), Some(true))
    );
    assert_eq!(
        server.raw("GET", "/version", "", "").await.json()["major"],
        "1"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_table_has_the_name_column_then_the_printer_columns() {
    let server = TestServer::start().await;
    crate::support::register_widgets(&server.client()).await;
    let widget = json!({"apiVersion": "test.kcache.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"image": "x", "replicas": 3}});
    let created = server
        .raw(
            "POST",
            "/apis/test.kcache.io/v1/namespaces/default/widgets",
            "application/json",
            &widget.to_string(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let table = server
        .raw_accept(
            "/apis/test.kcache.io/v1/namespaces/default/widgets?limit=500",
            accept,
        )
        .await
        .json();
    assert_eq!(table["kind"], "Table");
    let headers: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(headers, vec!["Name", "Replicas", "Phase", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!((cells[0].as_str(), cells[1].as_i64()), (Some("w"), Some(3)));
    assert!(
        cells[3].as_str().unwrap().ends_with('s'),
        "age is rendered: {cells}"
    );
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    server.stop().await;
}

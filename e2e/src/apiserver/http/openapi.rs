//! A minimal OpenAPI v3 document set: enough for kubectl to learn that every kind accepts
//! `fieldValidation` (so it leaves validation to the server instead of downloading the
//! v2 protobuf schema, which the emulator does not serve).
//!
//! Strategic merge patch is deliberately not advertised: kubectl would then try to build
//! such patches from schemas this document does not carry. Without it, kubectl computes
//! them from its compiled-in types, as with an old server.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::discovery::resources_of;
use crate::apiserver::resources::{Registry, ResourceType};

/// `/openapi/v3`: one entry per served group/version.
pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<(String, String)> = registry
        .all()
        .iter()
        .map(|rt| (rt.group.clone(), rt.version.clone()))
        .collect();
    gvs.sort();
    gvs.dedup();
    for (group, version) in gvs {
        let key = if group.is_empty() {
            format!("api/{version}")
        } else {
            format!("apis/{group}/{version}")
        };
        let Some(doc) = document(registry, &key) else {
            continue;
        };
        let mut hasher = DefaultHasher::new();
        doc.to_string().hash(&mut hasher);
        let url = format!("/openapi/v3/{key}?hash={:016X}", hasher.finish());
        paths.insert(key, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api/v1 | apis/group/version>`.
pub fn document(registry: &Registry, gv_path: &str) -> Option<Value> {
    let (group, version) = match gv_path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => (String::new(), version.to_string()),
        ["apis", group, version] => (group.to_string(), version.to_string()),
        _ => return None,
    };
    let rts = resources_of(registry, &group, &version);
    if rts.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for rt in &rts {
        let (collection, item) = paths_of(rt);
        paths.insert(collection, collection_ops(rt));
        paths.insert(item, item_ops(rt));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}

fn paths_of(rt: &ResourceType) -> (String, String) {
    let scope = if rt.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let collection = format!("{}{scope}/{}", rt.path_prefix(), rt.plural);
    let item = format!("{collection}/{{name}}");
    (collection, item)
}

/// An operation of `rt`. kubectl looks for `fieldValidation` among the parameters of the
/// PATCH operation itself, so every operation lists them.
fn gvk(rt: &ResourceType, action: &str) -> Value {
    json!({
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "parameters": query_params(),
        "responses": {"200": {"description": "OK"}}
    })
}

fn query_params() -> Vec<Value> {
    ["dryRun", "fieldManager", "fieldValidation", "pretty"]
        .iter()
        .map(|name| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect()
}

fn collection_ops(rt: &ResourceType) -> Value {
    let mut ops = json!({"get": gvk(rt, "list"), "post": gvk(rt, "post")});
    ops["post"]["requestBody"] =
        json!({"content": {"application/json": {}, "application/yaml": {}}});
    ops
}

fn item_ops(rt: &ResourceType) -> Value {
    let mut patch = gvk(rt, "patch");
    patch["requestBody"] = json!({"content": {
        "application/apply-patch+yaml": {}, "application/json-patch+json": {}, "application/merge-patch+json": {}
    }});
    if let Some(Value::Array(params)) = patch.get_mut("parameters") {
        params.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    json!({"get": gvk(rt, "get"), "put": gvk(rt, "put"), "patch": patch, "delete": gvk(rt, "delete")})
}

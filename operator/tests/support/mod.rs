//! A small stateful Kubernetes API behind kube's tower-test mock: it answers the
//! requests a reconciliation makes (server-side apply, get, delete, status patches,
//! events, discovery) at the HTTP level, keeps the objects, and logs every request,
//! so tests assert on what the operator did to the cluster rather than on the
//! order of its calls. It stands in until the e2e API emulator exists.

// Each test binary uses a different part of the fake.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kcache_crd::CacheCluster;
use kcache_operator::Metrics;
use kcache_operator::build::BuildOptions;
use kcache_operator::controller::Context;
use kube::client::Body;
use serde_json::{Value, json};

pub const CLUSTER_PATH: &str = "/apis/kcache.io/v1alpha1/namespaces/apps/cacheclusters/demo";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: Method,
    pub path: String,
    pub query: String,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Value>,
    events: Vec<Value>,
    log: Vec<Logged>,
    statefulset_status: Option<Value>,
    monitoring_served: bool,
    reject: Option<(String, String)>,
    fail_with_500: bool,
    next_uid: u64,
}

/// The fake API server; clone it freely, all clones share one state.
#[derive(Debug, Clone, Default)]
pub struct FakeApi(Arc<Mutex<State>>);

impl FakeApi {
    /// A fake holding `cluster`, and a reconcile context whose client talks to it.
    pub fn with_cluster(cluster: &CacheCluster) -> (Self, Arc<Context>) {
        let fake = Self::default();
        fake.put(CLUSTER_PATH, serde_json::to_value(cluster).unwrap());
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                respond.send_response(server.handle(request).await);
            }
        });
        let client = kube::Client::new(service, "default");
        let context = Context::new(
            client,
            Metrics::new(),
            BuildOptions::default(),
            "test-operator",
        );
        (fake, Arc::new(context))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    pub fn put(&self, path: &str, object: Value) {
        self.state().objects.insert(path.to_owned(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state().objects.get(path).cloned()
    }

    pub fn remove(&self, path: &str) {
        self.state().objects.remove(path);
    }

    /// The CacheCluster as stored now (with the status the operator wrote), as the
    /// controller's watch would deliver it next.
    pub fn cluster(&self) -> CacheCluster {
        serde_json::from_value(self.get(CLUSTER_PATH).unwrap()).unwrap()
    }

    /// Changes the stored CacheCluster's spec the way `kubectl apply` would: the
    /// generation moves on.
    pub fn edit_spec(&self, edit: impl FnOnce(&mut Value)) {
        let mut state = self.state();
        let cluster = state.objects.get_mut(CLUSTER_PATH).unwrap();
        edit(&mut cluster["spec"]);
        let generation = cluster["metadata"]["generation"].as_i64().unwrap_or(1);
        cluster["metadata"]["generation"] = json!(generation + 1);
    }

    /// What the StatefulSet controller reports from now on.
    pub fn set_statefulset_status(&self, status: Value) {
        self.state().statefulset_status = Some(status);
    }

    /// Serve monitoring.coreos.com/v1 (ServiceMonitor, PrometheusRule).
    pub fn serve_monitoring(&self) {
        self.state().monitoring_served = true;
    }

    /// Answer applies to paths containing `fragment` with 422 Invalid.
    pub fn reject(&self, fragment: &str, message: &str) {
        self.state().reject = Some((fragment.to_owned(), message.to_owned()));
    }

    /// Answer every request but event writes with 500.
    pub fn fail_everything(&self) {
        self.state().fail_with_500 = true;
    }

    pub fn events(&self) -> Vec<Value> {
        self.state().events.clone()
    }

    /// (type, reason, note) of every event published so far.
    pub fn event_reasons(&self) -> Vec<(String, String, String)> {
        self.events()
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                (s("type"), s("reason"), s("note"))
            })
            .collect()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state().log.clone()
    }

    pub fn clear_log(&self) {
        let mut state = self.state();
        state.log.clear();
        state.events.clear();
    }

    /// Requests that change something, other than events.
    pub fn writes(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|r| r.method != Method::GET && !r.path.contains("/events"))
            .collect()
    }

    async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.unwrap();
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let method = parts.method.clone();
        let mut state = self.state();
        state.log.push(Logged {
            method: method.clone(),
            path: path.clone(),
            query,
        });
        if path.contains("/events") {
            return events(&mut state, &method, body);
        }
        if state.fail_with_500 {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "etcd is down",
            );
        }
        if path == "/apis/monitoring.coreos.com/v1" {
            return discovery(state.monitoring_served);
        }
        let (key, subresource) = match path.strip_suffix("/status") {
            Some(key) => (key.to_owned(), true),
            None => (path.clone(), false),
        };
        match method {
            Method::GET => match state.objects.get(&key) {
                Some(object) => ok(object.clone()),
                None => not_found(&key),
            },
            Method::DELETE => match state.objects.remove(&key) {
                Some(_) => ok(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
                None => not_found(&key),
            },
            Method::PATCH if subresource => match state.objects.get_mut(&key) {
                Some(object) => {
                    object["status"] = body["status"].clone();
                    ok(object.clone())
                }
                None => not_found(&key),
            },
            Method::PATCH => apply(&mut state, &key, body),
            Method::POST => {
                let key = format!(
                    "{key}/{}",
                    body["metadata"]["name"].as_str().unwrap_or_default()
                );
                if state.objects.contains_key(&key) {
                    return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
                }
                apply(&mut state, &key, body)
            }
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not in the fake",
            ),
        }
    }
}

/// Every kind of patch, simplified to a JSON merge into the stored object (objects
/// merge, arrays and scalars replace, null removes): what server-side apply does when
/// one manager owns the fields it sends, and what strategic merge does for the
/// scalar-only patches the lease manager sends. The server keeps uid and status and
/// moves the generation on when the spec changes.
fn apply(state: &mut State, key: &str, patch: Value) -> Response<Body> {
    if let Some((fragment, message)) = &state.reject
        && key.contains(fragment.as_str())
    {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message);
    }
    let previous = state.objects.get(key).cloned();
    let mut object = previous.clone().unwrap_or_else(|| json!({}));
    merge(&mut object, patch);
    let generation = match &previous {
        Some(p) if p["spec"] == object["spec"] => p["metadata"]["generation"].as_i64().unwrap_or(1),
        Some(p) => p["metadata"]["generation"].as_i64().unwrap_or(1) + 1,
        None => 1,
    };
    state.next_uid += 1;
    let uid = previous
        .as_ref()
        .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("uid-{}", state.next_uid));
    object["metadata"]["uid"] = json!(uid);
    object["metadata"]["generation"] = json!(generation);
    if key.contains("/statefulsets/") {
        object["status"] = state
            .statefulset_status
            .clone()
            .unwrap_or_else(|| json!({"replicas": 0}));
    }
    state.objects.insert(key.to_owned(), object.clone());
    ok(object)
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(&key);
                } else {
                    merge(target.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

fn events(state: &mut State, method: &Method, body: Value) -> Response<Body> {
    if *method == Method::POST {
        state.events.push(body.clone());
    }
    ok(body)
}

fn discovery(served: bool) -> Response<Body> {
    if !served {
        return not_found("/apis/monitoring.coreos.com/v1");
    }
    ok(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "monitoring.coreos.com/v1",
        "resources": [
            {"name": "servicemonitors", "singularName": "servicemonitor", "namespaced": true,
             "kind": "ServiceMonitor", "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
            {"name": "prometheusrules", "singularName": "prometheusrule", "namespaced": true,
             "kind": "PrometheusRule", "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        ],
    }))
}

fn ok(body: Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn not_found(path: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{path} not found"),
    )
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

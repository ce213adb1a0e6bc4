//! `pods/{name}/binding`: how a scheduler (here, the kubelet) assigns a pod to a node.
//! The pod's `spec.nodeName` is otherwise immutable, so binding is the only way in.

use serde_json::{Value, json};

use super::{Cluster, not_found, object_key};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::meta;
use crate::apiserver::store::Write;

impl Cluster {
    /// Binds pod `name` to the node named by `binding.target.name`. A pod already bound
    /// (to any node) is a 409 Conflict, as the real registry answers a second scheduler.
    pub fn bind(&self, namespace: Option<&str>, name: &str, binding: &Value) -> ApiResult<()> {
        let rt = self.resource("", "v1", "pods")?;
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("Binding.target.name: Required value"))?
            .to_string();
        let committed = self.store.mutate(
            &rt.storage,
            &object_key(&rt, namespace, name),
            false,
            |current| {
                let current = current.ok_or_else(|| not_found(&rt, name))?;
                let subject = ("", "pods", name);
                if meta::meta_str(&current.object, "deletionTimestamp").is_some() {
                    return Err(ApiError::conflict(
                        subject,
                        "pod is being deleted, cannot be assigned to a host",
                    ));
                }
                if let Some(bound) = meta::get_path(&current.object, &["spec", "nodeName"])
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                {
                    return Err(ApiError::conflict(
                        subject,
                        format!("pod {name} is already assigned to node {bound:?}"),
                    ));
                }
                let mut stored = current.clone();
                let obj = &mut stored.object;
                obj["spec"]["nodeName"] = node.clone().into();
                if !obj["status"].is_object() {
                    obj["status"] = json!({});
                }
                let conditions = obj["status"]["conditions"].as_array().cloned().unwrap_or_default();
                let mut conditions: Vec<Value> = conditions
                    .into_iter()
                    .filter(|c| c["type"] != "PodScheduled")
                    .collect();
                conditions.push(json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": meta::now_time()}));
                obj["status"]["conditions"] = conditions.into();
                if obj["status"]["phase"].is_null() {
                    obj["status"]["phase"] = "Pending".into();
                }
                Ok(Write::Put(stored))
            },
        )?;
        self.after_write(&rt, &committed);
        Ok(())
    }
}

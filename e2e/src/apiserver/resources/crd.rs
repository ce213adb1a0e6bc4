//! CustomResourceDefinitions: validating a CRD, the rows it adds to the resource table,
//! and the status the real server's controllers give it (Established, NamesAccepted).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Column, Form, ResourceType, ScalePaths, StorageKey};
use crate::apiserver::error::Cause;
use crate::apiserver::meta;
use crate::apiserver::schema::Schema;

/// The served rows of a CRD — one per served version — or why the CRD is invalid.
pub fn rows(crd: &Value) -> Result<Vec<ResourceType>, Vec<Cause>> {
    let mut causes = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    if group.is_empty() || !group.contains('.') {
        causes.push(Cause::new(
            "spec.group",
            "FieldValueInvalid",
            format!(
                "Invalid value: {:?}: should be a domain with at least one dot",
                group
            ),
        ));
    }
    if plural.is_empty() || !meta::is_dns_subdomain(plural) {
        causes.push(Cause::new(
            "spec.names.plural",
            "FieldValueRequired",
            "Required value",
        ));
    }
    if kind.is_empty() {
        causes.push(Cause::new(
            "spec.names.kind",
            "FieldValueRequired",
            "Required value",
        ));
    }
    let expected_name = format!("{plural}.{group}");
    if meta::name(crd) != Some(expected_name.as_str()) {
        causes.push(Cause::new(
            "metadata.name",
            "FieldValueInvalid",
            format!(
                "Invalid value: {:?}: must be spec.names.plural+\".\"+spec.group",
                meta::name(crd).unwrap_or("")
            ),
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            causes.push(Cause::new(
                "spec.scope",
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
                ),
            ));
            true
        }
    };
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count()
        != 1
    {
        causes.push(Cause::new(
            "spec.versions",
            "FieldValueInvalid",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    let mut rows = Vec::new();
    for (i, version) in versions.iter().enumerate() {
        match row(crd, version, namespaced) {
            Ok(Some(rt)) => rows.push(rt),
            Ok(None) => {}
            Err(message) => causes.push(Cause::new(
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "FieldValueInvalid",
                message,
            )),
        }
    }
    if causes.is_empty() {
        Ok(rows)
    } else {
        Err(causes)
    }
}

/// One served version's row; `None` when the version is not served.
fn row(crd: &Value, version: &Value, namespaced: bool) -> Result<Option<ResourceType>, String> {
    if version["served"].as_bool() != Some(true) {
        return Ok(None);
    }
    let spec = &crd["spec"];
    let names = &spec["names"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let schema_value = version
        .pointer("/schema/openAPIV3Schema")
        .ok_or("Required value: schemas are required")?;
    let schema = Schema::parse(schema_value)?;
    let group = text(&spec["group"]);
    let plural = text(&names["plural"]);
    let kind = text(&names["kind"]);
    let scale = version
        .pointer("/subresources/scale")
        .map(|scale| ScalePaths {
            spec_replicas: text(&scale["specReplicasPath"]),
            status_replicas: text(&scale["statusReplicasPath"]),
            label_selector: scale["labelSelectorPath"].as_str().map(str::to_string),
        });
    let columns = version["additionalPrinterColumns"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .map(|c| Column {
                    name: text(&c["name"]),
                    type_: text(&c["type"]),
                    format: text(&c["format"]),
                    priority: c["priority"].as_i64().unwrap_or(0),
                    json_path: text(&c["jsonPath"]),
                    description: text(&c["description"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    Ok(Some(ResourceType {
        storage: StorageKey::new(&group, &plural),
        version: text(&version["name"]),
        singular,
        namespaced,
        short_names: list(&names["shortNames"]),
        categories: list(&names["categories"]),
        status: version.pointer("/subresources/status").is_some(),
        scale,
        generation: true,
        unconditional_update: false,
        form: Form::Native,
        columns,
        field_labels: Vec::new(),
        schema: Some(Arc::new(schema)),
        typed_check: None,
        custom: true,
        group,
        plural,
        kind,
    }))
}

/// Sets the status the real server's CRD controllers converge to: names accepted, the
/// CRD established (served), the storage version recorded.
pub fn set_status(crd: &mut Value) {
    let now = meta::now_time();
    let names = crd["spec"]["names"].clone();
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    let condition = |type_: &str, reason: &str, message: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    crd["status"] = json!({
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": names,
        "storedVersions": storage,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "cacheclusters.kcache.io"},
            "spec": {"group": "kcache.io", "scope": "Namespaced",
                "names": {"kind": "CacheCluster", "plural": "cacheclusters", "singular": "cachecluster", "shortNames": ["kc"]},
                "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}},
                    "additionalPrinterColumns": [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]}]}})
    }

    #[test]
    fn a_crd_serves_one_row_per_served_version() {
        let rows = rows(&crd()).unwrap();
        assert_eq!(rows.len(), 1);
        let rt = &rows[0];
        assert_eq!(
            (rt.api_version().as_str(), rt.plural.as_str()),
            ("kcache.io/v1alpha1", "cacheclusters")
        );
        assert!(rt.status && rt.scale.is_some() && rt.namespaced && rt.custom);
        assert_eq!(rt.columns[0].name, "Replicas");
    }

    #[test]
    fn a_crd_whose_name_does_not_match_is_invalid() {
        let mut bad = crd();
        bad["metadata"]["name"] = "other.kcache.io".into();
        let causes = rows(&bad).unwrap_err();
        assert_eq!(causes[0].field, "metadata.name");
    }

    #[test]
    fn status_marks_the_crd_established() {
        let mut c = crd();
        set_status(&mut c);
        assert_eq!(c["status"]["conditions"][1]["type"], "Established");
        assert_eq!(c["status"]["storedVersions"][0], "v1alpha1");
    }
}

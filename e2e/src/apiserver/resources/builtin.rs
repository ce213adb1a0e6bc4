//! The built-in kinds kcache needs, one row each.

use k8s_openapi::api::{
    apps::v1::{ControllerRevision, StatefulSet},
    coordination::v1::Lease,
    core::v1::{ConfigMap, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
    events::v1::Event as EventV1,
    networking::v1::NetworkPolicy,
    policy::v1::PodDisruptionBudget,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Column, Form, ResourceType, ScalePaths, StorageKey, TypedCheck};

/// Decodes `value` as `K`, as the real server's typed decoder would.
fn decode<K: DeserializeOwned>(value: &Value) -> Result<(), String> {
    K::deserialize(value).map(|_| ()).map_err(|e| e.to_string())
}

/// A row with the common defaults: namespaced, no subresources, Name + Age columns.
fn row(group: &str, version: &str, kind: &str, plural: &str, check: TypedCheck) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced: true,
        short_names: Vec::new(),
        categories: Vec::new(),
        status: false,
        scale: None,
        generation: false,
        unconditional_update: true,
        storage: StorageKey::new(group, plural),
        form: Form::Native,
        columns: Vec::new(),
        field_labels: Vec::new(),
        schema: None,
        typed_check: Some(check),
        custom: false,
    }
}

/// Builder-style tweaks for the table below, so each row reads as one sentence.
trait RowExt {
    fn cluster(self) -> Self;
    fn status(self) -> Self;
    fn generation(self) -> Self;
    fn conditional(self) -> Self;
    fn short(self, names: &[&str]) -> Self;
    fn columns(self, columns: &[(&str, &str, &str)]) -> Self;
    fn fields(self, fields: &[&str]) -> Self;
    fn category_all(self) -> Self;
}

impl RowExt for ResourceType {
    fn cluster(mut self) -> Self {
        self.namespaced = false;
        self
    }
    fn status(mut self) -> Self {
        self.status = true;
        self
    }
    fn generation(mut self) -> Self {
        self.generation = true;
        self
    }
    fn conditional(mut self) -> Self {
        self.unconditional_update = false;
        self
    }
    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }
    fn columns(mut self, columns: &[(&str, &str, &str)]) -> Self {
        self.columns = columns
            .iter()
            .map(|(n, t, p)| Column::new(n, t, p))
            .collect();
        self.columns.push(Column::age());
        self
    }
    fn fields(mut self, fields: &[&str]) -> Self {
        self.field_labels = fields.iter().map(|s| s.to_string()).collect();
        self
    }
    fn category_all(mut self) -> Self {
        self.categories = vec!["all".into()];
        self
    }
}

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.name",
    "involvedObject.namespace",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Every built-in resource.
pub fn all() -> Vec<ResourceType> {
    let mut statefulsets = row(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        decode::<StatefulSet>,
    )
    .status()
    .generation()
    .short(&["sts"])
    .category_all()
    .columns(&[
        ("Replicas", "integer", ".spec.replicas"),
        ("Ready", "integer", ".status.readyReplicas"),
    ]);
    statefulsets.scale = Some(ScalePaths {
        spec_replicas: ".spec.replicas".into(),
        status_replicas: ".status.replicas".into(),
        label_selector: Some(".spec.selector".into()),
    });

    let mut events_v1 = row("events.k8s.io", "v1", "Event", "events", decode::<EventV1>)
        .short(&["ev"])
        .fields(&[
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
            "reason",
            "type",
        ]);
    events_v1.storage = StorageKey::new("", "events");
    events_v1.form = Form::EventsV1;

    vec![
        row("", "v1", "Namespace", "namespaces", decode::<Namespace>)
            .cluster()
            .status()
            .short(&["ns"])
            .columns(&[("Status", "string", ".status.phase")])
            .fields(&["status.phase"]),
        row("", "v1", "Service", "services", decode::<Service>)
            .status()
            .short(&["svc"])
            .category_all()
            .columns(&[
                ("Type", "string", ".spec.type"),
                ("Cluster-IP", "string", ".spec.clusterIP"),
            ]),
        row(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            decode::<ServiceAccount>,
        )
        .short(&["sa"]),
        row("", "v1", "Pod", "pods", decode::<Pod>)
            .status()
            .short(&["po"])
            .category_all()
            .columns(&[
                ("Status", "string", ".status.phase"),
                ("IP", "string", ".status.podIP"),
            ])
            .fields(&[
                "spec.nodeName",
                "spec.serviceAccountName",
                "status.phase",
                "status.podIP",
            ]),
        row("", "v1", "Event", "events", decode::<Event>)
            .short(&["ev"])
            .columns(&[
                ("Type", "string", ".type"),
                ("Reason", "string", ".reason"),
                ("Object", "string", ".involvedObject.name"),
                ("Message", "string", ".message"),
            ])
            .fields(EVENT_FIELDS),
        events_v1,
        row("", "v1", "ConfigMap", "configmaps", decode::<ConfigMap>).short(&["cm"]),
        row("", "v1", "Secret", "secrets", decode::<Secret>)
            .columns(&[("Type", "string", ".type")])
            .fields(&["type"]),
        statefulsets,
        row(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            decode::<ControllerRevision>,
        )
        .columns(&[("Revision", "integer", ".revision")]),
        row("", "v1", "Node", "nodes", decode::<Node>)
            .cluster()
            .status()
            .short(&["no"])
            .columns(&[("Version", "string", ".status.nodeInfo.kubeletVersion")]),
        row(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            decode::<EndpointSlice>,
        )
        .columns(&[("AddressType", "string", ".addressType")]),
        row(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            decode::<Role>,
        ),
        row(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            decode::<RoleBinding>,
        )
        .columns(&[("Role", "string", ".roleRef.name")]),
        row(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            decode::<ClusterRole>,
        )
        .cluster(),
        row(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            decode::<ClusterRoleBinding>,
        )
        .cluster()
        .columns(&[("Role", "string", ".roleRef.name")]),
        row(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            decode::<PodDisruptionBudget>,
        )
        .status()
        .generation()
        .short(&["pdb"])
        .columns(&[
            ("Min Available", "string", ".spec.minAvailable"),
            ("Max Unavailable", "string", ".spec.maxUnavailable"),
            (
                "Allowed Disruptions",
                "integer",
                ".status.disruptionsAllowed",
            ),
        ]),
        row(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            decode::<NetworkPolicy>,
        )
        .generation()
        .short(&["netpol"]),
        row(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            decode::<Lease>,
        )
        .conditional()
        .columns(&[("Holder", "string", ".spec.holderIdentity")]),
        row(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            decode::<CustomResourceDefinition>,
        )
        .cluster()
        .status()
        .generation()
        .conditional()
        .short(&["crd", "crds"])
        .columns(&[("Created At", "date", ".metadata.creationTimestamp")]),
    ]
    .into_iter()
    .map(|mut rt| {
        if rt.columns.last().is_some_and(|c| c.name == "Age")
            && rt.columns.iter().any(|c| c.name == "Created At")
        {
            rt.columns.pop();
        }
        rt
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_row_is_unique_by_group_version_plural() {
        let rows = all();
        for (i, a) in rows.iter().enumerate() {
            for b in &rows[i + 1..] {
                assert!(
                    (a.group.as_str(), a.plural.as_str()) != (b.group.as_str(), b.plural.as_str()),
                    "{} twice",
                    a.plural
                );
            }
        }
    }

    #[test]
    fn typed_check_refuses_a_field_of_the_wrong_type() {
        let sts = all()
            .into_iter()
            .find(|r| r.plural == "statefulsets")
            .unwrap();
        let check = sts.typed_check.unwrap();
        assert!(
            check(
                &serde_json::json!({"spec": {"replicas": "three", "selector": {}, "template": {}}})
            )
            .is_err()
        );
    }
}

//! The nodes' identity and the one permission they need: reading the EndpointSlices
//! of their own namespace, which is how they learn the cluster's membership.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::Cluster;
use super::meta::owned_meta;

/// The nodes' ServiceAccount, named after the cluster.
pub fn service_account(cluster: &Cluster<'_>) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(cluster, cluster.name.clone()),
        ..ServiceAccount::default()
    }
}

/// List and watch EndpointSlices, nothing else. A Role, not a ClusterRole: a node
/// never needs to see another namespace.
pub fn role(cluster: &Cluster<'_>) -> Role {
    Role {
        metadata: owned_meta(cluster, cluster.name.clone()),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".to_owned()]),
            resources: Some(vec!["endpointslices".to_owned()]),
            verbs: vec!["list".to_owned(), "watch".to_owned()],
            ..PolicyRule::default()
        }]),
    }
}

/// Grants the Role to the nodes' ServiceAccount.
pub fn role_binding(cluster: &Cluster<'_>) -> RoleBinding {
    RoleBinding {
        metadata: owned_meta(cluster, cluster.name.clone()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: cluster.name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: cluster.name.clone(),
            namespace: Some(cluster.namespace.clone()),
            api_group: None,
        }]),
    }
}

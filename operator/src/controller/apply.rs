//! Server-side apply and delete of owned objects, all under the one field manager.
//! Apply is forced: the operator owns these objects, so a field someone else
//! changed (a drift) is taken back rather than reported as a conflict.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::meta::FIELD_MANAGER;

/// Why an apply did not go through.
#[derive(Debug)]
pub enum ApplyError {
    /// The API server refused the object as invalid (HTTP 422): retrying will not
    /// help until the spec changes.
    Rejected { object: String, message: String },
    /// Anything else; worth retrying.
    Kube(kube::Error),
}

impl ApplyError {
    fn from_kube(object: String, error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 422 => Self::Rejected {
                object,
                message: status.message,
            },
            other => Self::Kube(other),
        }
    }
}

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies a namespaced object and returns it as the API server stored it.
pub async fn apply<K>(client: &Client, object: &K) -> Result<K, ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let name = object.name_any();
    api.patch(&name, &params(), &Patch::Apply(object))
        .await
        .map_err(|e| ApplyError::from_kube(format!("{} {name}", K::kind(&())), e))
}

/// Applies an object of a kind known only at run time (the monitoring kinds).
pub async fn apply_dynamic(
    client: &Client,
    object: &DynamicObject,
    resource: &ApiResource,
) -> Result<DynamicObject, ApplyError> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &object.namespace().unwrap_or_default(),
        resource,
    );
    let name = object.name_any();
    api.patch(&name, &params(), &Patch::Apply(object))
        .await
        .map_err(|e| ApplyError::from_kube(format!("{} {name}", resource.kind), e))
}

/// Deletes an object the spec no longer wants; one that does not exist (or whose
/// kind is not served) is already what is wanted.
pub async fn delete<K>(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    ignore_not_found(
        api.delete(name, &DeleteParams::background())
            .await
            .map(drop),
    )
}

/// [`delete`] for a kind known only at run time.
pub async fn delete_dynamic(
    client: &Client,
    namespace: &str,
    name: &str,
    resource: &ApiResource,
) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    ignore_not_found(
        api.delete(name, &DeleteParams::background())
            .await
            .map(drop),
    )
}

/// Reads an object that may not exist.
pub async fn get_opt<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<K>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
}

fn ignore_not_found(result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other,
    }
}

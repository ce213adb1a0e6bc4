//! Admission of a written object: name rules, typed decoding of built-ins, structural
//! schemas of custom resources, and what the real server fills in for some kinds.

use serde_json::Value;

use super::to_served;
use crate::apiserver::error::{ApiError, ApiResult, Cause};
use crate::apiserver::meta;
use crate::apiserver::resources::{ResourceType, crd};
use crate::apiserver::schema;

/// Validates and completes `obj` (storage form) for `rt`. `strict` is
/// `fieldValidation=Strict`: unknown fields of a custom resource are refused.
pub(super) fn admit(rt: &ResourceType, obj: &mut Value, strict: bool) -> ApiResult<()> {
    let name = meta::name(obj).unwrap_or_default().to_string();
    check_name(rt, &name)?;
    if let Some(check) = rt.typed_check {
        check(&to_served(rt, obj)).map_err(|e| decode_error(rt, &name, &e))?;
    }
    if let Some(schema) = &rt.schema {
        schema::apply_defaults(obj, schema);
        let unknown = schema::prune(obj, schema);
        if strict && let Some(field) = unknown.first() {
            return Err(ApiError::bad_request(format!(
                "strict decoding error: unknown field \"{field}\""
            )));
        }
        let causes = schema::validate(obj, schema);
        if !causes.is_empty() {
            return Err(ApiError::invalid(&rt.kind, &rt.group, &name, causes));
        }
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            crd::rows(obj)
                .map_err(|causes| ApiError::invalid(&rt.kind, &rt.group, &name, causes))?;
            crd::set_status(obj);
        }
        ("", "namespaces") => {
            obj["status"] = serde_json::json!({"phase": "Active"});
        }
        _ => {}
    }
    Ok(())
}

fn check_name(rt: &ResourceType, name: &str) -> ApiResult<()> {
    let ok = if rt.group == "rbac.authorization.k8s.io" {
        // RBAC names are path segments: `system:controller:foo` is fine.
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
    } else {
        meta::is_dns_subdomain(name)
    };
    if ok {
        return Ok(());
    }
    let message = format!(
        "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
    );
    Err(ApiError::invalid(
        &rt.kind,
        &rt.group,
        name,
        vec![Cause::new("metadata.name", "FieldValueInvalid", message)],
    ))
}

/// A decode failure: a missing required field is 422 (the real server's validation
/// catches it), anything else (wrong types) is 400 like its decoder's errors.
fn decode_error(rt: &ResourceType, name: &str, error: &str) -> ApiError {
    if let Some(field) = error
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        return ApiError::invalid(
            &rt.kind,
            &rt.group,
            name,
            vec![Cause::new(field, "FieldValueRequired", "Required value")],
        );
    }
    ApiError::bad_request(format!(
        "{kind} in version \"{version}\" cannot be handled as a {kind}: {error}",
        kind = rt.kind,
        version = rt.version
    ))
}

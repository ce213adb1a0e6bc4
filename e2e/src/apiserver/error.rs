//! API errors, rendered as the `Status` objects a kube-apiserver sends.
//!
//! kube 5 decides what an error means from `reason`, not from the HTTP code (`get_opt`
//! returns `None` only for `reason: NotFound`), so every error carries the exact reason
//! string the real server uses. None of them is 429/503/504: kube retries those by itself.

use serde_json::{Value, json};

/// One failed API call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The machine-readable reason (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message, worded like the real server's.
    pub message: String,
    /// `details` of the Status (name, group, kind, causes), when known.
    pub details: Option<Value>,
}

/// Shorthand for results of API operations.
pub type ApiResult<T> = Result<T, ApiError>;

/// What identifies the object an error is about: `(group, plural, name)`.
pub type Subject<'a> = (&'a str, &'a str, &'a str);

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_subject(mut self, (group, plural, name): Subject<'_>) -> Self {
        self.details = Some(json!({"name": name, "group": group, "kind": plural}));
        self
    }

    /// 404: the object (or its namespace) does not exist.
    pub fn not_found(subject: Subject<'_>) -> Self {
        let message = format!(
            "{} \"{}\" not found",
            resource_label(subject.0, subject.1),
            subject.2
        );
        Self::new(404, "NotFound", message).with_subject(subject)
    }

    /// 404 for a path that names no resource at all.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409: create of a name that is taken.
    pub fn already_exists(subject: Subject<'_>) -> Self {
        let message = format!(
            "{} \"{}\" already exists",
            resource_label(subject.0, subject.1),
            subject.2
        );
        Self::new(409, "AlreadyExists", message).with_subject(subject)
    }

    /// 409: a precondition (resourceVersion, uid) or a field-ownership check failed.
    pub fn conflict(subject: Subject<'_>, why: impl std::fmt::Display) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{}\": {why}",
            resource_label(subject.0, subject.1),
            subject.2
        );
        Self::new(409, "Conflict", message).with_subject(subject)
    }

    /// 409 for server-side apply: other managers own fields this apply would change.
    pub fn apply_conflict(subject: Subject<'_>, conflicts: &[(String, String)]) -> Self {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(manager, field)| format!("conflict with \"{manager}\": {field}"))
            .collect();
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": field})
            })
            .collect();
        let message = format!(
            "Apply failed with {} conflict(s): {}",
            conflicts.len(),
            lines.join("; ")
        );
        let mut err = Self::new(409, "Conflict", message).with_subject(subject);
        if let Some(Value::Object(details)) = &mut err.details {
            details.insert("causes".into(), Value::Array(causes));
        }
        err
    }

    /// 422: the object fails validation. `causes` are `(field, message, reason)`.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let summary: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let message = format!("{qualified} \"{name}\" is invalid: {}", summary.join(", "));
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let mut err = Self::new(422, "Invalid", message);
        err.details = Some(json!({"name": name, "group": group, "kind": kind, "causes": causes}));
        err
    }

    /// 410: the requested resourceVersion is older than the kept history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 415: a patch or body type this resource does not accept.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 405: a verb the resource does not support.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 413: a body over the server's limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    /// 500: a bug in the emulator, reported rather than hidden.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `Status` object the server sends for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Value::Object(map)) = (&self.details, &mut status) {
            map.insert("details".into(), details.clone());
        }
        status
    }
}

/// One reason an object is invalid.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// Dotted path of the offending field (`spec.replicas`).
    pub field: String,
    /// What is wrong, in the real server's words (`Required value`, `Unsupported value: ...`).
    pub message: String,
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueTypeInvalid`, ...
    pub reason: &'static str,
}

impl Cause {
    /// A cause for `field`.
    pub fn new(field: impl Into<String>, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            reason,
        }
    }
}

/// `configmaps` for the core group, `leases.coordination.k8s.io` otherwise, as in messages.
fn resource_label(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_carries_the_reason_kube_reads() {
        let status = ApiError::not_found(("", "configmaps", "x")).to_status();
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        assert_eq!(status["message"], "configmaps \"x\" not found");
    }

    #[test]
    fn invalid_status_lists_every_cause() {
        let err = ApiError::invalid(
            "CacheCluster",
            "kcache.io",
            "demo",
            vec![Cause::new(
                "spec.replicas",
                "FieldValueRequired",
                "Required value",
            )],
        );
        let status = err.to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(status["details"]["causes"][0]["field"], "spec.replicas");
        assert!(
            err.message
                .contains("CacheCluster.kcache.io \"demo\" is invalid")
        );
    }
}

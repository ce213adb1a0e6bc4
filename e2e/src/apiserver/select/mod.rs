//! Label and field selectors, as lists and watches filter by them.

mod field;
mod label;

pub use field::FieldSelector;
pub use label::LabelSelector;

use serde_json::Value;

use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::resources::ResourceType;

/// Both selectors of one request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Selectors {
    /// Parses the query's selectors, refusing (400) grammar errors and fields the kind
    /// does not support, as the real server does.
    pub fn parse(label: Option<&str>, field: Option<&str>, rt: &ResourceType) -> ApiResult<Self> {
        let labels = LabelSelector::parse(label.unwrap_or("")).map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(field.unwrap_or("")).map_err(ApiError::bad_request)?;
        if let Some(unsupported) = fields.fields().find(|f| !rt.supports_field(f)) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {unsupported}"
            )));
        }
        Ok(Self { labels, fields })
    }

    /// Whether a (served-form) object matches both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.labels.matches(labels) && self.fields.matches(obj)
    }
}

//! API errors, answered as Kubernetes `Status` objects with the reasons and
//! messages kubectl knows how to print.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Status, StatusCause, StatusDetails};
use serde_json::Value;

/// One field-level problem, as Kubernetes' `field.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.ports[0].nodePort`.
    pub field: String,
    pub kind: FieldErrorKind,
    /// The offending value, quoted in the message for `Invalid`, `Duplicate`, `NotSupported`.
    pub value: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    Duplicate,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
}

impl FieldErrorKind {
    fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::Duplicate => "FieldValueDuplicate",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::Duplicate => "Duplicate value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
        }
    }
}

impl FieldError {
    pub fn required(field: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Required, value: None, detail: String::new() }
    }

    pub fn invalid(field: impl Into<String>, value: impl ToString, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Invalid, value: Some(value.to_string()), detail: detail.into() }
    }

    pub fn duplicate(field: impl Into<String>, value: impl ToString) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Duplicate, value: Some(value.to_string()), detail: String::new() }
    }

    pub fn not_supported(field: impl Into<String>, value: impl ToString, supported: &[&str]) -> Self {
        let detail = format!("supported values: {}", supported.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "));
        Self { field: field.into(), kind: FieldErrorKind::NotSupported, value: Some(value.to_string()), detail }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), kind: FieldErrorKind::Forbidden, value: None, detail: detail.into() }
    }

    /// A list longer than its limit (`field.TooMany`).
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        let items = if max == 1 { "item" } else { "items" };
        Self {
            field: field.into(),
            kind: FieldErrorKind::TooMany,
            value: Some(actual.to_string()),
            detail: format!("must have at most {max} {items}"),
        }
    }

    /// The cause message without the field: `Invalid value: "x": detail`.
    fn message(&self) -> String {
        let mut msg = self.kind.label().to_string();
        match &self.value {
            // Go prints the count as a plain number, not a quoted string.
            Some(v) if self.kind == FieldErrorKind::TooMany => msg.push_str(&format!(": {v}")),
            Some(v) => msg.push_str(&format!(": \"{v}\"")),
            None => {}
        }
        if !self.detail.is_empty() {
            msg.push_str(": ");
            msg.push_str(&self.detail);
        }
        msg
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

/// An error answered to an API client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    pub code: u16,
    /// Kubernetes' `StatusReason`, e.g. `NotFound`.
    pub reason: &'static str,
    pub message: String,
    /// Boxed: keeps `Result<_, ApiError>` small on every handler's return path.
    pub details: Option<Box<StatusDetails>>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details = Some(Box::new(StatusDetails {
            group: Some(group.to_string()).filter(|g| !g.is_empty()),
            kind: Some(kind.to_string()),
            name: Some(name.to_string()).filter(|n| !n.is_empty()),
            ..Default::default()
        }));
        self
    }

    /// `pods "x" not found`; `plural` may carry a group (`deployments.apps`).
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(group, plural))).with_details(group, plural, name)
    }

    /// A URL that names nothing we serve.
    pub fn path_not_found(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find the requested resource ({path})"))
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(group, plural))).with_details(group, plural, name)
    }

    /// A write based on a stale object (409).
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{name}\": {why}", qualified(group, plural)))
            .with_details(group, plural, name)
    }

    /// 422 with every field problem in `details.causes`.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: Vec<FieldError>) -> Self {
        let list = if errors.len() == 1 {
            errors[0].to_string()
        } else {
            format!("[{}]", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
        };
        let mut err =
            Self::new(422, "Invalid", format!("{kind}{} \"{name}\" is invalid: {list}", dot_group(group))).with_details(group, kind, name);
        if let Some(d) = err.details.as_mut() {
            d.causes = Some(
                errors
                    .iter()
                    .map(|e| StatusCause {
                        field: Some(e.field.clone()),
                        message: Some(e.message()),
                        reason: Some(e.kind.reason().to_string()),
                    })
                    .collect(),
            );
        }
        err
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// The requested resourceVersion is older than the history kept (410).
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` object sent as the response body.
    pub fn to_status(&self) -> Status {
        Status {
            code: Some(i32::from(self.code)),
            details: self.details.as_deref().cloned(),
            message: Some(self.message.clone()),
            metadata: ListMeta::default(),
            reason: Some(self.reason.to_string()),
            status: Some("Failure".to_string()),
        }
    }

    /// The `Status` as JSON, with the `kind`/`apiVersion` header clients expect.
    pub fn to_json(&self) -> Value {
        status_json(self.to_status())
    }
}

/// A successful `Status` (as returned by some deletes).
pub fn success_status(details: Option<StatusDetails>) -> Value {
    status_json(Status { status: Some("Success".into()), details, ..Default::default() })
}

fn status_json(status: Status) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("kind".into(), "Status".into());
        m.insert("apiVersion".into(), "v1".into());
        m.entry("metadata").or_insert_with(|| Value::Object(Default::default()));
    }
    v
}

fn qualified(group: &str, plural: &str) -> String {
    format!("{plural}{}", dot_group(group))
}

fn dot_group(group: &str) -> String {
    if group.is_empty() { String::new() } else { format!(".{group}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_matches_kubernetes_wording() {
        let err = ApiError::invalid("", "Pod", "bad", vec![FieldError::required("spec.containers")]);
        assert_eq!(err.message, "Pod \"bad\" is invalid: spec.containers: Required value");
        let json = err.to_json();
        assert_eq!(json["kind"], "Status");
        assert_eq!(json["code"], 422);
        assert_eq!(json["details"]["causes"][0]["field"], "spec.containers");
        assert_eq!(json["details"]["causes"][0]["reason"], "FieldValueRequired");
    }

    #[test]
    fn group_is_part_of_the_qualified_resource() {
        let err = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(err.message, "deployments.apps \"web\" not found");
        assert_eq!(err.to_json()["details"]["group"], "apps");
    }
}

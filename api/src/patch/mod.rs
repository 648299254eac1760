//! The four patch types kubectl sends, applied as the Kubernetes API server
//! applies them: JSON patch (RFC 6902), merge patch (RFC 7386), strategic
//! merge patch, and server-side apply with `metadata.managedFields`
//! bookkeeping (which non-apply writes also need, through [`record_update`]).

mod apply;
mod fieldpath;
mod schema;
mod strategic;

pub use apply::{ApplyConflict, ApplyError, conflict_message, record_update, server_side_apply};
pub use strategic::strategic_merge_patch;

use serde_json::Value;

use crate::status::ApiError;

/// Kubernetes refuses JSON patches with more operations than this
/// (`maxJSONPatchOperations`), so one request cannot make the server spin.
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchType {
    /// From the request `Content-Type`, ignoring parameters such as
    /// `; charset=utf-8`: `application/json-patch+json`,
    /// `application/merge-patch+json`, `application/strategic-merge-patch+json`,
    /// `application/apply-patch+yaml` (or `+json`).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let media = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        Some(match media.as_str() {
            "application/json-patch+json" => Self::Json,
            "application/merge-patch+json" => Self::Merge,
            "application/strategic-merge-patch+json" => Self::StrategicMerge,
            "application/apply-patch+yaml" | "application/apply-patch+json" => Self::Apply,
            _ => return None,
        })
    }

    /// The media type as Kubernetes names it.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json-patch+json",
            Self::Merge => "application/merge-patch+json",
            Self::StrategicMerge => "application/strategic-merge-patch+json",
            Self::Apply => "application/apply-patch+yaml",
        }
    }
}

/// RFC 6902 JSON patch, atomically: on failure nothing is applied.
///
/// Errors follow Kubernetes' `jsonPatcher`: a patch document that does not
/// decode is the client's malformed request (400 BadRequest); more than
/// 10000 operations is 413; an operation that cannot apply to this object
/// (a failed `test`, a path that does not exist) is 422 Invalid, because the
/// request was well-formed but is not valid against the current object.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, ApiError> {
    let ops: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    if ops.0.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::too_large(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            ops.0.len()
        )));
    }
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops.0).map_err(|e| invalid(e.to_string()))?;
    Ok(doc)
}

/// RFC 7386 merge patch: objects merge recursively, `null` deletes, anything
/// else (lists included) replaces.
pub fn merge_patch(original: &Value, patch: &Value) -> Value {
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

/// A 422 Invalid not tied to one field, as Kubernetes answers a patch that
/// does not apply.
fn invalid(message: String) -> ApiError {
    ApiError { code: 422, reason: "Invalid", message, details: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_type_ignores_parameters_and_case() {
        assert_eq!(PatchType::from_content_type("application/json-patch+json"), Some(PatchType::Json));
        assert_eq!(PatchType::from_content_type("application/merge-patch+json; charset=utf-8"), Some(PatchType::Merge));
        assert_eq!(PatchType::from_content_type("Application/Strategic-Merge-Patch+JSON"), Some(PatchType::StrategicMerge));
        assert_eq!(PatchType::from_content_type("application/apply-patch+yaml"), Some(PatchType::Apply));
        assert_eq!(PatchType::from_content_type("application/apply-patch+json"), Some(PatchType::Apply));
        assert_eq!(PatchType::from_content_type("application/json"), None);
        for t in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge, PatchType::Apply] {
            assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
        }
    }

    #[test]
    fn json_patch_applies_operations_in_order() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
        let patch = json!([
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"}
        ]);
        assert_eq!(json_patch(&doc, &patch).unwrap(), json!({"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": 3}}));
    }

    #[test]
    fn json_patch_failed_test_is_invalid_and_malformed_is_bad_request() {
        let doc = json!({"spec": {"replicas": 1}});
        let e = json_patch(&doc, &json!([{"op": "test", "path": "/spec/replicas", "value": 2}])).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        let e = json_patch(&doc, &json!([{"op": "remove", "path": "/spec/nope"}])).unwrap_err();
        assert_eq!(e.code, 422);
        let e = json_patch(&doc, &json!({"op": "add"})).unwrap_err();
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        let e = json_patch(&doc, &json!([{"op": "frobnicate", "path": "/x"}])).unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn json_patch_rejects_too_many_operations() {
        let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS).map(|_| json!({"op": "test", "path": "", "value": {}})).collect();
        assert_eq!(json_patch(&json!({}), &Value::Array(ops)).unwrap_err().code, 413);
    }

    #[test]
    fn merge_patch_replaces_lists_and_null_deletes() {
        let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "a", "ports": [1]}]}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        assert_eq!(
            merge_patch(&doc, &patch),
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}})
        );
    }
}

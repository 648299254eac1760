//! Objects as the API server handles them: JSON values whose
//! `metadata.resourceVersion` is the store revision that last wrote them.
//! The stored bytes leave the resourceVersion out (it is the key's
//! `mod_revision`), as Kubernetes' etcd3 storage does.

use crate::store::{KeyValue, Revision, StoreError};
use bytes::Bytes;
use hawser_api::ApiError;
use serde_json::{Map, Value};

pub fn encode(obj: &Value) -> Bytes {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    Bytes::from(serde_json::to_vec(&obj).expect("a JSON value always serializes"))
}

pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    decode_at(&kv.key, &kv.value, kv.mod_revision)
}

pub fn decode_at(key: &str, bytes: &[u8], revision: Revision) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::internal(format!("stored object {key} is not JSON: {e}")))?;
    set_resource_version(&mut obj, revision);
    Ok(obj)
}

pub fn set_resource_version(obj: &mut Value, revision: Revision) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(revision.to_string()));
}

pub fn meta(obj: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    obj.get("metadata").and_then(Value::as_object).unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

/// `metadata`, created as an empty object when missing or not an object.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("just made an object");
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("just made an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or_default()
}

pub fn resource_version(obj: &Value) -> Option<Revision> {
    meta_str(obj, "resourceVersion").and_then(|rv| rv.parse().ok())
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Now, as Kubernetes writes `metav1.Time` (seconds precision, UTC).
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Maps store failures that are not the caller's fault.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Compacted { requested, oldest } => ApiError::gone(format!("too old resource version: {requested} ({oldest})")),
        other => ApiError::internal(other.to_string()),
    }
}

/// A resourceVersion from a client, which must be a store revision.
pub fn parse_resource_version(rv: &str) -> Result<Revision, ApiError> {
    rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

//! Decoding a JSON object into its k8s-openapi type: type errors worded as
//! Kubernetes words them, the paths of fields the type does not know (for
//! `fieldValidation`), and the typed round-trip that drops them.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::quantity::{self, Quantity};
use crate::resources::ResourceInfo;
use crate::status::ApiError;

fn cannot_handle(info: &ResourceInfo) -> String {
    format!("{kind} in version \"{version}\" cannot be handled as a {kind}: ", kind = info.kind, version = info.version)
}

/// The JSON value at a serde path, to name its JSON type as Go does.
fn value_at<'a>(root: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    let mut v = root;
    for seg in path.iter() {
        v = match seg {
            Segment::Seq { index } => v.get(*index)?,
            Segment::Map { key } => v.get(key.as_str())?,
            Segment::Enum { .. } | Segment::Unknown => return Some(v),
        };
    }
    Some(v)
}

fn go_json_type(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) if n.is_f64() => format!("number {n}"),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

/// serde's "expected ..." phrase as the Go type Kubernetes would name.
fn go_type(expected: &str) -> String {
    match expected {
        "i32" => "int32".into(),
        "i64" => "int64".into(),
        "u32" => "uint32".into(),
        "u64" => "uint64".into(),
        "f64" => "float64".into(),
        "a boolean" => "bool".into(),
        "a string" => "string".into(),
        "a sequence" => "array".into(),
        "a map" => "map[string]string".into(),
        other => other.strip_prefix("struct ").unwrap_or(other).to_string(),
    }
}

fn type_error(info: &ResourceInfo, obj: &Value, err: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = err.inner().to_string();
    let path = err.path().to_string();
    let prefix = cannot_handle(info);
    if let Some(rest) = inner.strip_prefix("invalid type: ")
        && let Some((_, expected)) = rest.rsplit_once(", expected ")
    {
        let got = value_at(obj, err.path()).map_or_else(|| "value".into(), go_json_type);
        return ApiError::bad_request(format!(
            "{prefix}json: cannot unmarshal {got} into Go struct field {}.{path} of type {}",
            info.kind,
            go_type(expected)
        ));
    }
    if path == "." {
        ApiError::bad_request(format!("{prefix}{inner}"))
    } else {
        ApiError::bad_request(format!("{prefix}json: error decoding field {}.{path}: {inner}", info.kind))
    }
}

/// Deserializes `obj` as `T`, mapping failures to Kubernetes' BadRequest.
pub(crate) fn typed<T: DeserializeOwned>(info: &ResourceInfo, obj: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize::<_, T>(obj).map_err(|e| type_error(info, obj, &e))
}

/// Paths (from the object root) under which values are resource quantities;
/// `*` stands for every array element or map value.
fn quantity_patterns(kind: &str) -> Vec<Vec<&'static str>> {
    const POD_SPEC_SUFFIXES: &[&[&str]] = &[
        &["overhead", "*"],
        &["resources", "limits", "*"],
        &["resources", "requests", "*"],
        &["volumes", "*", "emptyDir", "sizeLimit"],
        &["volumes", "*", "ephemeral", "volumeClaimTemplate", "spec", "resources", "limits", "*"],
        &["volumes", "*", "ephemeral", "volumeClaimTemplate", "spec", "resources", "requests", "*"],
        &["volumes", "*", "downwardAPI", "items", "*", "resourceFieldRef", "divisor"],
        &["volumes", "*", "projected", "sources", "*", "downwardAPI", "items", "*", "resourceFieldRef", "divisor"],
    ];
    const CONTAINER_SUFFIXES: &[&[&str]] =
        &[&["resources", "limits", "*"], &["resources", "requests", "*"], &["env", "*", "valueFrom", "resourceFieldRef", "divisor"]];
    const STATUS_SUFFIXES: &[&[&str]] = &[&["allocatedResources", "*"], &["resources", "limits", "*"], &["resources", "requests", "*"]];

    let pod_spec = |prefix: &[&'static str]| {
        let mut out = Vec::new();
        for suffix in POD_SPEC_SUFFIXES {
            out.push([prefix, suffix].concat());
        }
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            for suffix in CONTAINER_SUFFIXES {
                out.push([prefix, &[list, "*"], suffix].concat());
            }
        }
        out
    };
    match kind {
        "Pod" => {
            let mut out = pod_spec(&["spec"]);
            for list in ["containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"] {
                for suffix in STATUS_SUFFIXES {
                    out.push([&["status", list, "*"], *suffix].concat());
                }
            }
            out
        }
        "ReplicationController" | "ReplicaSet" | "Deployment" => pod_spec(&["spec", "template", "spec"]),
        "Node" => vec![vec!["status", "capacity", "*"], vec!["status", "allocatable", "*"]],
        _ => Vec::new(),
    }
}

fn visit<'a>(v: &'a Value, pattern: &[&str], out: &mut Vec<&'a Value>) {
    match pattern.split_first() {
        None => out.push(v),
        Some((&"*", rest)) => match v {
            Value::Array(a) => a.iter().for_each(|x| visit(x, rest, out)),
            Value::Object(m) => m.values().for_each(|x| visit(x, rest, out)),
            _ => {}
        },
        Some((key, rest)) => {
            if let Some(x) = v.get(*key) {
                visit(x, rest, out);
            }
        }
    }
}

fn visit_mut(v: &mut Value, pattern: &[&str], f: &mut impl FnMut(&mut Value)) {
    match pattern.split_first() {
        None => f(v),
        Some((&"*", rest)) => match v {
            Value::Array(a) => a.iter_mut().for_each(|x| visit_mut(x, rest, f)),
            Value::Object(m) => m.values_mut().for_each(|x| visit_mut(x, rest, f)),
            _ => {}
        },
        Some((key, rest)) => {
            if let Some(x) = v.get_mut(*key) {
                visit_mut(x, rest, f);
            }
        }
    }
}

/// The text Go's `Quantity.UnmarshalJSON` parses: a string's contents or a
/// number's literal.
fn quantity_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Kubernetes rejects a malformed quantity while decoding, before validation.
fn check_quantities(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    for pattern in quantity_patterns(info.kind) {
        let mut found = Vec::new();
        visit(obj, &pattern, &mut found);
        for v in found {
            if let Some(text) = quantity_text(v)
                && Quantity::parse(&text).is_err()
            {
                return Err(ApiError::bad_request(format!("{}{}", cannot_handle(info), quantity::FORMAT_ERROR)));
            }
        }
    }
    Ok(())
}

/// Rewrites every quantity in canonical form, as Kubernetes serializes them.
pub(crate) fn canonicalize_quantities(kind: &str, obj: &mut Value) {
    for pattern in quantity_patterns(kind) {
        visit_mut(obj, &pattern, &mut |v| {
            if let Some(q) = quantity_text(v).and_then(|t| Quantity::parse(&t).ok()) {
                *v = Value::String(q.canonical());
            }
        });
    }
}

/// Collects the paths present in `input` but absent from the typed
/// re-serialization `typed`, i.e. the fields the type does not know.
///
/// A key whose value is `null` is skipped: null is how JSON says "unset", and
/// a known optional field set to null also vanishes on re-serialization.
fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match t.get(k) {
                    Some(tv) => unknown_fields(v, tv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t).enumerate() {
                unknown_fields(iv, tv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

pub(crate) fn decode_as<T: DeserializeOwned + Serialize>(info: &ResourceInfo, obj: &Value) -> Result<Vec<String>, ApiError> {
    let t: T = typed(info, obj)?;
    check_quantities(info, obj)?;
    let back = serde_json::to_value(&t).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut unknown = Vec::new();
    unknown_fields(obj, &back, "", &mut unknown);
    Ok(unknown)
}

/// The typed round-trip of `obj` with quantities in canonical form.
pub(crate) fn roundtrip<T: DeserializeOwned + Serialize>(
    info: &ResourceInfo,
    obj: &Value,
    fix: impl FnOnce(&mut T),
) -> Result<Value, ApiError> {
    let mut t: T = typed(info, obj)?;
    check_quantities(info, obj)?;
    fix(&mut t);
    let mut v = serde_json::to_value(&t).map_err(|e| ApiError::internal(e.to_string()))?;
    canonicalize_quantities(info.kind, &mut v);
    Ok(v)
}

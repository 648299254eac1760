//! Decoding, defaulting and validation of every served kind, as Kubernetes
//! does them, so clients see the same objects and the same errors.
//!
//! The API server keeps objects as JSON and, for each write, calls:
//! 1. [`decode`] — type errors become a 400; unknown field paths come back
//!    for `fieldValidation=Strict|Warn|Ignore`;
//! 2. [`normalize`] — the typed round-trip: unknown fields dropped,
//!    quantities in canonical form, Secret `stringData` folded into `data`;
//! 3. [`apply_defaults`] — what Kubernetes' defaulters (and the admission
//!    plugins every cluster runs) fill in;
//! 4. [`validate`] — every field problem, with Kubernetes' paths and wording.
//!
//! [`field_value`] answers field selectors.
//!
//! # Layout
//! - `names`: DNS names, qualified names, label values, ports, IPs;
//! - `quantity`: resource quantities;
//! - `meta`: `metadata`, labels, annotations, label selectors;
//! - `pod`, `service`, `workloads` (RC, ReplicaSet, Deployment), `misc`
//!   (Namespace, ConfigMap, Secret, Node, Event, Lease, Endpoints),
//!   `discovery` (EndpointSlice);
//! - `decode`: typed decoding and the round-trip; `fields`: field selectors.

// `ApiError` is the crate's error type and the server's contract for these
// functions; it is built once per failed request, so its size does not matter.

mod decode;
mod discovery;
mod fields;
mod meta;
mod misc;
mod names;
mod path;
mod pod;
mod service;
mod workloads;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Namespace, Node, Pod, ReplicationController, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::resources::ResourceInfo;
use crate::status::{ApiError, FieldError};
use path::Path;

/// Runs `$body` with `$T` bound to the k8s-openapi type of `$kind`.
macro_rules! with_type {
    ($kind:expr, $T:ident => $body:expr, _ => $fallback:expr) => {
        match $kind {
            "Namespace" => {
                type $T = Namespace;
                $body
            }
            "Pod" => {
                type $T = Pod;
                $body
            }
            "Service" => {
                type $T = Service;
                $body
            }
            "Endpoints" => {
                type $T = Endpoints;
                $body
            }
            "ReplicationController" => {
                type $T = ReplicationController;
                $body
            }
            "Node" => {
                type $T = Node;
                $body
            }
            "Event" => {
                type $T = Event;
                $body
            }
            "ConfigMap" => {
                type $T = ConfigMap;
                $body
            }
            "Secret" => {
                type $T = Secret;
                $body
            }
            "ReplicaSet" => {
                type $T = ReplicaSet;
                $body
            }
            "Deployment" => {
                type $T = Deployment;
                $body
            }
            "Lease" => {
                type $T = Lease;
                $body
            }
            "EndpointSlice" => {
                type $T = EndpointSlice;
                $body
            }
            _ => $fallback,
        }
    };
}

/// Sets a string field Kubernetes defaults. Go cannot tell an unset string
/// from an empty one, so an explicit `""` is defaulted too.
pub(crate) fn set_if_empty(field: &mut Option<String>, value: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(value.to_string());
    }
}

fn unknown_kind(info: &ResourceInfo) -> ApiError {
    ApiError::bad_request(format!("no kind \"{}\" is registered for version \"{}\"", info.kind, info.api_version()))
}

/// Decodes `obj` into the k8s-openapi type of `info.kind` to check types.
/// Returns the JSON paths of fields the type does not know (e.g.
/// `spec.containers[0].imagePullPolizy`), or a BadRequest naming the field
/// whose value has the wrong type or is a malformed quantity.
///
/// `null` values are not reported as unknown: they cannot be told apart from
/// a known optional field left unset.
pub fn decode(info: &ResourceInfo, obj: &Value) -> Result<Vec<String>, ApiError> {
    with_type!(info.kind, T => decode::decode_as::<T>(info, obj), _ => Err(unknown_kind(info)))
}

/// Replaces `obj` with the typed round-trip: unknown fields dropped, as
/// Kubernetes drops them; quantities in canonical form (`0.5` → `500m`);
/// a Secret's `stringData` merged into `data`.
pub fn normalize(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let value = if info.kind == "Secret" {
        decode::roundtrip::<Secret>(info, obj, misc::merge_string_data)?
    } else {
        with_type!(info.kind, T => decode::roundtrip::<T>(info, obj, |_| {})?, _ => return Err(unknown_kind(info)))
    };
    *obj = value;
    Ok(())
}

/// Applies `f` to the typed form of `obj` and writes it back. An object that
/// does not decode is left alone: [`decode`] reports why.
fn typed_mut<T: DeserializeOwned + Serialize>(obj: &mut Value, f: impl FnOnce(&mut T)) {
    if let Ok(mut t) = serde_json::from_value::<T>(obj.clone()) {
        f(&mut t);
        if let Ok(v) = serde_json::to_value(&t) {
            *obj = v;
        }
    }
}

/// Fills the defaults Kubernetes' defaulters set, so `kubectl get -o yaml`
/// shows what real Kubernetes shows. Also applies what every cluster's
/// admission chain adds to pods (priority; tolerations: [`admit_new_pod`]) and the
/// status a new Pod, Namespace or Service starts with. The service account
/// (`default`) is not set: that is the ServiceAccount admission plugin's job.
///
/// Expects a normalized object; unknown fields do not survive.
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    match info.kind {
        "Pod" => typed_mut(obj, pod::default_pod),
        "Service" => typed_mut(obj, service::default_service),
        "ReplicationController" => typed_mut(obj, workloads::default_replication_controller),
        "ReplicaSet" => typed_mut(obj, workloads::default_replica_set),
        "Deployment" => typed_mut(obj, workloads::default_deployment),
        "Namespace" => typed_mut(obj, misc::default_namespace),
        "Secret" => typed_mut(obj, misc::default_secret),
        "Node" => typed_mut(obj, misc::default_node),
        "Endpoints" => typed_mut(obj, misc::default_endpoints),
        "EndpointSlice" => typed_mut(obj, discovery::default_endpoint_slice),
        _ => {}
    }
}

/// The admission step that depends on the server's flags: a new pod gets
/// tolerations for the not-ready and unreachable taints lasting
/// `default_toleration_seconds` (`--default-unreachable-toleration-seconds`).
pub fn admit_new_pod(obj: &mut Value, default_toleration_seconds: i64) {
    typed_mut(obj, |pod| pod::add_default_tolerations(pod, default_toleration_seconds));
}

/// Decodes for validation; a type error becomes the one field error.
fn parse<T: DeserializeOwned>(obj: &Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize::<_, T>(obj).map_err(|e| {
        let path = e.path().to_string();
        FieldError::invalid(if path == "." { String::new() } else { path }, "", e.inner().to_string())
    })
}

fn with_old<T: DeserializeOwned>(obj: &Value, old: Option<&Value>, f: impl FnOnce(&T, Option<&T>) -> Vec<FieldError>) -> Vec<FieldError> {
    match parse::<T>(obj) {
        Ok(new) => {
            // A stored object that no longer decodes cannot constrain the update.
            let old = old.and_then(|o| serde_json::from_value::<T>(o.clone()).ok());
            f(&new, old.as_ref())
        }
        Err(e) => vec![e],
    }
}

/// All field problems, with paths as Kubernetes names them. `old` is
/// `Some(previous object)` on update, for the fields that may not change.
///
/// The server is expected to have done what Kubernetes' registry does before
/// validating: fill `metadata.name` from `generateName`, set
/// `metadata.namespace` from the request, clear it for cluster-scoped kinds,
/// and on update carry over system fields (uid, creationTimestamp,
/// resourceVersion) and allocated ones (clusterIP, nodePorts) left unset.
pub fn validate(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = match info.kind {
        "Pod" => with_old::<Pod>(obj, old, |new, old| match old {
            Some(o) => pod::validate_pod_update(new, o),
            None => pod::validate_pod_create(new),
        }),
        "Service" => with_old::<Service>(obj, old, |new, old| match old {
            Some(o) => service::validate_service_update(new, o),
            None => service::validate_service(new),
        }),
        "ReplicationController" => with_old(obj, old, workloads::validate_replication_controller),
        "ReplicaSet" => with_old(obj, old, workloads::validate_replica_set),
        "Deployment" => with_old(obj, old, workloads::validate_deployment),
        "Namespace" => with_old(obj, old, misc::validate_namespace),
        "ConfigMap" => with_old(obj, old, misc::validate_config_map),
        "Secret" => with_old(obj, old, misc::validate_secret),
        "Node" => with_old(obj, old, misc::validate_node),
        "Event" => with_old::<Event>(obj, old, |new, _| misc::validate_event(new)),
        "Lease" => with_old(obj, old, misc::validate_lease),
        "Endpoints" => with_old(obj, old, misc::validate_endpoints),
        "EndpointSlice" => with_old(obj, old, discovery::validate_endpoint_slice),
        _ => Vec::new(),
    };
    // Kubernetes' generic checks run after the kind's, on create, and only
    // when those passed, so the specific messages come first.
    if errs.is_empty() && old.is_none() {
        let meta: ObjectMeta = obj.get("metadata").and_then(|m| serde_json::from_value(m.clone()).ok()).unwrap_or_default();
        errs = meta::validate_path_segment_meta(&meta, &Path::new("metadata"));
    }
    errs
}

/// The value of a field-selector field for this kind, or `None` when the
/// kind does not support that field (the server answers 400 `field label
/// not supported: X`). Unset fields read as Go's zero value: `""`, `false`
/// or `0`.
pub fn field_value(info: &ResourceInfo, obj: &Value, field: &str) -> Option<String> {
    fields::field_value(info, obj, field)
}

#[cfg(test)]
mod tests;

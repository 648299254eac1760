//! The fields each kind offers to field selectors, valued as Kubernetes
//! values them (`*ToSelectableFields` in each registry strategy): strings as
//! they are, booleans and counts as Go prints their zero values, so
//! `spec.unschedulable=false` matches a node that never set the field.

use serde_json::Value;

use crate::resources::ResourceInfo;

fn str_at(obj: &Value, path: &[&str]) -> String {
    path.iter().try_fold(obj, |v, k| v.get(*k)).and_then(Value::as_str).unwrap_or("").to_string()
}

fn bool_at(obj: &Value, path: &[&str]) -> String {
    path.iter().try_fold(obj, |v, k| v.get(*k)).and_then(Value::as_bool).unwrap_or(false).to_string()
}

fn int_at(obj: &Value, path: &[&str]) -> String {
    path.iter().try_fold(obj, |v, k| v.get(*k)).and_then(Value::as_i64).unwrap_or(0).to_string()
}

pub(crate) fn field_value(info: &ResourceInfo, obj: &Value, field: &str) -> Option<String> {
    match field {
        "metadata.name" => return Some(str_at(obj, &["metadata", "name"])),
        // Cluster-scoped kinds have no namespace field to select on.
        "metadata.namespace" if info.namespaced => return Some(str_at(obj, &["metadata", "namespace"])),
        _ => {}
    }
    let value = match (info.kind, field) {
        ("Pod", "spec.nodeName") => str_at(obj, &["spec", "nodeName"]),
        ("Pod", "spec.restartPolicy") => str_at(obj, &["spec", "restartPolicy"]),
        ("Pod", "spec.schedulerName") => str_at(obj, &["spec", "schedulerName"]),
        ("Pod", "spec.serviceAccountName") => str_at(obj, &["spec", "serviceAccountName"]),
        ("Pod", "spec.hostNetwork") => bool_at(obj, &["spec", "hostNetwork"]),
        ("Pod", "status.phase") => str_at(obj, &["status", "phase"]),
        ("Pod", "status.podIP") => {
            // Kubernetes reads the first of `podIPs`; `podIP` mirrors it.
            let first = obj.pointer("/status/podIPs/0/ip").and_then(Value::as_str);
            first.map_or_else(|| str_at(obj, &["status", "podIP"]), str::to_string)
        }
        ("Pod", "status.nominatedNodeName") => str_at(obj, &["status", "nominatedNodeName"]),
        ("Event", f) => match f {
            "involvedObject.kind"
            | "involvedObject.namespace"
            | "involvedObject.name"
            | "involvedObject.uid"
            | "involvedObject.apiVersion"
            | "involvedObject.resourceVersion"
            | "involvedObject.fieldPath" => {
                let (head, tail) = f.split_once('.').unwrap_or((f, ""));
                str_at(obj, &[head, tail])
            }
            "reason" | "type" => str_at(obj, &[f]),
            "reportingComponent" => str_at(obj, &["reportingComponent"]),
            // The component that reported it, old-style or new-style.
            "source" => Some(str_at(obj, &["source", "component"]))
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| str_at(obj, &["reportingComponent"])),
            _ => return None,
        },
        ("Secret", "type") => str_at(obj, &["type"]),
        ("Namespace", "status.phase") => str_at(obj, &["status", "phase"]),
        // Kept by Kubernetes for backward compatibility.
        ("Namespace", "name") => str_at(obj, &["metadata", "name"]),
        ("Node", "spec.unschedulable") => bool_at(obj, &["spec", "unschedulable"]),
        ("ReplicationController" | "ReplicaSet", "status.replicas") => int_at(obj, &["status", "replicas"]),
        _ => return None,
    };
    Some(value)
}

//! Small facts about objects that several loops ask.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use std::time::Duration;

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// An owner reference making `owner` the controller of a dependent, as the
/// workload controllers set it (`blockOwnerDeletion` so foreground deletion
/// waits for the dependent).
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A reference to `obj` for an Event's `involvedObject` or a binding.
pub fn object_reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

/// Kubernetes' `Toleration.ToleratesTaint`: an empty effect matches every
/// effect, an empty key (with `Exists`) every key, and `Equal` (the default
/// operator) needs the same value. The scheduler and the taint eviction both
/// ask it.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "Exists" => true,
        "" | "Equal" => toleration.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        _ => false,
    }
}

/// Now, to the second, as Kubernetes stores timestamps.
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).expect("the current time is a valid timestamp"))
}

/// Seconds since `t` (negative when in the future).
pub fn age(t: &Time) -> Duration {
    let secs = Timestamp::now().as_second() - t.0.as_second();
    Duration::from_secs(secs.max(0) as u64)
}

/// Not finished and not being deleted: a pod that counts toward a replica set
/// (Kubernetes' `FilterActivePods`).
pub fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Finished (Succeeded or Failed): holds no resources on its node.
pub fn is_pod_terminated(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// The pod's `Ready` condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

/// Ready for at least `min_ready_seconds` (Kubernetes' `IsPodAvailable`).
/// When not yet, also returns how long until it will be.
pub fn pod_availability(pod: &Pod, min_ready_seconds: i32) -> Availability {
    let Some(c) = ready_condition(pod).filter(|c| c.status == "True") else {
        return Availability::NotReady;
    };
    if min_ready_seconds <= 0 {
        return Availability::Available;
    }
    let min = Duration::from_secs(min_ready_seconds as u64);
    match &c.last_transition_time {
        Some(t) if age(t) >= min => Availability::Available,
        Some(t) => Availability::ReadyFor { remaining: min - age(t) },
        None => Availability::Available,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    NotReady,
    /// Ready, but not yet for `minReadySeconds`.
    ReadyFor {
        remaining: Duration,
    },
    Available,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let ready_at = |secs_ago: i64| {
            let t = Timestamp::from_second(Timestamp::now().as_second() - secs_ago).unwrap();
            pod(serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t.to_string()}]}}))
        };
        assert_eq!(pod_availability(&ready_at(0), 0), Availability::Available);
        assert!(matches!(pod_availability(&ready_at(2), 10), Availability::ReadyFor { remaining } if remaining.as_secs() == 8));
        assert_eq!(pod_availability(&ready_at(11), 10), Availability::Available);
        assert_eq!(pod_availability(&pod(serde_json::json!({})), 0), Availability::NotReady);
    }

    #[test]
    fn terminating_and_finished_pods_are_not_active() {
        assert!(is_pod_active(&pod(serde_json::json!({"status": {"phase": "Running"}}))));
        assert!(!is_pod_active(&pod(serde_json::json!({"status": {"phase": "Failed"}}))));
        assert!(!is_pod_active(&pod(serde_json::json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}))));
    }
}

//! Subresources with their own shape: `scale` (autoscaling/v1 Scale over a
//! workload's replicas), `pods/binding` (the scheduler's write) and
//! `pods/log`. The `status` subresource is the generic update with the
//! status rules in `rest`.

use super::objects::{self, meta};
use super::request::{Query, Target};
use super::{Api, Reply, node_proxy};
use bytes::Bytes;
use futures::stream::BoxStream;
use hawser_api::patch::{self, PatchType};
use hawser_api::selector::LabelSelector;
use hawser_api::{ApiError, FieldError};
use serde_json::{Value, json};
use std::sync::Arc;

/// The Scale view of a workload.
fn scale_of(obj: &Value) -> Value {
    let selector = match &obj["spec"]["selector"] {
        // core/v1 ReplicationController: a plain map.
        Value::Object(m) if !m.contains_key("matchLabels") && !m.contains_key("matchExpressions") => {
            let map = m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
            LabelSelector::from_map(&map).to_string()
        }
        sel => serde_json::from_value(sel.clone())
            .ok()
            .and_then(|s| LabelSelector::from_object(&s).ok())
            .map(|s| s.to_string())
            .unwrap_or_default(),
    };
    let m = meta(obj);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

pub async fn get_scale(api: &Arc<Api>, t: &Target) -> Result<Reply, ApiError> {
    let (obj, _) = api.read(t.info, t.namespace.as_deref(), t.name()?).await?;
    Ok(Reply::ok(scale_of(&obj)))
}

/// PUT or PATCH of a Scale: the new `spec.replicas` goes to the workload.
pub async fn write_scale(api: &Arc<Api>, t: &Target, q: &Query, patch_type: Option<PatchType>, body: &[u8]) -> Result<Reply, ApiError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
    let name = t.name()?.to_string();
    let parent = Target { subresource: None, ..t.clone() };
    let manager = q.get("fieldManager").unwrap_or("unknown").to_string();
    let api_version = t.info.api_version();
    let pinned = match patch_type {
        None => doc["metadata"]["resourceVersion"].as_str().map(objects::parse_resource_version).transpose()?,
        Some(_) => None,
    };
    let updated = api
        .guaranteed_update(&parent, pinned, q.dry_run()?, |old| {
            let current = scale_of(old);
            let scale = match patch_type {
                None => doc.clone(),
                Some(PatchType::Json) => patch::json_patch(&current, &doc)?,
                Some(PatchType::Merge) => patch::merge_patch(&current, &doc),
                Some(PatchType::StrategicMerge) => patch::strategic_merge_patch(&current, &doc, "Scale")?,
                Some(PatchType::Apply) => return Err(ApiError::unsupported_media_type("application/apply-patch+yaml")),
            };
            let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    &name,
                    vec![FieldError::invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
                ));
            }
            let mut new = old.clone();
            new["spec"]["replicas"] = json!(replicas);
            let generation = meta(old).get("generation").and_then(Value::as_i64).unwrap_or(1);
            if new != *old {
                new["metadata"]["generation"] = json!(generation + 1);
            }
            patch::record_update(Some(old), &mut new, &manager, &api_version, &objects::now());
            Ok(new)
        })
        .await?;
    Ok(Reply::ok(scale_of(&updated)))
}

/// POST pods/<name>/binding: assigns the pod to a node, once.
pub async fn bind(api: &Arc<Api>, t: &Target, q: &Query, body: &[u8]) -> Result<Reply, ApiError> {
    let binding: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding Binding: {e}")))?;
    let name = t.name()?.to_string();
    let node = binding["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::invalid("", "Binding", &name, vec![FieldError::required("target.name")]))?;
    if binding["target"]["kind"].as_str().is_some_and(|k| !k.is_empty() && k != "Node") {
        return Err(ApiError::invalid(
            "",
            "Binding",
            &name,
            vec![FieldError::not_supported("target.kind", &binding["target"]["kind"], &["Node"])],
        ));
    }
    let pod = Target { subresource: None, ..t.clone() };
    api.guaranteed_update(&pod, None, q.dry_run()?, |old| {
        if meta(old).contains_key("deletionTimestamp") {
            return Err(ApiError::conflict("", "pods", &name, "pod is being deleted, cannot be assigned to a host"));
        }
        if let Some(current) = old["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict("", "pods", &name, &format!("pod {name} is already assigned to node \"{current}\"")));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!(node);
        let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": objects::now()});
        let conditions = new["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conditions.push(condition);
        new["status"]["conditions"] = Value::Array(conditions);
        Ok(new)
    })
    .await?;
    let mut reply = Reply::created(hawser_api::status::success_status(None));
    reply.code = 201;
    Ok(reply)
}

/// GET pods/<name>/log: the container's log as the agent of the pod's node
/// serves it, streamed through as it comes (so `-f` follows).
pub async fn log(api: &Arc<Api>, t: &Target, q: &Query) -> Result<BoxStream<'static, Bytes>, ApiError> {
    let (pod, _) = api.read(t.info, t.namespace.as_deref(), t.name()?).await?;
    let container = node_proxy::log_container(&pod, q.get("container"))?;
    node_proxy::logs(api, t.namespace.as_deref().unwrap_or_default(), &pod, &container, q).await
}

//! Strategic merge patch, applied the way the Kubernetes API server applies
//! it (`k8s.io/apimachinery/pkg/util/strategicpatch`, `StrategicMergeMapPatch`
//! with parallel-list merging): lists merge by their patch merge key, the
//! `$patch`, `$retainKeys`, `$setElementOrder/` and
//! `$deleteFromPrimitiveList/` directives are honoured, and `null` deletes.

use serde_json::{Map, Value};

use super::schema::{self, Field, List, Ty};
use crate::status::ApiError;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Strategic merge patch as kubectl `apply` (client-side) and `kubectl patch`
/// send it, for an object of `kind` (the group does not matter: kinds are
/// unique among the served resources). Malformed patches are 400 BadRequest,
/// like Kubernetes' `interpretStrategicMergePatchError`.
pub fn strategic_merge_patch(original: &Value, patch: &Value, kind: &str) -> Result<Value, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad_request("a strategic merge patch must be a JSON object"));
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let merged = merge_map(original, patch, Field::root(kind).ty).map_err(ApiError::bad_request)?;
    Ok(Value::Object(merged.unwrap_or_default()))
}

/// Every way a strategic merge patch can fail is a malformed patch, which
/// the caller answers with 400 BadRequest.
type PatchResult<T> = Result<T, String>;

fn bad(msg: impl Into<String>) -> String {
    msg.into()
}

/// Merges `patch` into `original`; `None` means the map is deleted
/// (`$patch: delete`).
fn merge_map(mut original: Map<String, Value>, patch: &Map<String, Value>, ty: Ty) -> PatchResult<Option<Map<String, Value>>> {
    let mut patch = patch.clone();
    match patch.remove(DIRECTIVE) {
        None => {}
        // Kubernetes answers `$patch: replace` with the patch itself; merging it
        // into nothing also strips directives nested in it.
        Some(Value::String(d)) if d == "replace" => return merge_map(Map::new(), &patch, ty),
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        // Kubernetes rejects an explicit `merge` on a map; it is the default
        // behaviour, so it is accepted here.
        Some(Value::String(d)) if d == "merge" => {}
        Some(d) => return Err(bad(format!("unknown patch type: {} in map: {}", plain(&d), Value::Object(patch)))),
    }

    if let Some(retain) = patch.remove(RETAIN_KEYS) {
        let Value::Array(keys) = retain else {
            return Err(bad("invalid patch format of retainKeys"));
        };
        let keys: Vec<&str> =
            keys.iter().map(|k| k.as_str().ok_or_else(|| bad("invalid patch format of retainKeys"))).collect::<Result<_, _>>()?;
        original.retain(|k, _| keys.contains(&k.as_str()));
    }

    // Every field the patch touches, directly or through a list directive.
    let mut fields: Vec<String> = Vec::new();
    for k in patch.keys() {
        let base = k.strip_prefix(SET_ORDER).or_else(|| k.strip_prefix(DELETE_PRIMITIVE)).unwrap_or(k);
        if !fields.iter().any(|f| f == base) {
            fields.push(base.to_string());
        }
    }

    for k in fields {
        let f = schema::field(ty, &k);
        let pv = patch.get(&k);
        let order = patch.get(&format!("{SET_ORDER}{k}"));
        let delete_list = patch.get(&format!("{DELETE_PRIMITIVE}{k}"));
        let ov = original.remove(&k);
        let merged = match (pv, ov) {
            (Some(Value::Null), _) => None,
            (Some(Value::Object(p)), ov) => {
                let base = match ov {
                    Some(Value::Object(o)) => o,
                    _ => Map::new(),
                };
                merge_map(base, p, f.ty)?.map(Value::Object)
            }
            (Some(Value::Array(_)), ov) | (None, ov @ Some(Value::Array(_))) if f.smp != List::Atomic => {
                let base = match ov {
                    Some(Value::Array(o)) => o,
                    _ => Vec::new(),
                };
                let p = match pv {
                    Some(Value::Array(p)) => p.as_slice(),
                    _ => &[],
                };
                Some(Value::Array(merge_list(base, p, order, delete_list, f)?))
            }
            (Some(p), _) => Some(p.clone()),
            (None, ov) => ov,
        };
        if let Some(v) = merged {
            original.insert(k, v);
        }
    }
    Ok(Some(original))
}

/// How an item is identified within its list: its merge key value for lists
/// of maps, itself for primitive lists.
fn identity<'a>(item: &'a Value, key: Option<&str>) -> Option<&'a Value> {
    match key {
        Some(k) => item.get(k),
        None => Some(item),
    }
}

fn index_of(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    let id = identity(item, key)?;
    list.iter().position(|x| identity(x, key) == Some(id))
}

fn merge_list(
    mut original: Vec<Value>,
    patch: &[Value],
    order: Option<&Value>,
    delete_list: Option<&Value>,
    f: Field,
) -> PatchResult<Vec<Value>> {
    let server_order = original.clone();
    let (merged, patch_items, key) = match f.smp {
        List::Set => {
            if let Some(del) = delete_list {
                let Value::Array(del) = del else {
                    return Err(bad("invalid patch format of primitive list"));
                };
                original.retain(|v| !del.contains(v));
            }
            if let Some(bad_item) = patch.iter().find(|v| v.is_object() || v.is_array()) {
                return Err(bad(format!("list of primitives expected in a merge list, found {bad_item}")));
            }
            let mut merged = original;
            for v in patch {
                if !merged.contains(v) {
                    merged.push(v.clone());
                }
            }
            (merged, patch.to_vec(), None)
        }
        List::Map(keys) => {
            let key = keys[0];
            let (original, patch) = special_elements(original, patch, key)?;
            let mut merged = original;
            for p in &patch {
                let Some(id) = p.get(key) else {
                    return Err(bad(format!("map: {p} does not contain declared merge key: {key}")));
                };
                let Value::Object(pm) = p else { unreachable!("special_elements only returns maps") };
                match merged.iter().position(|o| o.get(key) == Some(id)) {
                    Some(i) => {
                        let base = match merged[i].take() {
                            Value::Object(o) => o,
                            _ => Map::new(),
                        };
                        match merge_map(base, pm, f.ty)? {
                            Some(m) => merged[i] = Value::Object(m),
                            None => {
                                merged.remove(i);
                            }
                        }
                    }
                    None => {
                        if let Some(m) = merge_map(Map::new(), pm, f.ty)? {
                            merged.push(Value::Object(m));
                        }
                    }
                }
            }
            (merged, patch, Some(key))
        }
        List::Atomic => unreachable!("atomic lists are replaced by the caller"),
    };

    // The patch's order wins: `$setElementOrder` when given, else the order
    // of the items in the patch; items only on the server keep their place
    // relative to the others.
    let (order_list, to_delete) = match order {
        Some(Value::Array(o)) => {
            if let Some(key) = key
                && o.iter().any(|x| x.get(key).is_none())
            {
                return Err(bad("invalid patch format of setElementOrder list"));
            }
            let deleted: Vec<Value> = o.iter().filter(|x| x.get(DIRECTIVE).and_then(Value::as_str) == Some("delete")).cloned().collect();
            (o.clone(), deleted)
        }
        Some(_) => return Err(bad("invalid patch format of setElementOrder list")),
        None => (patch_items, Vec::new()),
    };
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|v| index_of(&order_list, v, key).is_some());
    from_patch.sort_by_key(|v| index_of(&order_list, v, key));
    from_patch.retain(|v| index_of(&to_delete, v, key).is_none());
    server_only.sort_by_key(|v| index_of(&server_order, v, key));
    Ok(merge_sorted(server_only, from_patch, &server_order, key))
}

/// Applies `$patch: delete` / `$patch: replace` elements of a patch list of
/// maps, returning the remaining original items and the plain patch items.
fn special_elements(original: Vec<Value>, patch: &[Value], key: &str) -> PatchResult<(Vec<Value>, Vec<Value>)> {
    let mut original = original;
    let mut plain_items = Vec::new();
    let mut replace = false;
    for p in patch {
        let Value::Object(m) = p else {
            return Err(bad(format!("expected a map in a list merged by key {key:?}, found {p}")));
        };
        match m.get(DIRECTIVE) {
            None => plain_items.push(p.clone()),
            Some(Value::String(d)) if d == "delete" => {
                let Some(id) = m.get(key) else {
                    return Err(bad(format!("map: {p} does not contain declared merge key: {key}")));
                };
                original.retain(|o| o.get(key) != Some(id));
            }
            Some(Value::String(d)) if d == "replace" => replace = true,
            Some(Value::String(d)) if d == "merge" => return Err(bad("merging lists cannot yet be specified in the patch")),
            Some(d) => return Err(bad(format!("unknown patch type: {} in map: {p}", plain(d)))),
        }
    }
    if replace {
        // The patch items become the list; they are merged into nothing so
        // their own directives are processed too.
        return Ok((Vec::new(), plain_items));
    }
    Ok((original, plain_items))
}

/// Interleaves server-only items (`left`) into the patch-ordered items
/// (`right`), keeping each side's order; a server-only item goes before a
/// patch item when it came first in the server's list. This is Kubernetes'
/// `mergeSortedSlice`.
fn merge_sorted(left: Vec<Value>, right: Vec<Value>, server_order: &[Value], key: Option<&str>) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => return out,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => match (index_of(server_order, l, key), index_of(server_order, r, key)) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        out.extend(if take_left { left.next() } else { right.next() });
    }
}

fn plain(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(original: Value, patch: Value, kind: &str) -> Value {
        strategic_merge_patch(&original, &patch, kind).unwrap()
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a"]},
            "spec": {
                "containers": [
                    {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "side", "image": "busybox"}
                ],
                "tolerations": [{"key": "a", "operator": "Exists"}]
            }
        })
    }

    #[test]
    fn kubectl_apply_patch_changes_image_and_keeps_ports() {
        // What `kubectl apply` sends after the image in the manifest changed.
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [{"image": "nginx:2", "name": "web"}]
            }
        });
        let out = smp(pod(), patch, "Pod");
        let web = &out["spec"]["containers"][0];
        assert_eq!(web["image"], "nginx:2");
        assert_eq!(web["ports"], json!([{"containerPort": 80, "protocol": "TCP"}]));
        assert_eq!(web["env"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["containers"][1]["name"], "side");
        assert_eq!(out["metadata"]["labels"]["app"], "web");
        assert_eq!(out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"], "{}");
    }

    #[test]
    fn new_list_item_is_added_and_existing_merged_by_key() {
        let patch = json!({"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]}]}});
        let out = smp(pod(), patch, "Pod");
        let env = &out["spec"]["containers"][0]["env"];
        assert_eq!(env, &json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}]));
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn container_ports_merge_by_container_port() {
        let patch =
            json!({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 443}, {"containerPort": 80, "name": "http"}]}]}});
        let out = smp(pod(), patch, "Pod");
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP", "name": "http"}])
        );
    }

    #[test]
    fn set_element_order_reorders_and_server_only_items_keep_relative_place() {
        let original = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "x"}, {"name": "c"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}]}});
        let out = smp(original, patch, "Pod");
        let names: Vec<&str> = out["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        // `x` is not in the order; it came before `c` on the server, so it
        // stays ahead of it.
        assert_eq!(names, ["x", "c", "b", "a"]);
    }

    #[test]
    fn set_element_order_places_new_items() {
        let original = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "new"}, {"name": "b"}],
            "containers": [{"name": "new", "image": "i"}]
        }});
        let out = smp(original, patch, "Pod");
        let names: Vec<&str> = out["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "new", "b"]);
    }

    #[test]
    fn patch_delete_removes_list_item_by_key() {
        let patch = json!({"spec": {"containers": [{"name": "web", "env": [{"name": "A", "$patch": "delete"}]}, {"name": "side", "$patch": "delete"}]}});
        let out = smp(pod(), patch, "Pod");
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(out["spec"]["containers"][0]["env"], json!([{"name": "B", "value": "2"}]));
    }

    #[test]
    fn patch_delete_on_map_removes_it() {
        let original = json!({"spec": {"securityContext": {"runAsUser": 1}, "hostname": "h"}});
        let out = smp(original, json!({"spec": {"securityContext": {"$patch": "delete"}}}), "Pod");
        assert_eq!(out, json!({"spec": {"hostname": "h"}}));
    }

    #[test]
    fn patch_replace_replaces_map_and_list() {
        let out = smp(pod(), json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}), "Pod");
        assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));
        let out = smp(pod(), json!({"spec": {"containers": [{"name": "solo", "image": "x"}, {"$patch": "replace"}]}}), "Pod");
        assert_eq!(out["spec"]["containers"], json!([{"name": "solo", "image": "x"}]));
    }

    #[test]
    fn null_deletes_map_key() {
        let out = smp(pod(), json!({"metadata": {"labels": {"tier": null, "new": null}}}), "Pod");
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn lists_without_merge_key_are_replaced() {
        let out = smp(pod(), json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}), "Pod");
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "b", "operator": "Exists"}]));
        let out = smp(pod(), json!({"spec": {"containers": [{"name": "web", "args": ["x"]}]}}), "Pod");
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["x"]));
    }

    #[test]
    fn finalizers_union_and_delete_from_primitive_list() {
        let out = smp(pod(), json!({"metadata": {"finalizers": ["b", "a"]}}), "Pod");
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "a"]));
        // Without `$setElementOrder`, items new to the server come first, as
        // Kubernetes' `mergeSortedSlice` orders them.
        let out = smp(pod(), json!({"metadata": {"finalizers": ["c"]}}), "Pod");
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a"]));
        let out = smp(pod(), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["z"]}}), "Pod");
        assert_eq!(out["metadata"]["finalizers"], json!(["z"]));
    }

    #[test]
    fn retain_keys_clears_fields_not_listed() {
        let original = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = smp(original, patch, "Deployment");
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn kubectl_apply_removing_container_and_port() {
        // `kubectl apply` after `side` and the port were dropped from the manifest.
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [
                {"name": "web", "$setElementOrder/ports": [], "ports": [{"containerPort": 80, "$patch": "delete"}]},
                {"name": "side", "$patch": "delete"}
            ]
        }});
        let out = smp(pod(), patch, "Pod");
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(out["spec"]["containers"][0]["ports"], json!([]));
        assert_eq!(out["spec"]["containers"][0]["image"], "nginx:1");
    }

    #[test]
    fn retain_keys_in_volume_items_switch_the_source() {
        let original = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}]}});
        let patch = json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/x"}}]}});
        let out = smp(original, patch, "Pod");
        assert_eq!(out["spec"]["volumes"], json!([{"name": "v", "hostPath": {"path": "/x"}}, {"name": "w", "emptyDir": {}}]));
    }

    #[test]
    fn deployment_template_containers_merge_by_name() {
        let original =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1", "ports": [{"containerPort": 1}]}]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "2"}]}}}});
        let out = smp(original, patch, "Deployment");
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "a", "image": "2", "ports": [{"containerPort": 1}]}]));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let original = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let out = smp(original, json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}), "Service");
        assert_eq!(out["spec"]["ports"], json!([{"port": 80, "targetPort": 9090}, {"port": 443}]));
    }

    #[test]
    fn directives_inside_new_values_are_stripped() {
        let out = smp(
            json!({"spec": {}}),
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "x", "$patch": "delete"}, {"name": "y", "value": null}]}]}}),
            "Pod",
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "a", "env": [{"name": "y"}]}]));
    }

    #[test]
    fn malformed_patches_are_bad_requests() {
        let e = strategic_merge_patch(&pod(), &json!({"spec": {"containers": [{"image": "x"}]}}), "Pod").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("does not contain declared merge key: name"), "{}", e.message);
        assert_eq!(strategic_merge_patch(&pod(), &json!([1]), "Pod").unwrap_err().code, 400);
        assert_eq!(strategic_merge_patch(&pod(), &json!({"spec": {"$patch": "bogus"}}), "Pod").unwrap_err().code, 400);
        assert_eq!(strategic_merge_patch(&pod(), &json!({"metadata": {"$retainKeys": "x"}}), "Pod").unwrap_err().code, 400);
    }
}

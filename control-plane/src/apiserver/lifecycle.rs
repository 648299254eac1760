//! What happens after a delete: dependents follow their owner
//! (`propagationPolicy` Background and Foreground), are released by it
//! (Orphan), and a terminating namespace is emptied before it goes. These are
//! Kubernetes' garbage collector and namespace controller, reduced to what
//! the API server can finish by itself; they run as background tasks, resume
//! after a restart, and retry until done.

use super::Api;
use super::objects::{self, meta, meta_str};
use super::request::{Query, Target};
use hawser_api::ResourceInfo;
use hawser_api::resources::{self, RESOURCES};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";
/// The namespace finalizer in `spec.finalizers`.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// How long a finished pass waits before checking again for dependents that
/// are still going (graceful pods, their own finalizers).
const RECHECK: Duration = Duration::from_millis(500);

/// Called after an object was written with a deletionTimestamp: runs the
/// finalizers the API server owns.
pub fn after_write(api: &Arc<Api>, info: &'static ResourceInfo, obj: &Value) {
    if !meta(obj).contains_key("deletionTimestamp") {
        return;
    }
    let finalizers = objects::finalizers(obj);
    let is_terminating_namespace = info.plural == "namespaces" && obj["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
    if !(is_terminating_namespace || finalizers.iter().any(|f| f == ORPHAN || f == FOREGROUND)) {
        return;
    }
    spawn_once(api, info, obj, move |api, target, uid| async move {
        if target.info.plural == "namespaces" { finalize_namespace(&api, &target).await } else { finalize_owner(&api, &target, &uid).await }
    });
}

/// An object that is gone; objects it owned must follow it.
pub struct DeletedOwner {
    namespace: Option<String>,
    uid: String,
}

/// Called after an object is gone: its dependents go too (Background), via
/// the garbage collector below.
pub fn after_delete(api: &Arc<Api>, obj: &Value) {
    let Some(uid) = meta_str(obj, "uid").map(str::to_string) else { return };
    let namespace = meta_str(obj, "namespace").map(str::to_string);
    // The collector runs as long as the server does; a send fails only during shutdown.
    let _ = api.deleted_owners.send(DeletedOwner { namespace, uid });
}

/// Deletes the dependents of deleted owners. Owners are taken in batches,
/// one scan per namespace per batch: deleting a namespace of N objects costs
/// a few scans, not one per object.
pub async fn collect_garbage(api: std::sync::Weak<Api>, mut deleted: tokio::sync::mpsc::UnboundedReceiver<DeletedOwner>) {
    while let Some(first) = deleted.recv().await {
        let mut by_namespace: std::collections::HashMap<Option<String>, std::collections::HashSet<String>> = Default::default();
        by_namespace.entry(first.namespace).or_default().insert(first.uid);
        while let Ok(more) = deleted.try_recv() {
            by_namespace.entry(more.namespace).or_default().insert(more.uid);
        }
        let Some(api) = api.upgrade() else { return };
        for (namespace, uids) in by_namespace {
            let mut delay = RECHECK;
            for attempt in 1..=5 {
                match dependents(&api, namespace.as_deref(), &uids).await {
                    Ok(found) => match delete_all(&api, found).await {
                        Ok(()) => break,
                        Err(e) => tracing::warn!(?namespace, attempt, error = %e, "deleting dependents failed"),
                    },
                    Err(e) => tracing::warn!(?namespace, attempt, error = %e, "finding dependents failed"),
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// Picks up finalizers that were in progress when the server stopped.
pub async fn resume(api: &Arc<Api>) -> anyhow::Result<()> {
    for info in RESOURCES {
        let page = api.store.list(&info.key_prefix(None), None, None).await?;
        for kv in page.items {
            let obj = objects::decode(&kv)?;
            after_write(api, info, &obj);
        }
    }
    Ok(())
}

/// Runs `work` for `obj` unless it is already running, retrying until it succeeds.
fn spawn_once<F, Fut>(api: &Arc<Api>, info: &'static ResourceInfo, obj: &Value, work: F)
where
    F: Fn(Arc<Api>, Target, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<bool>> + Send,
{
    let key = info.key(meta_str(obj, "namespace"), objects::name(obj));
    if !api.finalizing.lock().expect("not poisoned").insert(key.clone()) {
        return;
    }
    let target = Target {
        info,
        namespace: meta_str(obj, "namespace").map(str::to_string),
        name: Some(objects::name(obj).to_string()),
        subresource: None,
    };
    let uid = meta_str(obj, "uid").unwrap_or_default().to_string();
    let api = api.clone();
    tokio::spawn(async move {
        let mut delay = RECHECK;
        loop {
            match work(api.clone(), target.clone(), uid.clone()).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(%key, error = %e, "finalizing failed; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        api.finalizing.lock().expect("not poisoned").remove(&key);
    });
}

/// Orphan: strip the owner from its dependents. Foreground: delete them and
/// wait until they are gone. Then drop the finalizer, which lets the owner go.
/// Returns whether the work is finished.
async fn finalize_owner(api: &Arc<Api>, target: &Target, uid: &str) -> anyhow::Result<bool> {
    let Ok((obj, _)) = api.read(target.info, target.namespace.as_deref(), target.name()?).await else { return Ok(true) };
    if meta_str(&obj, "uid") != Some(uid) {
        return Ok(true);
    }
    let finalizers = objects::finalizers(&obj);
    let owner: std::collections::HashSet<String> = [uid.to_string()].into();
    let done = if finalizers.iter().any(|f| f == ORPHAN) {
        for (info, dependent) in dependents(api, target.namespace.as_deref(), &owner).await? {
            let dep = target_of(info, &dependent);
            let uid = uid.to_string();
            api.guaranteed_update(&dep, None, false, move |cur| {
                let mut cur = cur.clone();
                if let Some(refs) = cur["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid.as_str());
                    // Kubernetes omits an empty list; clients test for its absence.
                    if refs.is_empty() {
                        cur["metadata"].as_object_mut().expect("objects have metadata").remove("ownerReferences");
                    }
                }
                Ok(cur)
            })
            .await?;
        }
        ORPHAN
    } else {
        let remaining = dependents(api, target.namespace.as_deref(), &owner).await?;
        if !remaining.is_empty() {
            delete_all(api, remaining).await?;
            return Ok(false);
        }
        FOREGROUND
    };
    remove_finalizer(api, target, done).await?;
    Ok(true)
}

async fn remove_finalizer(api: &Arc<Api>, target: &Target, finalizer: &str) -> anyhow::Result<()> {
    let finalizer = finalizer.to_string();
    let result = api
        .guaranteed_update(target, None, false, move |cur| {
            let mut cur = cur.clone();
            if let Some(list) = cur["metadata"]["finalizers"].as_array_mut() {
                list.retain(|f| f != finalizer.as_str());
            }
            Ok(cur)
        })
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes everything in the namespace, and once it is empty clears
/// `spec.finalizers`, which lets the namespace itself go.
async fn finalize_namespace(api: &Arc<Api>, target: &Target) -> anyhow::Result<bool> {
    let ns = target.name()?.to_string();
    let mut remaining = Vec::new();
    for info in RESOURCES.iter().filter(|r| r.namespaced) {
        let page = api.store.list(&info.key_prefix(Some(&ns)), None, None).await?;
        for kv in page.items {
            remaining.push((info, objects::decode(&kv)?));
        }
    }
    if !remaining.is_empty() {
        delete_all(api, remaining).await?;
        return Ok(false);
    }
    let result = api
        .guaranteed_update(target, None, false, |cur| {
            let mut cur = cur.clone();
            cur["spec"]["finalizers"] = json!([]);
            Ok(cur)
        })
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code == 404 => Ok(true),
        Err(e) => Err(e.into()),
    }
}

async fn delete_all(api: &Arc<Api>, objects: Vec<(&'static ResourceInfo, Value)>) -> anyhow::Result<()> {
    let background = json!({"propagationPolicy": "Background"});
    for (info, obj) in objects {
        if meta(&obj).contains_key("deletionTimestamp") {
            continue;
        }
        match api.delete(&target_of(info, &obj), &Query::default(), Some(background.clone())).await {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Objects with an ownerReference to any of `owners` (uids): in the owners'
/// namespace, or anywhere for cluster-scoped owners.
async fn dependents(
    api: &Arc<Api>,
    namespace: Option<&str>,
    owners: &std::collections::HashSet<String>,
) -> anyhow::Result<Vec<(&'static ResourceInfo, Value)>> {
    let mut found = Vec::new();
    for info in RESOURCES.iter().filter(|r| r.plural != "namespaces") {
        let page = api.store.list(&info.key_prefix(namespace), None, None).await?;
        for kv in page.items {
            let obj = objects::decode(&kv)?;
            let owned = meta(&obj)
                .get("ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str().is_some_and(|u| owners.contains(u))));
            if owned {
                found.push((info, obj));
            }
        }
    }
    Ok(found)
}

fn target_of(info: &'static ResourceInfo, obj: &Value) -> Target {
    Target {
        info,
        namespace: meta_str(obj, "namespace").map(str::to_string),
        name: Some(objects::name(obj).to_string()),
        subresource: None,
    }
}

/// The namespaces every cluster starts with.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Points the `kubernetes` Service at this server, as kube-apiserver's
/// endpoint reconciler does (the Service has no selector, so no controller
/// would): its Endpoints (labelled so that no mirroring controller copies
/// them) and its EndpointSlice, which the reconciler keeps itself: named
/// after the Service, with only the service-name label and only the `ready`
/// condition, exactly as Kubernetes writes it.
async fn publish_api_endpoints(api: &Arc<Api>) -> anyhow::Result<()> {
    let Some(ip) = api.advertise_address else {
        tracing::info!("listening on loopback only: the kubernetes service gets no endpoints");
        return Ok(());
    };
    let ports = json!([{"name": "https", "port": api.api_port, "protocol": "TCP"}]);
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": ports}],
    });
    ensure_object(api, ("", "v1", "endpoints"), endpoints, &["subsets"]).await?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": if ip.is_ipv6() { "IPv6" } else { "IPv4" },
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": ports,
    });
    ensure_object(api, ("discovery.k8s.io", "v1", "endpointslices"), slice, &["addressType", "endpoints", "ports"]).await?;
    tracing::info!(%ip, port = api.api_port, "kubernetes service endpoints point at this server");
    Ok(())
}

/// Creates `body` (a namespaced object of the resource `group/version/plural`)
/// or brings the stored one to it when the `fields` (top-level) or the labels
/// differ. An immutable field that differs (an EndpointSlice's address type)
/// is replaced by deleting and creating the object.
async fn ensure_object(
    api: &Arc<Api>,
    (group, version, plural): (&str, &str, &str),
    mut body: Value,
    fields: &[&str],
) -> anyhow::Result<()> {
    let info = resources::lookup(group, version, plural).expect("served");
    let name = meta_str(&body, "name").unwrap_or_default().to_string();
    let t = Target { info, namespace: meta_str(&body, "namespace").map(str::to_string), name: Some(name.clone()), subresource: None };
    let collection = Target { name: None, ..t.clone() };
    let what = format!("the {name} {plural}");
    let current = match api.get(&t, &Query::default(), super::request::Render::Object).await {
        Ok(current) => Some(current.body),
        Err(e) if e.code == 404 => None,
        Err(e) => anyhow::bail!("reading {what}: {}", e.message),
    };
    match current {
        Some(cur) if fields.iter().all(|f| cur[f] == body[f]) && cur["metadata"]["labels"] == body["metadata"]["labels"] => {}
        Some(cur) if plural == "endpointslices" && cur["addressType"] != body["addressType"] => {
            api.delete(&t, &Query::default(), None).await.map_err(|e| anyhow::anyhow!("deleting {what}: {}", e.message))?;
            api.create(&collection, &Query::default(), body).await.map_err(|e| anyhow::anyhow!("creating {what}: {}", e.message))?;
        }
        Some(cur) => {
            body["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
            api.update(&t, &Query::default(), body).await.map_err(|e| anyhow::anyhow!("updating {what}: {}", e.message))?;
        }
        None => {
            api.create(&collection, &Query::default(), body).await.map_err(|e| anyhow::anyhow!("creating {what}: {}", e.message))?;
        }
    }
    Ok(())
}

/// Creates `body` in the collection `(group, version, plural)` (in
/// `namespace`) unless an object of its name is there: Ok(true) when it was
/// created, Ok(false) when it existed, else the API's message.
async fn create_if_missing(
    api: &Arc<Api>,
    (group, version, plural): (&str, &str, &str),
    namespace: Option<&str>,
    body: Value,
) -> Result<bool, String> {
    let info = resources::lookup(group, version, plural).expect("served");
    let t = Target { info, namespace: namespace.map(str::to_string), name: None, subresource: None };
    match api.create(&t, &Query::default(), body).await {
        Ok(_) => Ok(true),
        Err(e) if e.code == 409 => Ok(false),
        Err(e) => Err(e.message),
    }
}

/// Creates the system namespaces, the `kubernetes` Service and the
/// `kube-dns` Service when missing, and points `kubernetes` at this server.
///
/// `kube-dns` (in `kube-system`) is the address pods' resolv.conf names. It
/// has no selector and no endpoints: every agent answers at that address
/// itself (node-local DNS), and its proxy leaves the address alone. A
/// cluster whose store already gave the address to another Service keeps
/// running without it, with a warning.
pub async fn bootstrap(api: &Arc<Api>) -> anyhow::Result<()> {
    for ns in SYSTEM_NAMESPACES {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match create_if_missing(api, ("", "v1", "namespaces"), None, body).await {
            Ok(true) => tracing::info!(namespace = ns, "created system namespace"),
            Ok(false) => {}
            Err(e) => anyhow::bail!("creating namespace {ns}: {e}"),
        }
    }
    let kubernetes = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": api.ranges.api_service_ip().to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api.api_port}],
        }
    });
    match create_if_missing(api, ("", "v1", "services"), Some("default"), kubernetes).await {
        Ok(true) => tracing::info!("created the kubernetes service"),
        Ok(false) => {}
        Err(e) => anyhow::bail!("creating the kubernetes service: {e}"),
    }
    let dns = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "Hawser-DNS"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": api.ranges.dns_service_ip().to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        }
    });
    match create_if_missing(api, ("", "v1", "services"), Some("kube-system"), dns).await {
        Ok(true) => tracing::info!(ip = %api.ranges.dns_service_ip(), "created the kube-dns service"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = e, "creating the kube-dns service; cluster DNS has no service address"),
    }
    publish_api_endpoints(api).await?;
    resume(api).await
}

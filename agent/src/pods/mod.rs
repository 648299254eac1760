//! Pod workers: drive each pod bound to this node to its spec.
//!
//! The [`PodManager`] watches the pods bound to this node (a field
//! selector on `spec.nodeName`) and runs one [`worker`] per pod UID, handing
//! it every newer version of its pod. It also removes what pods left behind
//! while the agent was down: sandboxes and addresses of pods that no
//! longer exist.
//!
//! # Layout
//! - [`worker`]: one pod's lifecycle (sandbox, containers, restarts,
//!   probes, graceful deletion) and its status writes.
//! - [`spec`]: pod → sandbox and container runs (env, DNS, hosts, limits).
//! - [`volumes`]: emptyDir, configMap, secret and hostPath on the node.
//! - [`probes`]: httpGet, tcpSocket and exec probes.
//! - [`status`]: phase, conditions and container statuses as Kubernetes
//!   reports them.

pub mod probes;
pub mod spec;
pub mod status;
pub mod volumes;
pub mod worker;

pub use worker::Context;

use hawser_runtime::Informer;
use k8s_openapi::api::core::v1::Pod;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often leftovers of vanished pods are looked for.
const ORPHAN_SWEEP: Duration = Duration::from_secs(60);

type Workers = Arc<Mutex<HashMap<String, watch::Sender<Option<Arc<Pod>>>>>>;

/// Runs the pod workers of this node until the process ends.
pub struct PodManager {
    ctx: Arc<Context>,
    pods: Informer<Pod>,
    workers: Workers,
}

impl PodManager {
    /// `pods` must be an informer over this node's pods only.
    pub fn new(ctx: Arc<Context>, pods: Informer<Pod>) -> Self {
        Self { ctx, pods, workers: Arc::default() }
    }

    /// Starts a worker for every pod that appears and feeds each its
    /// updates; sweeps leftovers once the first list is in and then every
    /// [`ORPHAN_SWEEP`]. Runs forever.
    pub async fn run(self) {
        self.pods.wait_synced().await;
        self.sweep_orphans().await;
        let (ctx, workers) = (self.ctx.clone(), self.workers.clone());
        self.pods.on_change(move |change| {
            let Some(uid) = change.object().metadata.uid.clone() else { return };
            let mut registry = workers.lock().unwrap();
            match change.new {
                Some(pod) => {
                    let pod = Arc::new(pod.clone());
                    if let Some(tx) = registry.get(&uid) {
                        tx.send_replace(Some(pod));
                        return;
                    }
                    let (tx, rx) = watch::channel(Some(pod.clone()));
                    registry.insert(uid.clone(), tx);
                    let (ctx, workers) = (ctx.clone(), workers.clone());
                    tokio::spawn(async move {
                        worker::run(ctx, pod, rx).await;
                        workers.lock().unwrap().remove(&uid);
                    });
                }
                None => {
                    if let Some(tx) = registry.get(&uid) {
                        tx.send_replace(None);
                    }
                }
            }
        });
        loop {
            tokio::time::sleep(ORPHAN_SWEEP).await;
            self.sweep_orphans().await;
        }
    }

    /// Removes sandboxes, addresses and volumes of pods that neither exist
    /// in the API nor have a worker (deleted while the agent was down).
    async fn sweep_orphans(&self) {
        let known: HashSet<String> = self.pods.list().iter().filter_map(|p| p.metadata.uid.clone()).collect();
        let mut leftovers: HashSet<String> = HashSet::new();
        match self.ctx.runtime.list_sandboxes().await {
            Ok(sandboxes) => leftovers.extend(sandboxes.into_iter().map(|s| s.pod_uid)),
            Err(e) => tracing::warn!(error = %e, "listing sandboxes for the orphan sweep"),
        }
        match self.ctx.network.address_owners().await {
            Ok(owners) => leftovers.extend(owners),
            Err(e) => tracing::warn!(error = %e, "listing pod addresses for the orphan sweep"),
        }
        let workers = self.workers.lock().unwrap().keys().cloned().collect::<HashSet<_>>();
        for uid in leftovers.into_iter().filter(|uid| !known.contains(uid) && !workers.contains(uid)) {
            tracing::info!(pod_uid = uid, "removing what a vanished pod left behind");
            if let Err(e) = self.ctx.runtime.remove_sandbox(&uid).await {
                tracing::warn!(pod_uid = uid, error = %e, "removing an orphaned sandbox");
            }
            if let Err(e) = self.ctx.network.detach_pod(&uid).await {
                tracing::warn!(pod_uid = uid, error = %e, "releasing an orphaned pod address");
            }
            let _ = volumes::remove(&self.ctx.volumes_root, &uid);
        }
    }
}

//! The service proxy (kube-proxy's half of the agent): Services get their
//! cluster IP and NodePorts, balanced over ready endpoints, by one of
//! interchangeable backends behind the [`Proxier`] trait.
//!
//! The shared half, here: informers on Services and EndpointSlices feed a
//! [`tracker::ChangeTracker`]; one loop rebuilds the [`state::ProxyState`]
//! of the Services that changed and hands the backend the whole state plus
//! the change. Syncs are at least `min_sync_period` apart (changes that
//! come meanwhile wait, none is dropped); every `sync_period` a full sync
//! repairs whatever drifted; a failed sync is retried, as a full one, with
//! backoff. After each sync the health-check node ports and UDP conntrack
//! entries are brought in line ([`healthcheck`], [`conntrack`]).
//!
//! # Layout
//! - [`state`]: Service + EndpointSlices → service ports and endpoints.
//! - [`tracker`]: what changed since the last sync.
//! - [`iptables`]: the iptables backend (kube-proxy's chain layout).
//! - [`ebpf`]: the eBPF backend (socket-level balancing, tc NodePort).
//! - [`healthcheck`], [`conntrack`]: shared by the backends.

pub mod conntrack;
pub mod ebpf;
pub mod healthcheck;
pub mod iptables;
pub mod state;
pub mod tracker;

use crate::iptables::{Backend, IptablesError};
use hawser_runtime::backoff::Backoff;
use hawser_runtime::{Informer, ObjectKey};
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use state::ProxyState;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracker::ChangeTracker;

/// Which backend programs the data path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    Iptables,
    Ebpf,
}

impl std::str::FromStr for ProxyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "iptables" => Ok(ProxyMode::Iptables),
            "ebpf" => Ok(ProxyMode::Ebpf),
            other => Err(format!("unknown proxy mode {other:?}: expected ebpf or iptables")),
        }
    }
}

/// `hawser agent`'s proxy settings, with kube-proxy's defaults.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub iptables: Backend,
    pub node_name: String,
    /// Pod traffic (from inside this range) to a cluster IP is not
    /// masqueraded; everything else is.
    pub cluster_cidr: Ipv4Network,
    /// eBPF mode: NodePort traffic from outside picks backends by Maglev
    /// consistent hashing (`--ebpf-lb-algorithm maglev`), not at random.
    pub maglev: bool,
    /// `--proxy-min-sync-period` (kube-proxy: 1 s).
    pub min_sync_period: Duration,
    /// `--proxy-sync-period`: the full resync (kube-proxy: 30 s).
    pub sync_period: Duration,
    /// Cluster IPs the agent answers at itself (the `kube-dns` Service's,
    /// which the node-local DNS server holds): not programmed, so traffic
    /// to them stays on the node.
    pub locally_served: BTreeSet<std::net::Ipv4Addr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Iptables(#[from] IptablesError),
    #[error("eBPF proxy: {0}")]
    Ebpf(String),
}

/// What changed since the backend's last successful sync.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Re-check everything (first sync, after a failure, periodically).
    pub full: bool,
    /// Services whose ports or endpoints may differ.
    pub services: BTreeSet<ObjectKey>,
}

/// A data-path backend.
#[async_trait::async_trait]
pub trait Proxier: Send {
    fn name(&self) -> &'static str;
    /// Makes the data path carry `state`. Only the Services in
    /// `changes.services` differ from the last successful sync unless
    /// `changes.full`. A failed sync may have applied nothing or all of
    /// the change, never part of a service.
    async fn sync(&mut self, state: &ProxyState, changes: &Changes) -> Result<(), ProxyError>;
}

/// The eBPF backend over `datapath` when one was loaded, else iptables.
pub fn proxier(config: &ProxyConfig, datapath: Option<ebpf::DataPath>) -> Result<Box<dyn Proxier>, ProxyError> {
    Ok(match datapath {
        Some(datapath) => Box::new(ebpf::EbpfProxier::new(datapath, config.maglev)?),
        None => Box::new(iptables::IptablesProxier::new(config.iptables, config.cluster_cidr)),
    })
}

/// Removes everything every backend may have left (`hawser agent --cleanup`):
/// the iptables chains, and the BPF programs and maps pinned under
/// `pin_dir` (unpinning detaches them).
pub async fn cleanup(iptables: Backend, pin_dir: &std::path::Path) -> Result<(), ProxyError> {
    iptables::cleanup(iptables).await?;
    ebpf::datapath::remove(pin_dir).map_err(|e| ProxyError::Ebpf(e.to_string()))?;
    Ok(())
}

/// How long to wait before retrying after `failures` failed syncs.
const RETRY: Backoff = Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(30), factor: 2.0 };

/// Runs the proxy until the task is dropped: over `datapath` (the eBPF
/// backend) when given, else with iptables, from the `services` and
/// `slices` caches (shared with cluster DNS).
pub async fn run(services: Informer<Service>, slices: Informer<EndpointSlice>, config: ProxyConfig, datapath: Option<ebpf::DataPath>) {
    let tracker = ChangeTracker::watching(&services, &slices);
    // Until both caches are full, a sync would remove the rules of
    // services not yet seen: the previous run's rules stay until then.
    services.wait_synced().await;
    slices.wait_synced().await;
    let mut proxier = match proxier(&config, datapath) {
        Ok(proxier) => proxier,
        Err(e) => {
            tracing::error!(error = %e, "service proxy cannot start");
            return;
        }
    };
    tracing::info!(backend = proxier.name(), "service proxy synced its caches; programming");
    SyncLoop { config, services, slices, tracker, state: ProxyState::default(), health: Default::default() }.run(proxier.as_mut()).await
}

struct SyncLoop {
    config: ProxyConfig,
    services: Informer<Service>,
    slices: Informer<EndpointSlice>,
    tracker: Arc<ChangeTracker>,
    state: ProxyState,
    health: healthcheck::HealthCheckServers,
}

impl SyncLoop {
    async fn run(mut self, proxier: &mut dyn Proxier) {
        let mut full = true;
        let mut failures = 0u32;
        let mut last_full = Instant::now();
        let mut last_sync: Option<Instant> = None;
        // The ports of each changed Service as of the last successful sync
        // (kept across failed ones), for the conntrack clean-up.
        let mut synced_before: BTreeMap<ObjectKey, Vec<state::ServicePort>> = BTreeMap::new();
        let mut synced_once = false;
        loop {
            if !full {
                tokio::select! {
                    _ = self.tracker.wait() => {}
                    _ = tokio::time::sleep_until(last_full + self.config.sync_period) => full = true,
                }
            }
            if let Some(last) = last_sync {
                tokio::time::sleep_until(last + self.config.min_sync_period).await;
            }
            let mut changed = self.tracker.take();
            if !full && changed.is_empty() {
                // Woken by changes an earlier sync already took.
                continue;
            }
            if full {
                changed.extend(self.services.list().iter().map(|s| ObjectKey::of(&**s)));
                changed.extend(self.state.services.keys().cloned());
            }
            for key in &changed {
                // Before this process's first sync the kernel's state is
                // unknown: a service that seems new may have live
                // connections from the previous run, which must be kept.
                if synced_once {
                    synced_before.entry(key.clone()).or_insert_with(|| self.state.service(key).to_vec());
                }
                let ports = self.service_ports(key);
                self.state.set(key.clone(), ports);
            }
            let changes = Changes { full, services: changed };
            let started = Instant::now();
            last_sync = Some(started);
            match proxier.sync(&self.state, &changes).await {
                Ok(()) => {
                    let elapsed = started.elapsed();
                    tracing::debug!(
                        full,
                        services = changes.services.len(),
                        elapsed_ms = elapsed.as_millis() as u64,
                        elapsed_us = elapsed.as_micros() as u64,
                        "service proxy synced"
                    );
                    failures = 0;
                    synced_once = true;
                    if full {
                        last_full = started;
                    }
                    full = false;
                    self.health.sync(&self.state).await;
                    let mut flows = BTreeSet::new();
                    for (key, old) in std::mem::take(&mut synced_before) {
                        flows.append(&mut conntrack::stale_flows(&old, self.state.service(&key)));
                    }
                    conntrack::clear(&flows).await;
                }
                Err(e) => {
                    failures += 1;
                    let delay = RETRY.delay(failures);
                    tracing::warn!(error = %e, retry_in = ?delay, "service proxy sync failed; retrying as a full sync");
                    full = true;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// `key`'s service ports as the caches have them now.
    fn service_ports(&self, key: &ObjectKey) -> Vec<state::ServicePort> {
        let Some(service) = self.services.get(key) else { return Vec::new() };
        let cluster_ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).and_then(|ip| ip.parse().ok());
        if cluster_ip.is_some_and(|ip| self.config.locally_served.contains(&ip)) {
            return Vec::new();
        }
        let slices: Vec<Arc<EndpointSlice>> = self.tracker.slices_of(key).iter().filter_map(|k| self.slices.get(k)).collect();
        state::service_ports(&service, slices.iter().map(|s| &**s), &self.config.node_name)
    }
}

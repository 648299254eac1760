//! Cluster DNS, served by every agent for its own node (node-local, as
//! Kubernetes' NodeLocal DNSCache, but answering cluster names itself
//! instead of asking CoreDNS behind a ClusterIP).
//!
//! The server (hickory-server) listens on UDP and TCP port 53 of the
//! node-local address (169.254.20.10) and of the `kube-dns` Service's
//! cluster IP (10.96.0.10), both held by a link the pod network sets
//! up ([`crate::network::local_dns`]) and exempt from connection tracking.
//! The service proxy leaves those addresses alone, so with either backend a
//! pod's query reaches this node's server, and no UDP conntrack entry is
//! made (the race behind Kubernetes' 5 s lookup stalls, kubernetes#56903).
//!
//! Cluster names are answered from the same Service and EndpointSlice
//! caches the proxy uses, as the DNS-based service discovery specification
//! lays them out ([`zone`]); a change is in the zone as soon as the watch
//! delivers it. Every other name goes to the node's resolvers behind a
//! cache ([`upstream`]).
//!
//! # Layout
//! - [`zone`]: the cluster zone's records and lookups (no I/O).
//! - [`handler`]: a query to an answer: the zone or the upstream servers.
//! - [`udp`]: the UDP sockets (one reader thread per core) and the answer
//!   cache in front.
//! - [`upstream`]: forwarding and the TTL-honouring cache.
//! - [`metrics`]: requests, responses by rcode, cache hits, upstream latency.

pub mod handler;
pub mod metrics;
pub mod names;
pub mod udp;
pub mod upstream;
pub mod zone;

use crate::proxy::tracker::ChangeTracker;
use anyhow::Context;
use hawser_runtime::{Informer, ObjectKey};
use hickory_server::Server;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The node-local address (NodeLocal DNSCache's).
pub const NODE_LOCAL_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 20, 10);

/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Answers queued per TCP connection before its reader waits.
const TCP_RESPONSES_QUEUED: usize = 32;

/// `hawser agent`'s DNS settings.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// The TTL of cluster records and of negative answers about them.
    pub ttl: u32,
    /// The addresses to answer on (port 53 unless `port` says otherwise).
    pub listen: Vec<Ipv4Addr>,
    pub port: u16,
    /// The node's resolv.conf, whose `nameserver`s get every other name.
    pub resolv_conf: String,
}

/// Serves DNS until the task is dropped. Listens only once the caches hold
/// the whole list: before that, every cluster name would look missing.
pub async fn run(
    config: DnsConfig,
    services: Informer<Service>,
    slices: Informer<EndpointSlice>,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<()> {
    let zone = Arc::new(RwLock::new(zone::Zone::new(&config.domain, config.ttl).map_err(anyhow::Error::msg)?));
    let tracker = ChangeTracker::watching(&services, &slices);
    services.wait_synced().await;
    slices.wait_synced().await;
    apply_changes(&zone, &tracker, &services, &slices);

    let ours: Vec<IpAddr> = config.listen.iter().map(|ip| IpAddr::V4(*ip)).collect();
    let upstream = upstream::Upstream::new(&config.resolv_conf, &ours, metrics.clone());
    let zone_version = Arc::new(AtomicU64::new(0));
    let handler = handler::Handler { zone: zone.clone(), zone_version: zone_version.clone(), upstream: Arc::new(upstream), metrics };
    let addresses: Vec<SocketAddr> = config.listen.iter().map(|ip| SocketAddr::from((*ip, config.port))).collect();
    let server = listen(handler, &addresses).await?;
    tracing::info!(listen = ?config.listen, port = config.port, services = zone.read().unwrap().services(), "cluster DNS serving");
    let updating = async {
        loop {
            tracker.wait().await;
            apply_changes(&zone, &tracker, &services, &slices);
            zone_version.fetch_add(1, Ordering::AcqRel);
        }
    };
    tokio::select! {
        result = server.run() => result,
        _ = updating => unreachable!("the update loop runs for good"),
    }
}

/// A DNS server bound to its addresses.
pub struct Listening {
    /// Where it answers over UDP and TCP (as bound: a port 0 asked for is
    /// the one the kernel gave, the same for both).
    pub addresses: Vec<SocketAddr>,
    /// Stop their threads when dropped.
    _udp: Vec<udp::Readers>,
    tcp: Server<handler::Handler>,
}

impl Listening {
    /// Serves until the TCP listeners fail; everything stops when dropped.
    pub async fn run(mut self) -> anyhow::Result<()> {
        self.tcp.block_until_done().await.context("the DNS server's TCP listeners stopped")
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.tcp.shutdown_token().cancel();
    }
}

/// Binds TCP and UDP on each of `addresses` and starts answering with
/// `handler`: UDP through [`udp`] (its answer cache in front), TCP through
/// hickory-server's listener.
pub async fn listen(handler: handler::Handler, addresses: &[SocketAddr]) -> anyhow::Result<Listening> {
    let cache = Arc::new(udp::AnswerCache::new(handler.zone_version.clone()));
    let shared = Arc::new(handler.clone());
    let mut tcp = Server::new(handler);
    let (mut bound, mut readers) = (Vec::new(), Vec::new());
    for address in addresses {
        let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding DNS to tcp {address}"))?;
        let address = listener.local_addr()?;
        tcp.register_listener(listener, TCP_IDLE, TCP_RESPONSES_QUEUED);
        readers.push(udp::serve(address, shared.clone(), cache.clone()).with_context(|| format!("binding DNS to udp {address}"))?);
        bound.push(address);
    }
    Ok(Listening { addresses: bound, _udp: readers, tcp })
}

/// Rebuilds the names of every Service changed since the last call.
fn apply_changes(zone: &RwLock<zone::Zone>, tracker: &ChangeTracker, services: &Informer<Service>, slices: &Informer<EndpointSlice>) {
    let changed = tracker.take();
    if changed.is_empty() {
        return;
    }
    // Read from the caches before the zone is locked against lookups.
    type Update = (ObjectKey, Option<Arc<Service>>, Vec<Arc<EndpointSlice>>);
    let updates: Vec<Update> = changed
        .into_iter()
        .map(|key| {
            let service = services.get(&key);
            let service_slices = tracker.slices_of(&key).iter().filter_map(|k| slices.get(k)).collect();
            (key, service, service_slices)
        })
        .collect();
    let mut zone = zone.write().unwrap();
    for (key, service, service_slices) in &updates {
        zone.set_service(key, service.as_deref(), service_slices.iter().map(|s| &**s));
    }
}

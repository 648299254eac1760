//! The controller manager: each controller watches the API through the
//! shared informers and reconciles one object at a time.
//!
//! # Layout
//! - [`replicaset`]: keeps `spec.replicas` pods for ReplicaSets and
//!   ReplicationControllers (one implementation, two kinds).
//! - [`replication_controller`]: the ReplicationController adapter.
//! - [`deployment`]: ReplicaSets per pod template, rolling updates, history.
//! - [`endpoints`]: Endpoints for every Service with a selector.
//! - [`endpointslice`]: EndpointSlices for every Service with a selector.
//! - [`service_pods`]: what those two share (which pods a Service selects,
//!   the port a pod serves a service port on).
//! - [`node_ipam`]: a pod CIDR for every Node.
//! - [`node_lifecycle`]: Lease-based node health, taints, eviction.
//!
//! Cascading deletion (the garbage collector) and namespace termination run
//! inside the API server ([`crate::apiserver::lifecycle`]), where they can
//! finish in the same store transactions as the deletes that start them.

pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod replicaset;
pub mod replication_controller;
pub mod service_pods;

use hawser_runtime::Informers;
use std::sync::Arc;
use std::time::Duration;

/// `hawser server`'s controller settings, with Kubernetes' names and our defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--node-monitor-grace-period`: how long a node's Lease may go
    /// unrenewed before the node is marked Unknown (Kubernetes: 40 s in
    /// 1.32; the issue asks for 20 s, which with a 10 s renew interval
    /// still tolerates one lost renewal).
    pub node_monitor_grace_period: Duration,
    /// `--cluster-cidr`, split into per-node blocks of `node_cidr_prefix` bits.
    pub cluster_cidr: ipnetwork::Ipv4Network,
    pub node_cidr_prefix: u8,
    /// Parallel reconciles per controller (Kubernetes' `--concurrent-*-syncs`).
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_monitor_grace_period: Duration::from_secs(20),
            cluster_cidr: "10.244.0.0/16".parse().expect("valid CIDR"),
            node_cidr_prefix: 24,
            workers: 5,
        }
    }
}

/// Starts every controller; they run until the process ends.
pub fn start(informers: &Arc<Informers>, config: &Config) {
    replicaset::start_replica_sets(informers, config);
    replication_controller::start(informers, config);
    deployment::start(informers, config);
    endpoints::start(informers, config);
    endpointslice::start(informers, config);
    node_ipam::start(informers, config);
    node_lifecycle::start(informers, config);
}

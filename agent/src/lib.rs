//! The Hawser node agent (kubelet and kube-proxy's half of a node).
//!
//! `hawser agent` ([`agent::run`]) registers the Node, keeps its Lease,
//! wires the pod network, runs the pods bound to the node and proxies
//! Services and serves cluster DNS (see DESIGN.md for where each lives).
//!
//! # Layout
//! - [`agent`]: the parts put together, in start order.
//! - [`node`]: registering the Node, its status, the Lease heartbeat.
//! - [`network`]: pod networking ([`network::ipam`]: pod addresses, on disk).
//! - [`proxy`]: the service proxy (the [`proxy::Proxier`] backends).
//! - [`dns`]: node-local cluster DNS (hickory-server).
//! - [`iptables`]: `iptables-save`/`-restore`, for the network and the proxy.
//! - [`pods`]: pod workers: lifecycle, restarts, probes, volumes, status.
//! - [`runtime`]: the container runtime contract and its runtimes.
//! - [`server`]: the HTTPS server on kubelet's port (logs, exec, metrics).

pub mod agent;
pub mod dns;
pub mod iptables;
pub mod network;
pub mod node;
pub mod pods;
pub mod proxy;
pub mod runtime;
pub mod server;

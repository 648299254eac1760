//! The Hawser node agent (kubelet and kube-proxy's half of a node).
//!
//! Being built (issue 4): so far node registration and heartbeat and the
//! pod network exist; pod workers and runtimes, the service proxy backends
//! and cluster DNS follow (see DESIGN.md
//! for where each lives). `hawser` offers no `agent` command until the agent
//! can run pods: a node that registers but never starts its pods would only
//! strand them.
//!
//! # Layout
//! - [`node`]: registering the Node, its status, the Lease heartbeat.
//! - [`network`]: pod networking ([`network::ipam`]: pod addresses, on disk).
//! - [`pods`]: pod workers ([`pods::status`]: the status they report).
//! - [`runtime`]: the container runtime contract (and, next, its runtimes).

pub mod network;
pub mod node;
pub mod pods;
pub mod runtime;

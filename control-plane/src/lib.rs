//! The Hawser control plane.
//!
//! # Layout
//! - [`store`]: the durable key-value store (trait + embedded redb backend).
//! - [`apiserver`]: the Kubernetes API over HTTPS on top of the store.
//! - [`scheduler`]: binds pending pods to nodes.
//! - [`controllers`]: the controller manager: replication controllers,
//!   replica sets, deployments, endpoints, node IPAM and node lifecycle.
//!
//! The scheduler and the controllers are API clients like any other: they
//! list+watch through [`hawser_runtime`] informers and write through the
//! API, so they run the same next to the API server or in another process.
pub mod apiserver;
pub mod controllers;
pub mod scheduler;
pub mod store;

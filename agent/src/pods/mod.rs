//! Pod workers: drive each pod bound to this node to its spec.
//!
//! # Layout
//! - [`status`]: phase, conditions and container statuses as Kubernetes
//!   reports them, from what the worker knows about each container.
pub mod status;

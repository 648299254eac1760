//! The Hawser control plane.
//!
//! # Layout
//! - [`store`]: the durable key-value store (trait + embedded redb backend).
//! - [`apiserver`]: the Kubernetes API over HTTPS on top of the store.
pub mod apiserver;
pub mod store;

//! The machinery every Hawser control loop shares, in the shape of
//! client-go's informers and work queues and kube-rs's runtime:
//!
//! ```text
//! API ──list+watch──▶ Informer (cache + change handlers) ──keys──▶ WorkQueue ──▶ reconcile(key)
//!                                                                        ▲                │
//!                                                                        └── requeue/backoff ◀┘
//! ```
//!
//! # Layout
//! - [`informer`]: a list+watch cache of one resource kind (kube-rs's
//!   `watcher` underneath, so relists on 410 are handled) that calls change
//!   handlers with the old and new object; [`informer::Informers`] shares one
//!   informer per kind between every loop in a process.
//! - [`queue`]: a deduplicating work queue: a key is never reconciled by two
//!   workers at once, and failures are retried with per-key backoff.
//! - [`controller`]: runs reconcile workers over a queue.
//! - [`expectations`]: "I created N pods and haven't seen them yet" bookkeeping,
//!   so a loop does not act twice on a stale cache.
//! - [`events`]: writes core/v1 Events (`kubectl describe` shows them),
//!   aggregating repeats as Kubernetes' event correlator does.
//! - [`backoff`]: exponential backoff, one definition for every retry.
//! - [`client`]: a kube-rs client from a kubeconfig file.
//! - [`objects`]: small facts about objects every loop asks (controller
//!   owner, pod readiness, object references).

pub mod backoff;
pub mod client;
pub mod controller;
pub mod events;
pub mod expectations;
pub mod informer;
pub mod objects;
pub mod queue;
pub mod tls;

pub use controller::{Action, run_workers};
pub use informer::{Change, Informer, Informers, ObjectKey};
pub use queue::WorkQueue;

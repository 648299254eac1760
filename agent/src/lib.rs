//! The Hawser node agent (kubelet and kube-proxy's half of a node).
//!
//! Nothing is built here yet: node registration, pod workers and runtimes,
//! pod networking, the service proxy backends and cluster DNS arrive with
//! their own issues (see DESIGN.md for where each will live). The crate
//! exists now so the workspace already has the shape the design gives it;
//! `hawser` offers no `agent` command until this crate does real work.

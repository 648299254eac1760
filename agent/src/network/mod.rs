//! Pod networking: every pod gets its own address on the node bridge.
//!
//! # Layout
//! - [`ipam`]: the node's pod addresses, allocated from its pod CIDR and
//!   kept on disk so a restarted agent never hands one out twice.
pub mod ipam;

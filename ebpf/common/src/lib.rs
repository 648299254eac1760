//! The service proxy's BPF maps: every key and value type, defined once for
//! the programs (`ebpf/programs`, `no_std`) and the agent's loader
//! (`agent/src/proxy/ebpf`, with the `user` feature).
//!
//! Addresses and ports are kept in network byte order, as they appear in
//! packets and in `bpf_sock_addr`, so the programs never convert them; the
//! loader converts once when it writes.
//!
//! How a service is found and load-balanced:
//! [`ServiceKey`] (VIP, port, protocol) → [`Service`] (its backend list) →
//! [`SlotKey`] (list, slot) → backend id → [`Backend`] (IP, port).
//! A list is written whole under a fresh id before the service entry is
//! flipped to it, so a reader never sees a half-written list.
#![no_std]

/// Pin names and sizes of the maps, shared so the loader and the tests open
/// the same objects the programs declare.
pub mod maps {
    pub const SERVICES: &str = "HAWSER_SVC";
    pub const SLOTS: &str = "HAWSER_SLOTS";
    pub const BACKENDS: &str = "HAWSER_BACKENDS";
    pub const AFFINITY: &str = "HAWSER_AFFINITY";
    pub const FLOWS: &str = "HAWSER_FLOWS";
    pub const SOCK_REVNAT: &str = "HAWSER_SOCKREV";
    pub const NETNS: &str = "HAWSER_NETNS";
    pub const CONFIG: &str = "HAWSER_CONFIG";
    pub const MAGLEV: &str = "HAWSER_MAGLEV";

    /// `BPF_F_NO_PREALLOC`: the control-plane-sized hash maps take memory
    /// for the entries they hold, not for their maximum.
    pub const NO_PREALLOC: u32 = 1;

    /// Service entries: (VIP or node address, port, protocol) keys.
    pub const MAX_SERVICES: u32 = 1 << 17;
    /// Backend slots over all lists (a list is written before the old one is
    /// deleted, so this leaves room for the largest list twice).
    pub const MAX_SLOTS: u32 = 1 << 20;
    pub const MAX_BACKENDS: u32 = 1 << 18;
    /// Maglev lookup-table entries over all lists (a table has a prime
    /// number of entries, at least 100 per backend).
    pub const MAX_MAGLEV: u32 = 1 << 22;
    pub const MAX_AFFINITY: u32 = 1 << 16;
    /// NodePort connections tracked, both directions (an LRU: the kernel
    /// preallocates it, so its size is its memory).
    pub const MAX_FLOWS: u32 = 1 << 17;
    pub const MAX_SOCK_REVNAT: u32 = 1 << 16;
    /// Network namespaces whose sockets this agent balances.
    pub const MAX_NETNS: u32 = 1 << 14;
}

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// A service address: a ClusterIP, or a node address with a NodePort, as
/// seen by connections from one [`ServiceKey::origin`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// IPv4, network byte order.
    pub ip: u32,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    /// [`ORIGIN_NODE`] or [`ORIGIN_WIRE`]: the same address may lead to
    /// different endpoints for the two (a NodePort with
    /// `externalTrafficPolicy: Local` serves outside clients from this
    /// node's endpoints only, but the node's own connections from all).
    pub origin: u8,
}

/// [`ServiceKey::origin`]: a socket on this node (its host or its pods),
/// balanced at `connect()`/`sendmsg()`.
pub const ORIGIN_NODE: u8 = 0;
/// [`ServiceKey::origin`]: a packet that arrived on the underlay interface.
pub const ORIGIN_WIRE: u8 = 1;

/// [`Service::flags`]: ClientIP session affinity.
pub const SERVICE_AFFINITY: u32 = 1;
/// [`Service::flags`]: a NodePort or external address, reached from outside
/// the node through the tc programs.
pub const SERVICE_EXTERNAL: u32 = 1 << 1;
/// [`Service::flags`]: `externalTrafficPolicy: Local`: only local backends,
/// client source kept, no SNAT.
pub const SERVICE_LOCAL_ONLY: u32 = 1 << 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    /// Stable for the service port's life: the affinity key.
    pub id: u32,
    /// The backend list now in use: [`SlotKey::list`].
    pub list: u32,
    /// Slots `0..count` of the list are filled; 0 means no endpoints.
    pub count: u32,
    pub flags: u32,
    /// ClientIP affinity timeout, seconds.
    pub affinity_timeout: u32,
    /// Non-zero: the tc path picks backends by Maglev consistent hashing,
    /// from the list's table of this (prime) size in [`maps::MAGLEV`].
    pub maglev_size: u32,
}

/// A backend list's slot (`HAWSER_SLOTS`), or an entry of its Maglev
/// table (`HAWSER_MAGLEV`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub list: u32,
    pub slot: u32,
}

/// The Maglev hash of a connection: its source and destination port and
/// protocol, not the node address it arrived at, so every node maps a
/// client's connection to the same backend. Shared by the programs and the
/// tests.
#[inline(always)]
pub fn maglev_flow_hash(flow: &FlowKey) -> u32 {
    let mut hash: u32 = 0x9e37_79b9;
    for word in [flow.src_ip, (u32::from(flow.src_port) << 16) | u32::from(flow.dst_port), u32::from(flow.proto)] {
        hash ^= word;
        hash = hash.wrapping_mul(0x85eb_ca6b);
        hash ^= hash >> 13;
        hash = hash.wrapping_mul(0xc2b2_ae35);
        hash ^= hash >> 16;
    }
    hash
}

/// [`Backend::flags`]: the backend is a pod on this node.
pub const BACKEND_LOCAL: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    /// IPv4, network byte order.
    pub ip: u32,
    /// Network byte order.
    pub port: u16,
    pub flags: u8,
    pub pad: u8,
}

/// Who an affinity entry is for: a client IP (tc path) or a network
/// namespace cookie (socket path, where no source address exists yet at
/// `connect()`; Cilium keys socket-level affinity the same way).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityKey {
    pub client: u64,
    pub service: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    pub backend: u32,
    pub pad: u32,
    /// `bpf_ktime_get_ns` of the last use.
    pub last_used_ns: u64,
}

/// A packet's 5-tuple as the tc programs see it (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub src_ip: u32,
    pub dst_ip: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// [`FlowNat::flags`]: after rewriting, the packet leaves through a FIB
/// lookup and redirect (its new source is this node, so the kernel would
/// drop it as a martian if it were passed up).
pub const FLOW_REDIRECT: u32 = 1;
/// [`FlowNat::flags`]: a FIN went this way; when the other direction's
/// FIN comes, both entries go (as on a RST), so ended connections free
/// their SNAT ports instead of waiting for LRU eviction.
pub const FLOW_FIN: u32 = 1 << 1;

/// What to write into a packet of a tracked NodePort connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowNat {
    pub src_ip: u32,
    pub dst_ip: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub flags: u32,
}

/// A socket's view of a backend it was connected or sent to, so replies and
/// `getpeername()` show the service address instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockRevKey {
    pub cookie: u64,
    pub backend_ip: u32,
    pub backend_port: u16,
    pub pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockRev {
    pub ip: u32,
    pub port: u16,
    pub pad: u16,
}

/// The node's facts the tc programs need (one entry, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The node address on the underlay interface: the SNAT source for
    /// NodePort traffic sent on to another node's backend.
    pub node_ip: u32,
    /// SNAT ports are taken from `snat_port_min..=snat_port_max` (host
    /// byte order).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: every type is `repr(C)`, `Copy`, made of plain integers with
    // explicit padding fields, so any bit pattern is valid.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for SlotKey {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for AffinityKey {}
    unsafe impl aya::Pod for Affinity {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowNat {}
    unsafe impl aya::Pod for SockRevKey {}
    unsafe impl aya::Pod for SockRev {}
    unsafe impl aya::Pod for Config {}
}

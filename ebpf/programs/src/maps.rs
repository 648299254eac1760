//! Every map the programs use, in one place. All are pinned by name under
//! the agent's pin directory, so an agent restart re-opens them with their
//! contents instead of starting empty.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LruHashMap};
use hawser_ebpf_common::maps::*;
use hawser_ebpf_common::{Affinity, AffinityKey, Backend, Config, FlowKey, FlowNat, Service, ServiceKey, SlotKey, SockRev, SockRevKey};

#[map(name = "HAWSER_SVC")]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::pinned(MAX_SERVICES, NO_PREALLOC);

#[map(name = "HAWSER_SLOTS")]
pub static SLOTS: HashMap<SlotKey, u32> = HashMap::pinned(MAX_SLOTS, NO_PREALLOC);

/// Maglev tables, per backend list: (list, index) → backend id.
#[map(name = "HAWSER_MAGLEV")]
pub static MAGLEV: HashMap<SlotKey, u32> = HashMap::pinned(MAX_MAGLEV, NO_PREALLOC);

#[map(name = "HAWSER_BACKENDS")]
pub static BACKENDS: HashMap<u32, Backend> = HashMap::pinned(MAX_BACKENDS, NO_PREALLOC);

#[map(name = "HAWSER_AFFINITY")]
pub static AFFINITY: LruHashMap<AffinityKey, Affinity> = LruHashMap::pinned(MAX_AFFINITY, 0);

/// NodePort connections, both directions: a packet's 5-tuple → what to
/// write into it.
#[map(name = "HAWSER_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowNat> = LruHashMap::pinned(MAX_FLOWS, 0);

#[map(name = "HAWSER_SOCKREV")]
pub static SOCK_REVNAT: LruHashMap<SockRevKey, SockRev> = LruHashMap::pinned(MAX_SOCK_REVNAT, 0);

/// Network namespace cookies of this node's host and its pods: the socket
/// programs see every process on the machine (they hang on the root
/// cgroup) and leave alone the sockets of other nodes sharing the kernel,
/// as the test hosts in network namespaces do.
///
/// An LRU: every balanced `connect()` refreshes its namespace, so the
/// entries of pods long gone are the ones that make room.
#[map(name = "HAWSER_NETNS")]
pub static NETNS: LruHashMap<u64, u8> = LruHashMap::pinned(MAX_NETNS, 0);

#[map(name = "HAWSER_CONFIG")]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

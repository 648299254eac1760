//! Choosing a backend for a service: ClientIP affinity first, then a random
//! slot of the service's current backend list, or (tc path, when the agent
//! built one) the list's Maglev table.

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use hawser_ebpf_common::{Affinity, AffinityKey, Backend, FlowKey, SERVICE_AFFINITY, Service, ServiceKey, SlotKey, maglev_flow_hash};

use crate::maps::{AFFINITY, BACKENDS, MAGLEV, SERVICES, SLOTS};

/// The service entry for `key`, if it is a service address.
#[inline(always)]
pub fn service(key: &ServiceKey) -> Option<Service> {
    // SAFETY: a copy is taken at once; the map is BPF_F_NO_PREALLOC, so a
    // concurrent delete cannot alias the element while we read it.
    unsafe { SERVICES.get(key) }.copied()
}

/// A backend of `service` for `client` (a client address, or a network
/// namespace cookie at the socket layer): `None` when the service has no
/// endpoints or its list changed under us.
#[inline(always)]
pub fn select(service: &Service, client: u64) -> Option<(u32, Backend)> {
    if service.count == 0 {
        return None;
    }
    let affinity = service.flags & SERVICE_AFFINITY != 0;
    let key = AffinityKey { client, service: service.id, pad: 0 };
    // SAFETY: helpers without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if affinity {
        // SAFETY: copied at once (an LRU entry may be recycled later).
        if let Some(entry) = unsafe { AFFINITY.get(&key) }.copied() {
            let timeout_ns = u64::from(service.affinity_timeout) * 1_000_000_000;
            // The backend must still exist: ids are never reused, so a
            // present id is the same backend it was.
            if now.wrapping_sub(entry.last_used_ns) <= timeout_ns
                && let Some(backend) = backend(entry.backend)
            {
                let _ = AFFINITY.insert(&key, &Affinity { last_used_ns: now, ..entry }, 0);
                return Some((entry.backend, backend));
            }
        }
    }
    // SAFETY: as above.
    let slot = unsafe { bpf_get_prandom_u32() } % service.count;
    // SAFETY: copied at once.
    let id = unsafe { SLOTS.get(&SlotKey { list: service.list, slot }) }.copied()?;
    let chosen = backend(id)?;
    if affinity {
        let _ = AFFINITY.insert(&key, &Affinity { backend: id, pad: 0, last_used_ns: now }, 0);
    }
    Some((id, chosen))
}

/// A backend of `service` for the connection `flow` by Maglev consistent
/// hashing: the same connection maps to the same backend on every node,
/// and a backend change moves few connections. ClientIP affinity, when
/// set, still comes first.
#[inline(always)]
pub fn select_for_flow(service: &Service, flow: &FlowKey) -> Option<(u32, Backend)> {
    if service.maglev_size == 0 || service.flags & SERVICE_AFFINITY != 0 || service.count == 0 {
        return select(service, u64::from(flow.src_ip));
    }
    let slot = maglev_flow_hash(flow) % service.maglev_size;
    // SAFETY: copied at once from a BPF_F_NO_PREALLOC map.
    let id = unsafe { MAGLEV.get(&SlotKey { list: service.list, slot }) }.copied()?;
    Some((id, backend(id)?))
}

#[inline(always)]
fn backend(id: u32) -> Option<Backend> {
    // SAFETY: copied at once from a BPF_F_NO_PREALLOC map.
    unsafe { BACKENDS.get(&id) }.copied()
}

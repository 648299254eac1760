//! From the proxy's desired state to map writes: the diff, and its order.
//!
//! Each service port becomes service keys (its cluster IP, and each node
//! address with its NodePort, once per [origin](hawser_ebpf_common::ServiceKey::origin)),
//! each pointing at a backend list. A sync writes only what differs from
//! what the maps hold, in an order that keeps every key valid at every
//! moment: new backends, then a new list's slots, then the service entry
//! flipped to the new list, then the old list's slots and unused backends
//! deleted. A list is never rewritten in place.

use super::maglev;
use super::maps::{Contents, MapsError, ProxyMaps};
use crate::proxy::state::{Endpoint, Protocol, ProxyState, ServicePort};
use crate::proxy::{Changes, state::ServicePortName};
use hawser_ebpf_common::{
    Backend, IPPROTO_TCP, IPPROTO_UDP, ORIGIN_NODE, ORIGIN_WIRE, SERVICE_AFFINITY, SERVICE_EXTERNAL, SERVICE_LOCAL_ONLY, Service,
    ServiceKey, SlotKey, maps,
};
use hawser_runtime::ObjectKey;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// Where writes go: the pinned maps, or a recorder in tests.
pub trait MapWriter {
    fn set_service(&mut self, key: &ServiceKey, value: &Service) -> Result<(), MapsError>;
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), MapsError>;
    fn set_slot(&mut self, key: &SlotKey, backend: u32) -> Result<(), MapsError>;
    fn remove_slot(&mut self, key: &SlotKey) -> Result<(), MapsError>;
    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), MapsError>;
    fn remove_backend(&mut self, id: u32) -> Result<(), MapsError>;
    fn set_maglev(&mut self, key: &SlotKey, backend: u32) -> Result<(), MapsError>;
    fn remove_maglev(&mut self, key: &SlotKey) -> Result<(), MapsError>;
    /// Makes every write so far visible, in order (backends, slots and
    /// Maglev entries, service entries); deletions come only after.
    fn flush(&mut self) -> Result<(), MapsError> {
        Ok(())
    }
}

fn update(op: &'static str, map: &'static str) -> impl FnOnce(aya::maps::MapError) -> MapsError {
    move |source| MapsError::Update { op, map, source }
}

impl MapWriter for ProxyMaps {
    fn set_service(&mut self, key: &ServiceKey, value: &Service) -> Result<(), MapsError> {
        self.pending.services.push((*key, *value));
        Ok(())
    }
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), MapsError> {
        self.services.remove(key).map_err(update("deleting", maps::SERVICES))
    }
    fn set_slot(&mut self, key: &SlotKey, backend: u32) -> Result<(), MapsError> {
        self.pending.slots.push((*key, backend));
        Ok(())
    }
    fn remove_slot(&mut self, key: &SlotKey) -> Result<(), MapsError> {
        self.slots.remove(key).map_err(update("deleting", maps::SLOTS))
    }
    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), MapsError> {
        self.pending.backends.push((id, *backend));
        Ok(())
    }
    fn remove_backend(&mut self, id: u32) -> Result<(), MapsError> {
        self.backends.remove(&id).map_err(update("deleting", maps::BACKENDS))
    }
    fn set_maglev(&mut self, key: &SlotKey, backend: u32) -> Result<(), MapsError> {
        self.pending.maglev.push((*key, backend));
        Ok(())
    }
    fn remove_maglev(&mut self, key: &SlotKey) -> Result<(), MapsError> {
        self.maglev.remove(key).map_err(update("deleting", maps::MAGLEV))
    }
    fn flush(&mut self) -> Result<(), MapsError> {
        ProxyMaps::flush(self)
    }
}

/// One service key as the desired state wants it (borrowing the state:
/// a full sync at 10,000 services builds 20,000 of these).
#[derive(Clone, Debug, PartialEq, Eq)]
struct WantedKey<'a> {
    owner: &'a ObjectKey,
    port: &'a ServicePortName,
    flags: u32,
    affinity_timeout: u32,
    backends: Vec<Backend>,
    /// The Maglev table size its list needs (0: none).
    maglev_size: u32,
}

/// The service keys `port` needs on a node with addresses `node_ips`;
/// `maglev`: the NodePort keys for outside traffic get Maglev tables.
fn wanted_keys<'a>(
    port: &'a ServicePort,
    node_ips: &[Ipv4Addr],
    maglev: bool,
    owner: &'a ObjectKey,
    out: &mut BTreeMap<ServiceKey, WantedKey<'a>>,
) {
    let proto = match port.name.protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
        // SCTP is not balanced by the socket and tc programs.
        _ => return,
    };
    let (affinity, affinity_timeout) = match port.affinity_timeout {
        Some(timeout) => (SERVICE_AFFINITY, timeout),
        None => (0, 0),
    };
    let mut add = |ip: Ipv4Addr, service_port: u16, origin: u8, flags: u32, endpoints: Vec<&Endpoint>| {
        let key = ServiceKey { ip: u32::from(ip).to_be(), port: service_port.to_be(), proto, origin };
        let backends: Vec<Backend> = endpoints.iter().map(|e| backend(e)).collect();
        let maglev_size =
            if maglev && origin == ORIGIN_WIRE && flags & SERVICE_NODE_PORT != 0 { maglev::table_size(backends.len()) } else { 0 };
        let flags = (flags & !SERVICE_NODE_PORT) | affinity;
        let wanted = WantedKey { owner, port: &port.name, flags, affinity_timeout, backends, maglev_size };
        out.insert(key, wanted);
    };
    add(port.cluster_ip, port.port, ORIGIN_NODE, 0, port.internal_endpoints());
    // A cluster IP routed to this node from outside, as kube-proxy's
    // PREROUTING rules take it: any endpoint.
    add(port.cluster_ip, port.port, ORIGIN_WIRE, SERVICE_EXTERNAL, port.cluster_endpoints());
    if let Some(node_port) = port.node_port {
        let wire_flags = SERVICE_EXTERNAL | SERVICE_NODE_PORT | if port.external_local { SERVICE_LOCAL_ONLY } else { 0 };
        for &ip in node_ips {
            // The node's own connections to its NodePort go to any endpoint
            // whatever the external policy (kube-proxy does the same).
            add(ip, node_port, ORIGIN_NODE, 0, port.cluster_endpoints());
            add(ip, node_port, ORIGIN_WIRE, wire_flags, port.external_endpoints());
        }
    }
}

/// Marks a NodePort key inside [`wanted_keys`] only (never written).
const SERVICE_NODE_PORT: u32 = 1 << 31;

fn backend(endpoint: &Endpoint) -> Backend {
    Backend {
        ip: u32::from(endpoint.ip).to_be(),
        port: endpoint.port.to_be(),
        flags: if endpoint.local { hawser_ebpf_common::BACKEND_LOCAL } else { 0 },
        pad: 0,
    }
}

/// What the maps hold, kept in step with every write, with the reference
/// counts that say when a list or a backend is no longer used.
#[derive(Debug)]
pub struct Table {
    services: BTreeMap<ServiceKey, Service>,
    /// The keys each Service made; keys found at start have no owner until
    /// the first (full) sync claims or deletes them.
    keys_of: HashMap<ObjectKey, BTreeSet<ServiceKey>>,
    lists: HashMap<u32, Vec<u32>>,
    /// Maglev table sizes of the lists that have one.
    maglev_sizes: HashMap<u32, u32>,
    /// Complete lists by content (backends, Maglev table size).
    by_content: HashMap<(Vec<Backend>, u32), u32>,
    /// Whether NodePort lists for outside traffic get Maglev tables.
    maglev: bool,
    /// Service keys per list.
    list_refs: HashMap<u32, usize>,
    backends: HashMap<u32, Backend>,
    backend_ids: HashMap<Backend, u32>,
    /// List slots per backend.
    backend_refs: HashMap<u32, usize>,
    next_list: u32,
    next_backend: u32,
    next_service: u32,
}

/// List id 0 is the empty list: a service without endpoints.
const EMPTY_LIST: u32 = 0;

impl Default for Table {
    /// The table of empty maps; ids start at 1 (0 is the empty list).
    fn default() -> Self {
        Table {
            services: BTreeMap::new(),
            keys_of: HashMap::new(),
            lists: HashMap::new(),
            maglev_sizes: HashMap::new(),
            by_content: HashMap::new(),
            maglev: false,
            list_refs: HashMap::new(),
            backends: HashMap::new(),
            backend_ids: HashMap::new(),
            backend_refs: HashMap::new(),
            next_list: 1,
            next_backend: 1,
            next_service: 1,
        }
    }
}

/// How many map entries a sync wrote and deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub written: usize,
    pub deleted: usize,
}

impl Table {
    /// The table of empty maps; `maglev`: NodePort backend lists for
    /// outside traffic get Maglev tables.
    pub fn new(maglev: bool) -> Self {
        Table { maglev, ..Table::default() }
    }

    /// The table of maps that already hold `contents` (a restarted agent
    /// takes over from its predecessor's maps instead of rewriting them).
    pub fn from_contents(contents: Contents, maglev: bool) -> Self {
        let mut table = Table::new(maglev);
        for key in contents.maglev.keys() {
            let size = table.maglev_sizes.entry(key.list).or_default();
            *size = (*size).max(key.slot + 1);
        }
        let mut lists: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
        for (slot, backend) in &contents.slots {
            lists.entry(slot.list).or_default().push((slot.slot, *backend));
        }
        for (id, mut slots) in lists {
            slots.sort();
            let ids: Vec<u32> = slots.into_iter().map(|(_, backend)| backend).collect();
            for backend in &ids {
                *table.backend_refs.entry(*backend).or_default() += 1;
            }
            table.lists.insert(id, ids);
        }
        for (id, backend) in contents.backends {
            table.backend_ids.insert(backend, id);
            table.backends.insert(id, backend);
        }
        for service in contents.services.values() {
            *table.list_refs.entry(service.list).or_default() += 1;
        }
        let lists: Vec<u32> = table.lists.keys().copied().collect();
        for list in lists {
            let content = (table.list_backends(list), table.maglev_size(list));
            if content.0.len() == table.lists[&list].len() {
                table.by_content.insert(content, list);
            }
        }
        table.next_list = table.lists.keys().max().map_or(1, |max| max + 1);
        table.next_backend = table.backends.keys().max().map_or(1, |max| max + 1);
        table.next_service = contents.services.values().map(|s| s.id).max().map_or(1, |max| max + 1);
        table.services = contents.services;
        table
    }

    /// Applies `state` for the services in `changes` (all when full).
    pub fn sync(
        &mut self,
        maps: &mut dyn MapWriter,
        state: &ProxyState,
        changes: &Changes,
        node_ips: &[Ipv4Addr],
    ) -> Result<SyncCounts, MapsError> {
        let mut wanted = BTreeMap::new();
        let owners: Vec<&ObjectKey> = if changes.full { state.services.keys().collect() } else { changes.services.iter().collect() };
        for &owner in &owners {
            for port in state.service(owner) {
                wanted_keys(port, node_ips, self.maglev, owner, &mut wanted);
            }
        }
        let stale: Vec<ServiceKey> = if changes.full {
            self.services.keys().filter(|key| !wanted.contains_key(*key)).copied().collect()
        } else {
            owners.iter().filter_map(|owner| self.keys_of.get(*owner)).flatten().filter(|key| !wanted.contains_key(*key)).copied().collect()
        };
        // One affinity id per service port, kept from the maps when any of
        // its keys is there.
        let mut ids: HashMap<&ServicePortName, u32> = HashMap::new();
        for (key, want) in &wanted {
            if let Some(old) = self.services.get(key) {
                ids.entry(want.port).or_insert(old.id);
            }
        }
        let mut counts = SyncCounts::default();
        let mut retired_lists = BTreeSet::new();
        for (key, want) in &wanted {
            let old = self.services.get(key).copied();
            let list = match old {
                Some(old) if self.list_is(old.list, &want.backends) && self.maglev_size(old.list) == want.maglev_size => old.list,
                // Lists are never changed once written, so keys wanting the
                // same backends (and Maglev table) share one.
                _ => match self.by_content.get(&(want.backends.clone(), want.maglev_size)) {
                    Some(list) => *list,
                    None => self.write_list(maps, &want.backends, want.maglev_size, &mut counts)?,
                },
            };
            let id = *ids.entry(want.port).or_insert_with(|| {
                self.next_service += 1;
                self.next_service - 1
            });
            let value = Service {
                id,
                list,
                count: want.backends.len() as u32,
                flags: want.flags,
                affinity_timeout: want.affinity_timeout,
                maglev_size: self.maglev_size(list),
            };
            if old != Some(value) {
                maps.set_service(key, &value)?;
                counts.written += 1;
                self.services.insert(*key, value);
                *self.list_refs.entry(list).or_default() += 1;
                if let Some(old) = old {
                    self.release_list(old.list, &mut retired_lists);
                }
            }
            match self.keys_of.get_mut(want.owner) {
                Some(keys) => {
                    keys.insert(*key);
                }
                None => {
                    self.keys_of.insert(want.owner.clone(), BTreeSet::from([*key]));
                }
            }
        }
        maps.flush()?;
        for key in stale {
            maps.remove_service(&key)?;
            counts.deleted += 1;
            if let Some(old) = self.services.remove(&key) {
                self.release_list(old.list, &mut retired_lists);
            }
        }
        for owner in &owners {
            if let Some(keys) = self.keys_of.get_mut(*owner) {
                keys.retain(|key| self.services.contains_key(key));
            }
        }
        if changes.full {
            self.keys_of.retain(|_, keys| !keys.is_empty());
            // Lists no key uses (left by a sync that failed half-way, here
            // or in the agent before a restart).
            retired_lists.extend(self.lists.keys().filter(|list| self.list_refs.get(*list).copied().unwrap_or(0) == 0));
        }
        self.delete_lists(maps, retired_lists, &mut counts)?;
        if changes.full {
            // Backends no slot names (written by a sync that failed before
            // its slots were).
            let orphans: Vec<u32> = self.backends.keys().filter(|id| !self.backend_refs.contains_key(id)).copied().collect();
            for id in orphans {
                maps.remove_backend(id)?;
                counts.deleted += 1;
                if let Some(backend) = self.backends.remove(&id) {
                    self.backend_ids.remove(&backend);
                }
            }
        }
        Ok(counts)
    }

    fn release_list(&mut self, list: u32, retired: &mut BTreeSet<u32>) {
        if let Some(refs) = self.list_refs.get_mut(&list) {
            *refs = refs.saturating_sub(1);
            if *refs == 0 {
                self.list_refs.remove(&list);
                retired.insert(list);
            }
        }
    }

    /// Deletes the slots of `lists`, then the backends only they used.
    fn delete_lists(&mut self, maps: &mut dyn MapWriter, lists: BTreeSet<u32>, counts: &mut SyncCounts) -> Result<(), MapsError> {
        // A list released earlier in the sync may have been taken up again.
        for list in lists.into_iter().filter(|list| *list != EMPTY_LIST && !self.list_refs.contains_key(list)) {
            let Some(backends) = self.lists.get(&list).cloned() else { continue };
            let content = (self.list_backends(list), self.maglev_size(list));
            if self.by_content.get(&content) == Some(&list) {
                self.by_content.remove(&content);
            }
            for index in 0..self.maglev_sizes.remove(&list).unwrap_or(0) {
                maps.remove_maglev(&SlotKey { list, slot: index })?;
                counts.deleted += 1;
            }
            for (slot, id) in backends.iter().enumerate() {
                maps.remove_slot(&SlotKey { list, slot: slot as u32 })?;
                counts.deleted += 1;
                let refs = self.backend_refs.entry(*id).or_default();
                *refs = refs.saturating_sub(1);
                if *refs == 0 {
                    self.backend_refs.remove(id);
                    maps.remove_backend(*id)?;
                    counts.deleted += 1;
                    if let Some(backend) = self.backends.remove(id) {
                        self.backend_ids.remove(&backend);
                    }
                }
            }
            self.lists.remove(&list);
        }
        Ok(())
    }

    fn maglev_size(&self, list: u32) -> u32 {
        self.maglev_sizes.get(&list).copied().unwrap_or(0)
    }

    /// Whether `list` holds exactly `backends`, in order.
    fn list_is(&self, list: u32, backends: &[Backend]) -> bool {
        if list == EMPTY_LIST {
            return backends.is_empty();
        }
        self.lists
            .get(&list)
            .is_some_and(|ids| ids.len() == backends.len() && ids.iter().map(|id| self.backends.get(id)).eq(backends.iter().map(Some)))
    }

    fn list_backends(&self, list: u32) -> Vec<Backend> {
        if list == EMPTY_LIST {
            return Vec::new();
        }
        self.lists.get(&list).map(|ids| ids.iter().filter_map(|id| self.backends.get(id).copied()).collect()).unwrap_or_default()
    }

    /// Writes a new list of `backends` (and any backend not yet known),
    /// with a Maglev table of `maglev_size` entries unless that is 0.
    fn write_list(
        &mut self,
        maps: &mut dyn MapWriter,
        backends: &[Backend],
        maglev_size: u32,
        counts: &mut SyncCounts,
    ) -> Result<u32, MapsError> {
        if backends.is_empty() {
            return Ok(EMPTY_LIST);
        }
        let list = self.next_list;
        self.next_list += 1;
        // Recorded before the writes: a list a failed sync left half-written
        // is unreferenced, and the next full sync deletes it.
        self.lists.insert(list, Vec::with_capacity(backends.len()));
        for (slot, backend) in backends.iter().enumerate() {
            let id = match self.backend_ids.get(backend) {
                Some(id) => *id,
                None => {
                    // Ids are never reused, so an affinity entry naming an id
                    // always means the backend it was made for.
                    let id = self.next_backend;
                    self.next_backend += 1;
                    maps.set_backend(id, backend)?;
                    counts.written += 1;
                    self.backends.insert(id, *backend);
                    self.backend_ids.insert(*backend, id);
                    id
                }
            };
            maps.set_slot(&SlotKey { list, slot: slot as u32 }, id)?;
            counts.written += 1;
            *self.backend_refs.entry(id).or_default() += 1;
            self.lists.get_mut(&list).expect("inserted above").push(id);
        }
        if maglev_size > 0 {
            self.maglev_sizes.insert(list, maglev_size);
            let ids = self.lists[&list].clone();
            for (index, chosen) in maglev::table(backends, maglev_size).into_iter().enumerate() {
                maps.set_maglev(&SlotKey { list, slot: index as u32 }, ids[chosen])?;
                counts.written += 1;
            }
        }
        self.by_content.insert((backends.to_vec(), maglev_size), list);
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::state::Endpoint;

    /// Map writes in order, applied to a model of the maps that checks,
    /// after every write, that each service entry leads to a complete list
    /// of existing backends: what the BPF programs may read at any moment.
    #[derive(Default)]
    struct Recorder {
        ops: Vec<String>,
        contents: Contents,
    }

    impl Recorder {
        fn check(&self) {
            for (key, service) in &self.contents.services {
                for slot in 0..service.count {
                    let id = self.contents.slots.get(&SlotKey { list: service.list, slot });
                    let id =
                        id.unwrap_or_else(|| panic!("{key:?} → list {} slot {slot} missing after {:?}", service.list, self.ops.last()));
                    assert!(self.contents.backends.contains_key(id), "{key:?} → backend {id} missing after {:?}", self.ops.last());
                }
                for index in 0..service.maglev_size {
                    let id = self.contents.maglev.get(&SlotKey { list: service.list, slot: index });
                    assert!(
                        id.is_some_and(|id| self.contents.backends.contains_key(id)),
                        "{key:?} → Maglev entry {index} after {:?}",
                        self.ops.last()
                    );
                }
            }
        }
    }

    impl MapWriter for Recorder {
        fn set_service(&mut self, key: &ServiceKey, value: &Service) -> Result<(), MapsError> {
            self.ops.push(format!("service {}:{} → list {}", Ipv4Addr::from(u32::from_be(key.ip)), u16::from_be(key.port), value.list));
            self.contents.services.insert(*key, *value);
            self.check();
            Ok(())
        }
        fn remove_service(&mut self, key: &ServiceKey) -> Result<(), MapsError> {
            self.ops.push(format!("-service {}", Ipv4Addr::from(u32::from_be(key.ip))));
            self.contents.services.remove(key);
            Ok(())
        }
        fn set_slot(&mut self, key: &SlotKey, backend: u32) -> Result<(), MapsError> {
            self.ops.push(format!("slot {}/{}", key.list, key.slot));
            self.contents.slots.insert(*key, backend);
            self.check();
            Ok(())
        }
        fn remove_slot(&mut self, key: &SlotKey) -> Result<(), MapsError> {
            self.ops.push(format!("-slot {}/{}", key.list, key.slot));
            self.contents.slots.remove(key);
            self.check();
            Ok(())
        }
        fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), MapsError> {
            self.ops.push(format!("backend {id}"));
            self.contents.backends.insert(id, *backend);
            Ok(())
        }
        fn remove_backend(&mut self, id: u32) -> Result<(), MapsError> {
            self.ops.push(format!("-backend {id}"));
            self.contents.backends.remove(&id);
            self.check();
            Ok(())
        }
        fn set_maglev(&mut self, key: &SlotKey, backend: u32) -> Result<(), MapsError> {
            self.ops.push(format!("maglev {}/{}", key.list, key.slot));
            self.contents.maglev.insert(*key, backend);
            Ok(())
        }
        fn remove_maglev(&mut self, key: &SlotKey) -> Result<(), MapsError> {
            self.contents.maglev.remove(key);
            self.check();
            Ok(())
        }
    }

    fn endpoint(last: u8) -> Endpoint {
        Endpoint { ip: Ipv4Addr::new(10, 244, 0, last), port: 8080, local: true, ready: true, serving: true, terminating: false }
    }

    fn state(services: &[(&str, u8, Vec<Endpoint>)]) -> ProxyState {
        let mut state = ProxyState::default();
        for (name, vip, endpoints) in services {
            let port = ServicePort::for_test(name, "http", Protocol::Tcp, Ipv4Addr::new(10, 96, 0, *vip), 80, endpoints.clone());
            state.set(ObjectKey::new("default", *name), vec![port]);
        }
        state
    }

    fn full() -> Changes {
        Changes { full: true, services: BTreeSet::new() }
    }

    fn only(name: &str) -> Changes {
        Changes { full: false, services: BTreeSet::from([ObjectKey::new("default", name)]) }
    }

    #[test]
    fn a_new_list_is_written_before_the_flip_and_the_old_one_deleted_after() {
        let (mut table, mut maps) = (Table::default(), Recorder::default());
        table.sync(&mut maps, &state(&[("web", 1, vec![endpoint(1), endpoint(2)])]), &full(), &[]).unwrap();
        maps.ops.clear();
        table.sync(&mut maps, &state(&[("web", 1, vec![endpoint(2), endpoint(3)])]), &only("web"), &[]).unwrap();
        // Each backend before the slot naming it; both keys (node and wire
        // origin) flipped to the one new list; the old list's slots and the
        // backend only it used go last.
        assert_eq!(
            maps.ops,
            [
                "slot 2/0",
                "backend 3",
                "slot 2/1",
                "service 10.96.0.1:80 → list 2",
                "service 10.96.0.1:80 → list 2",
                "-slot 1/0",
                "-backend 1",
                "-slot 1/1"
            ]
        );
    }

    #[test]
    fn a_partial_sync_touches_only_the_changed_services_entries() {
        let (mut table, mut maps) = (Table::default(), Recorder::default());
        let many: Vec<(String, u8)> = (1..=50).map(|i| (format!("s{i}"), i)).collect();
        let build = |changed: Option<Vec<Endpoint>>| {
            let services: Vec<(&str, u8, Vec<Endpoint>)> = many
                .iter()
                .map(|(name, vip)| {
                    let endpoints = if name == "s7" { changed.clone().unwrap_or(vec![endpoint(1)]) } else { vec![endpoint(1)] };
                    (name.as_str(), *vip, endpoints)
                })
                .collect();
            state(&services)
        };
        table.sync(&mut maps, &build(None), &full(), &[]).unwrap();
        let before = maps.contents.clone();
        table.sync(&mut maps, &build(Some(vec![])), &only("s7"), &[]).unwrap();
        let s7 = u32::from(Ipv4Addr::new(10, 96, 0, 7)).to_be();
        for (key, value) in &before.services {
            if key.ip != s7 {
                assert_eq!(maps.contents.services.get(key), Some(value));
            }
        }
        assert!(maps.contents.services.iter().filter(|(k, _)| k.ip == s7).all(|(_, v)| v.count == 0));
        // A full sync of the same state changes nothing.
        maps.ops.clear();
        table.sync(&mut maps, &build(Some(vec![])), &full(), &[]).unwrap();
        assert_eq!(maps.ops, Vec::<String>::new());
    }

    #[test]
    fn a_restarted_agent_takes_over_the_maps_without_writing() {
        let (mut table, mut maps) = (Table::default(), Recorder::default());
        let wanted = state(&[("a", 1, vec![endpoint(1), endpoint(2)]), ("b", 2, vec![endpoint(2)]), ("c", 3, vec![])]);
        table.sync(&mut maps, &wanted, &full(), &[Ipv4Addr::new(198, 51, 100, 11)]).unwrap();
        let mut restarted = Table::from_contents(maps.contents.clone(), false);
        maps.ops.clear();
        restarted.sync(&mut maps, &wanted, &full(), &[Ipv4Addr::new(198, 51, 100, 11)]).unwrap();
        assert_eq!(maps.ops, Vec::<String>::new());
        // And a service deleted while it was down goes, with what only it used.
        let fewer = state(&[("a", 1, vec![endpoint(1), endpoint(2)])]);
        restarted.sync(&mut maps, &fewer, &full(), &[Ipv4Addr::new(198, 51, 100, 11)]).unwrap();
        assert_eq!(maps.contents.services.len(), 2);
        assert_eq!(maps.contents.backends.len(), 2);
    }

    #[test]
    fn node_ports_get_keys_on_every_node_address_and_local_policy_only_local_endpoints() {
        let (mut table, mut maps) = (Table::default(), Recorder::default());
        let mut port = ServicePort::for_test(
            "np",
            "http",
            Protocol::Tcp,
            Ipv4Addr::new(10, 96, 0, 9),
            80,
            vec![endpoint(1), Endpoint { local: false, ..endpoint(2) }],
        );
        port.node_port = Some(30080);
        port.external_local = true;
        let mut wanted = ProxyState::default();
        wanted.set(ObjectKey::new("default", "np"), vec![port]);
        let nodes = [Ipv4Addr::new(198, 51, 100, 11), Ipv4Addr::new(10, 244, 0, 1)];
        table.sync(&mut maps, &wanted, &full(), &nodes).unwrap();
        // Cluster IP × 2 origins + 2 addresses × 2 origins.
        assert_eq!(maps.contents.services.len(), 6);
        for ip in nodes {
            let key = |origin| ServiceKey { ip: u32::from(ip).to_be(), port: 30080u16.to_be(), proto: IPPROTO_TCP, origin };
            assert_eq!(maps.contents.backends_of(&key(ORIGIN_NODE)).unwrap().len(), 2, "the node's own connections: any endpoint");
            assert_eq!(maps.contents.backends_of(&key(ORIGIN_WIRE)).unwrap(), vec![(Ipv4Addr::new(10, 244, 0, 1), 8080)]);
            assert_ne!(maps.contents.services[&key(ORIGIN_WIRE)].flags & SERVICE_LOCAL_ONLY, 0);
        }
    }

    #[test]
    fn with_maglev_node_ports_from_outside_get_a_complete_table_per_list() {
        let (mut table, mut maps) = (Table::new(true), Recorder::default());
        let mut port = ServicePort::for_test("np", "http", Protocol::Tcp, Ipv4Addr::new(10, 96, 0, 9), 80, vec![endpoint(1), endpoint(2)]);
        port.node_port = Some(30080);
        let mut wanted = ProxyState::default();
        wanted.set(ObjectKey::new("default", "np"), vec![port.clone()]);
        let node = [Ipv4Addr::new(198, 51, 100, 11)];
        table.sync(&mut maps, &wanted, &full(), &node).unwrap();
        let wire = ServiceKey { ip: u32::from(node[0]).to_be(), port: 30080u16.to_be(), proto: IPPROTO_TCP, origin: ORIGIN_WIRE };
        let service = maps.contents.services[&wire];
        assert_eq!(service.maglev_size, 211);
        assert_eq!(maps.contents.maglev.len(), 211);
        // Only that key has a table; the cluster IP and the node's own keys do not.
        assert_eq!(maps.contents.services.values().filter(|s| s.maglev_size > 0).count(), 1);
        // A third endpoint: a new list with a new table (checked complete at
        // every write by the recorder), the old table gone.
        port.endpoints.push(endpoint(3));
        wanted.set(ObjectKey::new("default", "np"), vec![port]);
        table.sync(&mut maps, &wanted, &only("np"), &node).unwrap();
        assert_eq!(maps.contents.services[&wire].maglev_size, 307);
        assert_eq!(maps.contents.maglev.len(), 307);
        // And a restarted agent adopts the table as it is.
        let mut restarted = Table::from_contents(maps.contents.clone(), true);
        maps.ops.clear();
        restarted.sync(&mut maps, &wanted, &full(), &node).unwrap();
        assert_eq!(maps.ops, Vec::<String>::new());
    }
}

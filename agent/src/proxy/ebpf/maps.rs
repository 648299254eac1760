//! The pinned maps the agent writes and reads: opened by pin path, so the
//! running agent, a restarted one and the tests all see the same objects.

use aya::maps::{Array, HashMap, IterableMap, Map, MapData, MapError};
use hawser_ebpf_common::{Backend, Config, Service, ServiceKey, SlotKey, maps};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("opening the pinned BPF map {path}: {source}")]
    Open { path: PathBuf, source: MapError },
    #[error("{op} in the BPF map {map}: {source}")]
    Update { op: &'static str, map: &'static str, source: MapError },
}

/// The maps the control side writes: services, backend slots, backends,
/// Maglev tables, and the node facts.
pub struct ProxyMaps {
    /// Writes waiting for [`ProxyMaps::flush`], in the order they must
    /// reach the kernel: backends, then slots and Maglev entries, then
    /// service entries.
    pub(super) pending: Pending,
    pub services: HashMap<MapData, ServiceKey, Service>,
    pub slots: HashMap<MapData, SlotKey, u32>,
    pub backends: HashMap<MapData, u32, Backend>,
    pub maglev: HashMap<MapData, SlotKey, u32>,
    pub config: Array<MapData, Config>,
}

/// The path of map `name` under `pin_dir`.
pub fn pin_path(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(name)
}

/// The map `name` pinned under `pin_dir`, as the aya type `T`.
pub fn open<T: TryFrom<Map, Error = MapError>>(pin_dir: &Path, name: &str) -> Result<T, MapsError> {
    let path = pin_path(pin_dir, name);
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Open { path: path.clone(), source })?;
    let map = Map::from_map_data(data).map_err(|source| MapsError::Open { path: path.clone(), source })?;
    map.try_into().map_err(|source| MapsError::Open { path, source })
}

impl ProxyMaps {
    /// Opens the maps pinned under `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            pending: Pending::default(),
            services: open(pin_dir, maps::SERVICES)?,
            slots: open(pin_dir, maps::SLOTS)?,
            backends: open(pin_dir, maps::BACKENDS)?,
            maglev: open(pin_dir, maps::MAGLEV)?,
            config: open(pin_dir, maps::CONFIG)?,
        })
    }

    /// Every entry of the three service maps, for a restarted agent to
    /// take over from and for tests to count.
    pub fn dump(&self) -> Result<Contents, MapsError> {
        let read = |map: &'static str, source| MapsError::Update { op: "reading", map, source };
        Ok(Contents {
            services: self.services.iter().collect::<Result<_, _>>().map_err(|e| read(maps::SERVICES, e))?,
            slots: self.slots.iter().collect::<Result<_, _>>().map_err(|e| read(maps::SLOTS, e))?,
            backends: self.backends.iter().collect::<Result<_, _>>().map_err(|e| read(maps::BACKENDS, e))?,
            maglev: self.maglev.iter().collect::<Result<_, _>>().map_err(|e| read(maps::MAGLEV, e))?,
        })
    }
}

/// A snapshot of the service maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents {
    pub services: std::collections::BTreeMap<ServiceKey, Service>,
    pub slots: std::collections::BTreeMap<SlotKey, u32>,
    pub backends: std::collections::BTreeMap<u32, Backend>,
    pub maglev: std::collections::BTreeMap<SlotKey, u32>,
}

impl Contents {
    /// The backend addresses a service key leads to, in slot order.
    pub fn backends_of(&self, key: &ServiceKey) -> Option<Vec<(Ipv4Addr, u16)>> {
        let service = self.services.get(key)?;
        (0..service.count)
            .map(|slot| {
                let id = self.slots.get(&SlotKey { list: service.list, slot })?;
                let backend = self.backends.get(id)?;
                Some((Ipv4Addr::from(u32::from_be(backend.ip)), u16::from_be(backend.port)))
            })
            .collect()
    }
}

/// Buffered writes of one sync.
#[derive(Default)]
pub(super) struct Pending {
    pub backends: Vec<(u32, Backend)>,
    pub slots: Vec<(SlotKey, u32)>,
    pub maglev: Vec<(SlotKey, u32)>,
    pub services: Vec<(ServiceKey, Service)>,
}

impl ProxyMaps {
    /// Writes what is pending, one `BPF_MAP_UPDATE_BATCH` per map, in the
    /// order that keeps every service entry valid.
    pub fn flush(&mut self) -> Result<(), MapsError> {
        let pending = std::mem::take(&mut self.pending);
        update_batch(self.backends.map(), &pending.backends, maps::BACKENDS)?;
        update_batch(self.slots.map(), &pending.slots, maps::SLOTS)?;
        update_batch(self.maglev.map(), &pending.maglev, maps::MAGLEV)?;
        update_batch(self.services.map(), &pending.services, maps::SERVICES)
    }
}

/// `BPF_MAP_UPDATE_BATCH` (Linux 5.6; aya 0.14 has no wrapper): one
/// syscall for many entries instead of one each, which is most of a cold
/// full sync's time at 10,000 services.
fn update_batch<K: aya::Pod, V: aya::Pod>(map: &MapData, entries: &[(K, V)], name: &'static str) -> Result<(), MapsError> {
    use std::os::fd::{AsFd, AsRawFd};
    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    if entries.is_empty() {
        return Ok(());
    }
    let keys: Vec<K> = entries.iter().map(|(k, _)| *k).collect();
    let values: Vec<V> = entries.iter().map(|(_, v)| *v).collect();
    let mut done = 0;
    while done < entries.len() {
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done..].as_ptr() as u64,
            count: (entries.len() - done) as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: bpf(2) with an attr of the kernel's layout whose arrays
        // hold `count` keys and values of the map's sizes.
        let rc =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_BATCH, &mut attr as *mut BatchAttr, std::mem::size_of::<BatchAttr>()) };
        if rc != 0 {
            let source = std::io::Error::last_os_error();
            return Err(MapsError::Update {
                op: "batch-writing",
                map: name,
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError { call: "bpf_map_update_batch", io_error: source }),
            });
        }
        // The kernel says how many it wrote; a short count is a partial
        // batch to continue from.
        done += (attr.count as usize).max(1);
    }
    Ok(())
}

//! The pinned maps the agent writes and reads: opened by pin path, so the
//! running agent, a restarted one and the tests all see the same objects.

use aya::maps::{Array, HashMap, Map, MapData, MapError};
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

//! The eBPF backend: services balanced at the socket (`connect()`,
//! `sendmsg()`) for everything on the node, and by tc programs on the
//! underlay interface for NodePort traffic from outside; the programs are
//! in `ebpf/programs`, their map types in `hawser-ebpf-common`.
//!
//! - [`datapath`]: load, attach and pin; take over from a previous agent.
//! - [`maps`]: the pinned maps, opened by path.
//! - [`table`]: desired state → the map writes that differ, in a safe order.
//! - [`maglev`]: Maglev lookup tables for NodePorts (`--ebpf-lb-algorithm maglev`).
//! - [`scope`]: which network namespaces' sockets this agent balances.
//!
//! A sync costs only the map entries of the services that changed, so it
//! takes the same time with 1 service as with 10,000; the data path does a
//! hash lookup per `connect()` (not per packet) whatever the count.

pub mod datapath;
pub mod maglev;
pub mod maps;
pub mod scope;
pub mod table;

pub use datapath::{DEFAULT_PIN_DIR, DataPath, DataPathConfig, DataPathError};

use super::state::ProxyState;
use super::{Changes, Proxier, ProxyError};
use table::Table;

/// The [`Proxier`] over a loaded [`DataPath`].
pub struct EbpfProxier {
    datapath: DataPath,
    table: Table,
    maglev: bool,
}

impl EbpfProxier {
    /// Takes over what the maps hold (a restarted agent's predecessor's
    /// work), so the first sync writes only what changed meanwhile.
    /// `maglev`: NodePorts reached from outside pick backends by Maglev
    /// consistent hashing instead of at random.
    pub fn new(datapath: DataPath, maglev: bool) -> Result<Self, ProxyError> {
        let contents = datapath.maps.dump().map_err(|e| ProxyError::Ebpf(e.to_string()))?;
        tracing::info!(
            services = contents.services.len(),
            slots = contents.slots.len(),
            backends = contents.backends.len(),
            underlay = datapath.underlay,
            "eBPF proxy: taking over the pinned maps"
        );
        Ok(Self { table: Table::from_contents(contents, maglev), datapath, maglev })
    }
}

#[async_trait::async_trait]
impl Proxier for EbpfProxier {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    async fn sync(&mut self, state: &ProxyState, changes: &Changes) -> Result<(), ProxyError> {
        let synced = self.table.sync(&mut self.datapath.maps, state, changes, &self.datapath.node_ips);
        let counts = match synced {
            Ok(counts) => counts,
            Err(e) => {
                // The table may now believe writes that did not happen:
                // read the maps again, so the retry (a full sync) diffs
                // against what the kernel really holds.
                self.datapath.maps.pending = Default::default();
                match self.datapath.maps.dump() {
                    Ok(contents) => self.table = Table::from_contents(contents, self.maglev),
                    Err(dump) => tracing::warn!(error = %dump, "eBPF proxy: re-reading the maps after a failed sync"),
                }
                return Err(ProxyError::Ebpf(e.to_string()));
            }
        };
        tracing::debug!(written = counts.written, deleted = counts.deleted, "eBPF proxy: map entries changed");
        Ok(())
    }
}

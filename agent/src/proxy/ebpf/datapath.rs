//! Loading the programs, attaching them and pinning everything under the
//! pin directory (`/sys/fs/bpf/hawser` by default):
//!
//! ```text
//! <pin dir>/HAWSER_SVC, HAWSER_SLOTS, ...   the maps (aya pins them by name)
//! <pin dir>/links/sock_connect4, ...        the cgroup links
//! <pin dir>/links/nodeport_ingress, ...     the tc (TCX) links
//! ```
//!
//! A restarted agent re-opens the pinned maps (their contents included)
//! and replaces the programs under the pinned links: a tc link is updated
//! in place (`BPF_LINK_UPDATE`); a cgroup link is replaced by attaching the
//! new one first and renaming its pin over the old one, so for a moment
//! both run (the second sees a backend address and does nothing) and never
//! neither. Nothing is detached, and no map is emptied.

use super::maps::{MapsError, ProxyMaps};
use super::scope::SocketScope;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::TcAttachType;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, SchedClassifier};
use aya::{Ebpf, EbpfLoader};
use hawser_ebpf_common::{Config, maps};
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The programs, as built by `agent/build.rs` from `ebpf/programs`.
pub static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hawser-ebpf"));

/// Where the proxy pins its maps and links unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/hawser";

const SOCKET_PROGRAMS: [&str; 4] = ["sock_connect4", "sock_sendmsg4", "sock_recvmsg4", "sock_peername4"];
const TC_PROGRAMS: [(&str, TcAttachType); 2] = [("nodeport_ingress", TcAttachType::Ingress), ("nodeport_egress", TcAttachType::Egress)];

/// SNAT source ports for NodePort connections sent on to another node:
/// above the kernel's ephemeral range (32768–60999), so no local socket's
/// tuple is taken.
const SNAT_PORTS: (u16, u16) = (61000, 65535);

#[derive(Debug, thiserror::Error)]
pub enum DataPathError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("loading the BPF programs: {}", with_sources(.0))]
    Load(#[from] aya::EbpfError),
    #[error("{what}: {}", with_sources(.source))]
    Program { what: String, source: aya::programs::ProgramError },
    #[error("pinning {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("no interface of this node has the address {0} (--node-ip)")]
    NoUnderlay(Ipv4Addr),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> DataPathError {
    let what = what.into();
    move |source| DataPathError::Io { what, source }
}

fn program_error(what: impl Into<String>) -> impl FnOnce(aya::programs::ProgramError) -> DataPathError {
    let what = what.into();
    move |source| DataPathError::Program { what, source }
}

/// What the data path needs to know about the node.
#[derive(Clone, Debug)]
pub struct DataPathConfig {
    pub pin_dir: PathBuf,
    /// The node's address on its underlay interface (`--node-ip`): the tc
    /// programs go on the interface that has it.
    pub node_ip: Ipv4Addr,
}

/// The loaded and attached programs and the maps the proxier writes.
pub struct DataPath {
    pub maps: ProxyMaps,
    pub scope: std::sync::Arc<SocketScope>,
    /// Every IPv4 address of the node but loopback: where NodePorts answer.
    pub node_ips: Vec<Ipv4Addr>,
    pub underlay: String,
    /// Holds the programs' file descriptors; the links are pinned, so
    /// dropping it detaches nothing.
    _ebpf: Ebpf,
}

impl DataPath {
    /// Loads and attaches everything, taking over what a previous agent
    /// pinned under `config.pin_dir`. Fails on a kernel without what the
    /// programs need (the caller falls back to iptables).
    pub fn load(config: &DataPathConfig) -> Result<Self, DataPathError> {
        let addresses = node_addresses().map_err(io_error("listing the node's addresses"))?;
        let underlay = addresses
            .iter()
            .find(|(_, ip)| *ip == config.node_ip)
            .map(|(name, _)| name.clone())
            .ok_or(DataPathError::NoUnderlay(config.node_ip))?;
        let node_ips: Vec<Ipv4Addr> = addresses.iter().map(|(_, ip)| *ip).filter(|ip| !ip.is_loopback()).collect();
        ensure_bpffs(&config.pin_dir)?;
        let links = config.pin_dir.join("links");
        std::fs::create_dir_all(&links).map_err(io_error(format!("creating the BPF pin directory {}", links.display())))?;
        let mut ebpf = EbpfLoader::new().default_map_pin_directory(&config.pin_dir).load(PROGRAMS)?;

        let cgroup_path = crate::runtime::process::cgroup::cgroup2_mount().map_err(io_error("finding the cgroup2 mount"))?;
        let cgroup = File::open(&cgroup_path).map_err(io_error(format!("opening the root cgroup {}", cgroup_path.display())))?;
        for name in SOCKET_PROGRAMS {
            let program: &mut CgroupSockAddr = program_mut(&mut ebpf, name)?;
            program.load().map_err(program_error(format!("loading {name}")))?;
            // A cgroup link always allows other programs beside it (several
            // agents share the root cgroup in the test hosts).
            let id = program
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(program_error(format!("attaching {name} to {}", cgroup_path.display())))?;
            let link: FdLink = program
                .take_link(id)
                .map_err(program_error(format!("taking the link of {name}")))?
                .try_into()
                .map_err(|e| DataPathError::Pin { path: links.join(name), reason: with_sources(&e) })?;
            replace_pin(link, &links.join(name))?;
        }
        for (name, attach_type) in TC_PROGRAMS {
            let program: &mut SchedClassifier = program_mut(&mut ebpf, name)?;
            program.load().map_err(program_error(format!("loading {name}")))?;
            let pin = links.join(name);
            let id = match PinnedLink::from_pin(&pin) {
                Ok(old) => {
                    let link =
                        FdLink::from(old).try_into().map_err(|e| DataPathError::Pin { path: pin.clone(), reason: with_sources(&e) })?;
                    program.attach_to_link(link).map_err(program_error(format!("replacing the program of {}", pin.display())))?
                }
                Err(_) => program.attach(&underlay, attach_type).map_err(program_error(format!("attaching {name} to {underlay}")))?,
            };
            let link: FdLink = program
                .take_link(id)
                .map_err(program_error(format!("taking the link of {name}")))?
                .try_into()
                .map_err(|e| DataPathError::Pin { path: pin.clone(), reason: with_sources(&e) })?;
            replace_pin(link, &pin)?;
        }

        let mut maps = ProxyMaps::open(&config.pin_dir)?;
        let node = Config { node_ip: u32::from(config.node_ip).to_be(), snat_port_min: SNAT_PORTS.0, snat_port_max: SNAT_PORTS.1 };
        maps.config.set(0, node, 0).map_err(|source| MapsError::Update { op: "writing", map: maps::CONFIG, source })?;
        let scope = std::sync::Arc::new(SocketScope::new(super::maps::open(&config.pin_dir, maps::NETNS)?));
        scope.admit(None).map_err(io_error("adding the node's network namespace to the socket balancer"))?;
        Ok(Self { maps, scope, node_ips, underlay, _ebpf: ebpf })
    }
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, DataPathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| DataPathError::Pin { path: PathBuf::from(name), reason: "no such program in the BPF object".to_string() })?;
    program.try_into().map_err(program_error(format!("{name} has an unexpected program type")))
}

/// `error` and its sources (aya's errors name the call, their source the errno).
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(&format!(": {next}"));
        source = next.source();
    }
    text
}

/// bpffs's `statfs` magic number.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs lives when it is mounted at all.
const BPFFS: &str = "/sys/fs/bpf";

/// Makes sure `pin_dir` is on a bpffs: mounts one at `/sys/fs/bpf` where
/// the system did not (as Cilium does), else refuses a directory elsewhere
/// that is not on one.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), DataPathError> {
    let is_bpffs = |path: &Path| -> io::Result<bool> {
        let stat = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
        Ok(stat.filesystem_type().0 as i64 == BPF_FS_MAGIC)
    };
    // Agents starting together on one machine (the test hosts) must not
    // each mount one: a second mount would hide the first one's pins.
    let lock = File::create("/run/hawser-bpffs.lock").map_err(io_error("creating /run/hawser-bpffs.lock"))?;
    lock.lock().map_err(io_error("locking /run/hawser-bpffs.lock"))?;
    let ancestor = pin_dir.ancestors().find(|dir| dir.is_dir()).unwrap_or(Path::new("/"));
    if is_bpffs(ancestor).map_err(io_error(format!("checking the file system of {}", ancestor.display())))? {
        return Ok(());
    }
    if !pin_dir.starts_with(BPFFS) {
        return Err(DataPathError::Io {
            what: format!("the BPF pin directory {}", pin_dir.display()),
            source: io::Error::other(format!("{} is not on a bpffs", ancestor.display())),
        });
    }
    std::fs::create_dir_all(BPFFS).map_err(io_error(format!("creating {BPFFS}")))?;
    rustix::mount::mount("bpffs", BPFFS, "bpf", rustix::mount::MountFlags::empty(), None)
        .map_err(io::Error::from)
        .map_err(io_error(format!("mounting a bpffs at {BPFFS}")))?;
    tracing::info!(path = BPFFS, "mounted a bpffs for the eBPF proxy's pins");
    Ok(())
}

/// Pins `link` at `path`, atomically replacing (and so detaching) whatever
/// link was pinned there.
fn replace_pin(link: FdLink, path: &Path) -> Result<(), DataPathError> {
    // bpffs refuses names with a dot.
    let staging = path.with_file_name(format!("{}_new", path.file_name().and_then(|n| n.to_str()).unwrap_or("link")));
    let _ = std::fs::remove_file(&staging);
    let pinned = link.pin(&staging).map_err(|e| DataPathError::Pin { path: staging.clone(), reason: with_sources(&e) })?;
    std::fs::rename(&staging, path).map_err(io_error(format!("renaming {} to {}", staging.display(), path.display())))?;
    // The pin holds the link now; our descriptor may go.
    drop(pinned);
    Ok(())
}

/// The IPv4 addresses of this network namespace's interfaces, by name.
fn node_addresses() -> io::Result<Vec<(String, Ipv4Addr)>> {
    let mut out = Vec::new();
    for ifaddr in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        if let Some(ip) = ifaddr.address.as_ref().and_then(|a| a.as_sockaddr_in()).map(|a| a.ip()) {
            out.push((ifaddr.interface_name, ip));
        }
    }
    Ok(out)
}

/// Detaches and unpins everything under `pin_dir` (`--cleanup`, or the
/// iptables mode starting where the eBPF one ran).
pub fn remove(pin_dir: &Path) -> io::Result<bool> {
    match std::fs::remove_dir_all(pin_dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io::Error::new(e.kind(), format!("removing the BPF pins under {}: {e}", pin_dir.display()))),
    }
}

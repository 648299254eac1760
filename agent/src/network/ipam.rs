//! Pod IP allocation from the node's pod CIDR, kept on disk like the CNI
//! `host-local` plugin keeps it: one file per allocated address holding the
//! owner (the pod's UID). The file is written (and fsynced) under a private
//! name first and then hard-linked to the address's name, which fails if the
//! address is taken: creating the link *is* the allocation, so an address is
//! never handed out twice (not by two concurrent callers, not across an agent
//! restart or crash) and never exists without its owner.
//!
//! Addresses are handed out round-robin after the last one allocated (kept
//! in `last_reserved_ip`), so an address released by a deleted pod is not
//! reused at once while stale conntrack entries or caches may still name it.

use ipnetwork::Ipv4Network;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address in pod CIDR {cidr}: all {usable} usable addresses are allocated")]
    Exhausted { cidr: Ipv4Network, usable: u32 },
    #[error("pod CIDR {cidr} is too small for pods (a /30 or larger is needed: network, gateway, broadcast and one pod)")]
    TooSmall { cidr: Ipv4Network },
    #[error("IPAM state {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> IpamError + '_ {
    move |source| IpamError::Io { path: path.to_path_buf(), source }
}

/// The last address handed out, for round-robin.
const LAST_RESERVED: &str = "last_reserved_ip";

pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Network,
}

impl Ipam {
    /// Opens (creating if needed) the allocations for `cidr` under
    /// `state_dir/ipam/<network>_<prefix>/`.
    pub fn open(state_dir: &Path, cidr: Ipv4Network) -> Result<Self, IpamError> {
        if cidr.prefix() > 30 {
            return Err(IpamError::TooSmall { cidr });
        }
        let dir = state_dir.join("ipam").join(format!("{}_{}", cidr.network(), cidr.prefix()));
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        Ok(Self { dir, cidr })
    }

    /// The bridge's address: the first of the CIDR.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    pub fn cidr(&self) -> Ipv4Network {
        self.cidr
    }

    /// The address held by `owner`, allocating one if it holds none (so a
    /// retried pod setup gets the same address).
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some((ip, _)) = self.allocated()?.into_iter().find(|(_, o)| o == owner) {
            return Ok(ip);
        }
        let (first, last) = self.usable_range();
        let usable = last - first + 1;
        let start = self.last_reserved().map(|ip| ip + 1).filter(|ip| (first..=last).contains(ip)).unwrap_or(first);
        for offset in 0..usable {
            let candidate = Ipv4Addr::from(first + (start - first + offset) % usable);
            let path = self.dir.join(candidate.to_string());
            if path.exists() {
                continue;
            }
            let claim = self.private_file(owner)?;
            let linked = fs::hard_link(&claim, &path);
            let _ = fs::remove_file(&claim);
            match linked {
                Ok(()) => {
                    self.set_last_reserved(candidate)?;
                    return Ok(candidate);
                }
                // Taken since we looked: try the next one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
        Err(IpamError::Exhausted { cidr: self.cidr, usable })
    }

    /// A durable file with `contents` under a name no other caller uses.
    fn private_file(&self, contents: &str) -> Result<PathBuf, IpamError> {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let name = format!(".tmp-{}-{}", std::process::id(), SERIAL.fetch_add(1, Ordering::Relaxed));
        let path = self.dir.join(name);
        let mut file = fs::File::create(&path).map_err(io_error(&path))?;
        file.write_all(contents.as_bytes()).and_then(|()| file.sync_all()).map_err(io_error(&path))?;
        Ok(path)
    }

    /// Frees every address `owner` holds; returns them.
    pub fn release(&self, owner: &str) -> Result<Vec<Ipv4Addr>, IpamError> {
        let mut released = Vec::new();
        for (ip, o) in self.allocated()? {
            if o == owner {
                let path = self.dir.join(ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => released.push(ip),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(&path)(e)),
                }
            }
        }
        Ok(released)
    }

    /// Every allocated address and its owner.
    pub fn allocated(&self) -> Result<BTreeMap<Ipv4Addr, String>, IpamError> {
        let mut map = BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let entry = entry.map_err(io_error(&self.dir))?;
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else { continue };
            let owner = fs::read_to_string(entry.path()).map_err(io_error(&entry.path()))?;
            map.insert(ip, owner.trim().to_string());
        }
        Ok(map)
    }

    /// First and last pod address: after the gateway, before broadcast.
    fn usable_range(&self) -> (u32, u32) {
        let network = u32::from(self.cidr.network());
        let broadcast = u32::from(self.cidr.broadcast());
        (network + 2, broadcast - 1)
    }

    fn last_reserved(&self) -> Option<u32> {
        fs::read_to_string(self.dir.join(LAST_RESERVED)).ok()?.trim().parse::<Ipv4Addr>().ok().map(u32::from)
    }

    /// Only a hint for where to look next, so a lost update is harmless;
    /// written via rename so it is never half a line.
    fn set_last_reserved(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let tmp = self.private_file(&ip.to_string())?;
        let path = self.dir.join(LAST_RESERVED);
        fs::rename(&tmp, &path).map_err(io_error(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(dir: &Path, cidr: &str) -> Ipam {
        Ipam::open(dir, cidr.parse().unwrap()).unwrap()
    }

    #[test]
    fn addresses_skip_network_gateway_and_broadcast_and_are_stable_per_owner() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.244.3.0/24");
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        let a = ipam.allocate("pod-a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 3, 2));
        assert_eq!(ipam.allocate("pod-a").unwrap(), a, "a retried setup keeps its address");
        assert_eq!(ipam.allocate("pod-b").unwrap(), Ipv4Addr::new(10, 244, 3, 3));
    }

    #[test]
    fn a_restarted_agent_never_hands_out_an_address_twice_and_does_not_reuse_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = ipam(dir.path(), "10.244.0.0/24").allocate("pod-a").unwrap();
        // A new Ipam over the same directory is a restarted agent.
        let again = ipam(dir.path(), "10.244.0.0/24");
        let b = again.allocate("pod-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(again.release("pod-a").unwrap(), vec![a]);
        let c = again.allocate("pod-c").unwrap();
        assert_ne!(c, a, "a just-released address is not handed out next");
        assert_eq!(again.allocated().unwrap().len(), 2);
    }

    #[test]
    fn a_full_cidr_is_a_clear_error_and_wraps_round_to_freed_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = ipam(dir.path(), "10.244.0.0/29"); // .2 to .6: five pods
        let ips: Vec<_> = (0..5).map(|i| ipam.allocate(&format!("p{i}")).unwrap()).collect();
        let err = ipam.allocate("one-too-many").unwrap_err();
        assert_eq!(err.to_string(), "no free address in pod CIDR 10.244.0.0/29: all 5 usable addresses are allocated");
        ipam.release("p1").unwrap();
        assert_eq!(ipam.allocate("late").unwrap(), ips[1], "the only free address, found by wrapping round");
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    (0..20).map(|i| ipam(&path, "10.244.0.0/24").allocate(&format!("t{t}-{i}")).unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!(all.len(), before, "two owners got the same address");
        assert_eq!(before, 160);
    }

    #[test]
    fn tiny_cidrs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(Ipam::open(dir.path(), "10.0.0.0/31".parse().unwrap()), Err(IpamError::TooSmall { .. })));
    }
}

//! Which sockets this agent balances: those in its node's network
//! namespace and its pods'. The socket programs hang on the root cgroup and
//! so see every process on the machine; several agents share a machine in
//! the test hosts (one network namespace per node), and each must leave
//! the others' sockets alone.

use aya::maps::{HashMap, MapData};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

/// `SO_NETNS_COOKIE` (Linux 5.14): the 64-bit id the kernel gives a
/// network namespace, never reused, and what `bpf_get_netns_cookie` returns.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace `netns` (an open nsfs file, or
/// `None` for the caller's own).
pub fn netns_cookie(netns: Option<&File>) -> io::Result<u64> {
    let Some(netns) = netns else { return socket_netns_cookie() };
    let netns = netns.try_clone()?;
    // setns(2) changes only the calling thread: a short-lived thread of our
    // own, so no runtime thread ever moves.
    std::thread::Builder::new()
        .name("hawser-netns-cookie".to_string())
        .spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            socket_netns_cookie()
        })?
        .join()
        .map_err(|_| io::Error::other("the netns cookie thread panicked"))?
}

fn socket_netns_cookie() -> io::Result<u64> {
    // SAFETY: socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt(2) into a u64 of the length given.
    let rc = unsafe { libc::getsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, SO_NETNS_COOKIE, (&raw mut cookie).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The set of network namespaces whose sockets are balanced (the pinned
/// `HAWSER_NETNS` map, an LRU). Entries of deleted pods stay until newer
/// ones push them out: cookies are never reused, so a stale one names no
/// namespace.
pub struct SocketScope {
    netns: Mutex<HashMap<MapData, u64, u8>>,
}

impl SocketScope {
    pub fn new(netns: HashMap<MapData, u64, u8>) -> Self {
        Self { netns: Mutex::new(netns) }
    }

    /// Balances the sockets of the namespace `netns` (`None`: our own).
    pub fn admit(&self, netns: Option<&File>) -> io::Result<u64> {
        let cookie = netns_cookie(netns)?;
        let mut map = self.netns.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(cookie, 1, 0).map_err(|e| io::Error::other(format!("adding netns cookie {cookie} to the BPF scope map: {e}")))?;
        Ok(cookie)
    }
}

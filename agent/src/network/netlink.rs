//! Netlink connections, one per network namespace worked in, and the
//! context every failure is reported with.
//!
//! A netlink socket belongs for good to the network namespace it was opened
//! in, whichever thread uses it afterwards. So to work inside a pod's
//! namespace the socket is opened by a short-lived thread of our own that
//! has entered it (setns(2) changes only the calling thread, and that thread
//! ends right after) and is then driven from the caller's runtime like any
//! other: no runtime worker ever changes namespace and no second runtime is
//! needed.

use super::NetworkError;
use super::ipam::IpamError;
use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::sys::{Socket, TokioSocket, protocols::NETLINK_ROUTE};
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{FromRawFd, IntoRawFd};

/// A netlink route connection; its driver task ends when it is dropped.
pub(crate) struct Netlink {
    handle: rtnetlink::Handle,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Netlink {
    /// A connection in the calling thread's network namespace.
    pub(crate) fn current() -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        Ok(Self { handle, driver: tokio::spawn(connection) })
    }

    /// A connection in the network namespace `netns` (an open nsfs file).
    pub(crate) async fn in_netns(netns: &File) -> io::Result<Self> {
        let netns = netns.try_clone()?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name("hawser-netns".to_string()).spawn(move || {
            let _ = sender.send(socket_in(&netns));
        })?;
        let socket = receiver.await.map_err(|_| io::Error::other("the namespace thread ended without an answer"))??;
        socket.set_non_blocking(true)?;
        // SAFETY: the descriptor comes from `into_raw_fd` of a socket we own,
        // so nothing else owns or closes it.
        let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        Ok(Self { handle, driver: tokio::spawn(connection) })
    }

    pub(crate) fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// The link called `name`, if there is one.
    pub(crate) async fn link(&self, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
        absent_as_none(self.handle.link().get().match_name(name.to_string()).execute().try_next().await)
    }

    pub(crate) async fn link_by_index(&self, index: u32) -> Result<Option<LinkMessage>, rtnetlink::Error> {
        absent_as_none(self.handle.link().get().match_index(index).execute().try_next().await)
    }

    /// Deletes the link called `name`; one already gone is fine.
    pub(crate) async fn delete_link(&self, name: &str) -> Result<(), rtnetlink::Error> {
        let Some(link) = self.link(name).await? else { return Ok(()) };
        match self.handle.link().del(link.header.index).execute().await {
            Err(err) if errno(&err) == Some(Errno::ENODEV) => Ok(()),
            result => result,
        }
    }
}

/// Gives the link `index` (described as `what` in errors) exactly the IPv4
/// addresses `wanted`: others are removed, missing ones added.
pub(crate) async fn ensure_only_addresses(netlink: &Netlink, what: &str, index: u32, wanted: &[Ipv4Network]) -> Result<(), NetworkError> {
    let addresses: Vec<AddressMessage> = netlink
        .handle()
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .with_context(|| format!("listing the addresses of {what}"))?;
    let mut present = Vec::new();
    for address in addresses {
        let Some(ip) = ipv4_of(&address) else { continue };
        if wanted.iter().any(|w| w.ip() == ip && w.prefix() == address.header.prefix_len) {
            present.push(ip);
            continue;
        }
        let stale = format!("{ip}/{}", address.header.prefix_len);
        netlink.handle().address().del(address).execute().await.with_context(|| format!("removing stale address {stale} from {what}"))?;
    }
    for address in wanted.iter().filter(|w| !present.contains(&w.ip())) {
        netlink
            .handle()
            .address()
            .add(index, IpAddr::V4(address.ip()), address.prefix())
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding address {address} to {what}"))?;
    }
    Ok(())
}

fn ipv4_of(address: &AddressMessage) -> Option<Ipv4Addr> {
    address.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    })
}

/// Runs on a thread of its own, which ends right after.
fn socket_in(netns: &File) -> io::Result<Socket> {
    nix::sched::setns(netns, CloneFlags::CLONE_NEWNET)?;
    Socket::new(NETLINK_ROUTE)
}

fn absent_as_none(result: Result<Option<LinkMessage>, rtnetlink::Error>) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    match result {
        Err(err) if errno(&err) == Some(Errno::ENODEV) => Ok(None),
        result => result,
    }
}

/// The errno the kernel answered with, if it answered with one.
pub(crate) fn errno(err: &rtnetlink::Error) -> Option<Errno> {
    match err {
        rtnetlink::Error::NetlinkError(message) => Some(Errno::from_raw(message.raw_code().abs())),
        _ => None,
    }
}

pub(crate) fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// A veth's peer's index (`IFLA_LINK`), in the peer's namespace.
pub(crate) fn peer_index(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Link(index) => Some(*index),
        _ => None,
    })
}

pub(crate) fn mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// Attaches "what was being done, to what" to a failure.
pub(crate) trait Context<T> {
    fn with_context(self, context: impl FnOnce() -> String) -> Result<T, NetworkError>;
}

impl<T> Context<T> for Result<T, rtnetlink::Error> {
    fn with_context(self, context: impl FnOnce() -> String) -> Result<T, NetworkError> {
        self.map_err(|err| {
            let source = match err {
                // "File exists (os error 17)" rather than a netlink dump.
                rtnetlink::Error::NetlinkError(message) => message.to_io(),
                other => io::Error::other(other.to_string()),
            };
            NetworkError::Netlink { context: context(), source }
        })
    }
}

impl<T> Context<T> for io::Result<T> {
    fn with_context(self, context: impl FnOnce() -> String) -> Result<T, NetworkError> {
        self.map_err(|source| NetworkError::Io { context: context(), source })
    }
}

impl<T> Context<T> for Result<T, IpamError> {
    fn with_context(self, context: impl FnOnce() -> String) -> Result<T, NetworkError> {
        self.map_err(|source| NetworkError::Ipam { context: context(), source })
    }
}

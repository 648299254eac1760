//! Socket-level load balancing: cgroup programs on the root cgroup.
//!
//! A `connect()` (TCP, connected UDP) or unconnected UDP `sendmsg()` to a
//! service address is rewritten to a backend before the kernel routes
//! anything, so the connection's packets carry the backend's address from
//! the first one and need no NAT. `recvmsg()` and `getpeername()` rewrite
//! the backend back to the service address the application asked for.

use aya_ebpf::EbpfContext;
use aya_ebpf::helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval};
use aya_ebpf::macros::cgroup_sock_addr;
use aya_ebpf::programs::SockAddrContext;
use hawser_ebpf_common::{IPPROTO_TCP, IPPROTO_UDP, ORIGIN_NODE, ServiceKey, SockRev, SockRevKey};

use crate::lb;
use crate::maps::{NETNS, SOCK_REVNAT};

/// Return values of cgroup sock_addr programs.
const ALLOW: i32 = 1;
const REJECT: i32 = 0;
const ECONNREFUSED: i32 = 111;

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    to_backend(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    to_backend(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    to_service(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock_peername4(ctx: SockAddrContext) -> i32 {
    to_service(&ctx)
}

#[inline(always)]
fn to_backend(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the kernel hands the program a valid context.
    let addr = unsafe { &mut *ctx.sock_addr };
    let proto = addr.protocol as u8;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return ALLOW;
    }
    // SAFETY: a helper allowed for this program type.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: only presence is checked.
    if unsafe { NETNS.get(&netns) }.is_none() {
        return ALLOW;
    }
    let key = ServiceKey { ip: addr.user_ip4, port: addr.user_port as u16, proto, origin: ORIGIN_NODE };
    let Some(service) = lb::service(&key) else {
        return ALLOW;
    };
    let Some((_, backend)) = lb::select(&service, netns) else {
        // No endpoints: refuse at once, as kube-proxy's REJECT does.
        // SAFETY: allowed for connect/sendmsg hooks on this kernel.
        unsafe { bpf_set_retval(-ECONNREFUSED) };
        return REJECT;
    };
    addr.user_ip4 = backend.ip;
    addr.user_port = u32::from(backend.port);
    // SAFETY: as above.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rev = SockRevKey { cookie, backend_ip: backend.ip, backend_port: backend.port, pad: 0 };
    let _ = SOCK_REVNAT.insert(&rev, &SockRev { ip: key.ip, port: key.port, pad: 0 }, 0);
    ALLOW
}

#[inline(always)]
fn to_service(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the kernel hands the program a valid context.
    let addr = unsafe { &mut *ctx.sock_addr };
    // SAFETY: a helper allowed for this program type.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rev = SockRevKey { cookie, backend_ip: addr.user_ip4, backend_port: addr.user_port as u16, pad: 0 };
    // SAFETY: copied at once.
    if let Some(service) = unsafe { SOCK_REVNAT.get(&rev) }.copied() {
        addr.user_ip4 = service.ip;
        addr.user_port = u32::from(service.port);
    }
    ALLOW
}

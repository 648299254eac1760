//! tc programs on the node's underlay interface: service traffic that
//! arrives from outside the node (NodePorts, and ClusterIPs routed to the
//! node), with connection tracking in `FLOWS` so every packet of a
//! connection goes to the same backend and replies are translated back.
//!
//! - Backend on this node, or `externalTrafficPolicy: Local`: DNAT only;
//!   the client's address is kept and the backend's reply is translated on
//!   its way out (`nodeport_egress`).
//! - Backend on another node (policy Cluster): DNAT and SNAT to this node's
//!   address, sent straight back out; the reply comes back to this node and
//!   is translated and sent to the client (`nodeport_ingress`). Cilium's
//!   NodePort does the same: SNAT only where the backend is remote.

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT, TC_ACT_UNSPEC, bpf_fib_lookup};
use aya_ebpf::helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_get_prandom_u32, bpf_redirect, bpf_redirect_neigh};
use aya_ebpf::macros::classifier;
use aya_ebpf::programs::TcContext;
use hawser_ebpf_common::{
    BACKEND_LOCAL, FLOW_FIN, FLOW_REDIRECT, FlowKey, FlowNat, IPPROTO_TCP, ORIGIN_WIRE, SERVICE_LOCAL_ONLY, ServiceKey,
};

use crate::lb;
use crate::maps::{CONFIG, FLOWS};
use crate::packet::{self, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// Not ours: on to the next program in the chain, then the stack.
const NEXT: i32 = TC_ACT_UNSPEC;
const PASS: i32 = TC_ACT_OK as i32;
const DROP: i32 = TC_ACT_SHOT as i32;
const AF_INET: u8 = 2;
const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const BPF_FIB_LKUP_RET_NO_NEIGH: i64 = 7;
/// SNAT port picks before giving up on a new connection.
const SNAT_TRIES: u32 = 8;

#[classifier]
pub fn nodeport_ingress(mut ctx: TcContext) -> i32 {
    let Some(packet) = packet::parse(&ctx) else {
        return NEXT;
    };
    let new_connection = packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    // SAFETY: copied at once (an LRU entry may be recycled later).
    if let Some(nat) = unsafe { FLOWS.get(&packet.flow) }.copied() {
        // A SYN on a tracked tuple is a new connection reusing the client
        // port: balance it afresh rather than follow the old backend.
        if !new_connection {
            return translate(&mut ctx, &packet, &nat);
        }
        forget(&packet.flow, &nat);
    }
    let flow = &packet.flow;
    let Some(service) = lb::service(&ServiceKey { ip: flow.dst_ip, port: flow.dst_port, proto: flow.proto, origin: ORIGIN_WIRE }) else {
        if new_connection {
            // A connection straight to a pod that reuses the tuple of an
            // earlier NodePort connection's reply: that entry is stale and
            // would rewrite this connection's replies on their way out.
            let _ = FLOWS.remove(&reversed(flow));
        }
        return NEXT;
    };
    // Only a SYN opens a TCP connection: a late segment of one whose
    // entries are gone goes to the stack, which resets it.
    if flow.proto == IPPROTO_TCP && !new_connection {
        return NEXT;
    }
    let Some((_, backend)) = lb::select_for_flow(&service, flow) else {
        // No endpoints: with policy Local the node has none to offer and the
        // packet is dropped, as kube-proxy does; otherwise the stack answers
        // (a NodePort nobody listens on gets a TCP reset or an ICMP port
        // unreachable at once).
        return if service.flags & SERVICE_LOCAL_ONLY != 0 { DROP } else { NEXT };
    };
    let local = backend.flags & BACKEND_LOCAL != 0 || service.flags & SERVICE_LOCAL_ONLY != 0;
    let (forward, reply_key, reply) = if local {
        let forward = FlowNat { src_ip: flow.src_ip, src_port: flow.src_port, dst_ip: backend.ip, dst_port: backend.port, flags: 0 };
        let reply_key = FlowKey {
            src_ip: backend.ip,
            src_port: backend.port,
            dst_ip: flow.src_ip,
            dst_port: flow.src_port,
            proto: flow.proto,
            pad: [0; 3],
        };
        let reply = FlowNat { src_ip: flow.dst_ip, src_port: flow.dst_port, dst_ip: flow.src_ip, dst_port: flow.src_port, flags: 0 };
        (forward, reply_key, reply)
    } else {
        let Some(config) = CONFIG.get(0).copied() else {
            return DROP;
        };
        let Some(port) = snat_port(flow, backend.ip, backend.port, config.node_ip, config.snat_port_min, config.snat_port_max) else {
            return DROP;
        };
        let forward = FlowNat { src_ip: config.node_ip, src_port: port, dst_ip: backend.ip, dst_port: backend.port, flags: FLOW_REDIRECT };
        let reply_key =
            FlowKey { src_ip: backend.ip, src_port: backend.port, dst_ip: config.node_ip, dst_port: port, proto: flow.proto, pad: [0; 3] };
        let reply =
            FlowNat { src_ip: flow.dst_ip, src_port: flow.dst_port, dst_ip: flow.src_ip, dst_port: flow.src_port, flags: FLOW_REDIRECT };
        (forward, reply_key, reply)
    };
    if FLOWS.insert(&reply_key, &reply, 0).is_err() || FLOWS.insert(flow, &forward, 0).is_err() {
        return DROP;
    }
    translate(&mut ctx, &packet, &forward)
}

/// Replies of DNAT-only connections leaving for the client: the backend's
/// address becomes the service address again.
#[classifier]
pub fn nodeport_egress(mut ctx: TcContext) -> i32 {
    let Some(packet) = packet::parse(&ctx) else {
        return NEXT;
    };
    // A SYN leaving is a new connection from this node, never a reply.
    if packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return NEXT;
    }
    // SAFETY: copied at once.
    match unsafe { FLOWS.get(&packet.flow) }.copied() {
        Some(nat) if nat.flags & FLOW_REDIRECT == 0 => translate(&mut ctx, &packet, &nat),
        _ => NEXT,
    }
}

#[inline(always)]
fn translate(ctx: &mut TcContext, packet: &Packet, nat: &FlowNat) -> i32 {
    if packet::rewrite(ctx, packet, nat).is_err() {
        return DROP;
    }
    if packet.flow.proto == IPPROTO_TCP {
        track_close(packet, nat);
    }
    if nat.flags & FLOW_REDIRECT != 0 { redirect(ctx, nat) } else { PASS }
}

/// Ends a tracked TCP connection on a RST, or on the second direction's
/// FIN: its entries go, and with them its SNAT port.
#[inline(always)]
fn track_close(packet: &Packet, nat: &FlowNat) {
    if packet.tcp_flags & TCP_RST != 0 {
        forget(&packet.flow, nat);
        return;
    }
    if packet.tcp_flags & TCP_FIN == 0 {
        return;
    }
    // SAFETY: copied at once.
    let other_fin = unsafe { FLOWS.get(&other_direction(nat, packet.flow.proto)) }.is_some_and(|o| o.flags & FLOW_FIN != 0);
    if other_fin {
        forget(&packet.flow, nat);
    } else if let Some(entry) = FLOWS.get_ptr_mut(&packet.flow) {
        // SAFETY: a pointer into the map's value for this key.
        unsafe { (*entry).flags |= FLOW_FIN };
    }
}

/// The tuple of `flow`'s replies.
#[inline(always)]
fn reversed(flow: &FlowKey) -> FlowKey {
    FlowKey { src_ip: flow.dst_ip, src_port: flow.dst_port, dst_ip: flow.src_ip, dst_port: flow.src_port, proto: flow.proto, pad: [0; 3] }
}

/// The key of the other direction of the connection whose entry says
/// `nat`: the tuple of a translated packet's answers.
#[inline(always)]
fn other_direction(nat: &FlowNat, proto: u8) -> FlowKey {
    FlowKey { src_ip: nat.dst_ip, src_port: nat.dst_port, dst_ip: nat.src_ip, dst_port: nat.src_port, proto, pad: [0; 3] }
}

/// Drops both directions of a tracked connection.
#[inline(always)]
fn forget(flow: &FlowKey, nat: &FlowNat) {
    let _ = FLOWS.remove(&other_direction(nat, flow.proto));
    let _ = FLOWS.remove(flow);
}

/// A source port on this node for a connection to `backend`: a random one
/// in the SNAT range whose tuple is free. Never the client's own port:
/// that lies in the node's ephemeral range too, and a local socket that
/// happened to use it toward the same backend would have its replies taken
/// for this connection's.
#[inline(always)]
fn snat_port(flow: &FlowKey, backend_ip: u32, backend_port: u16, node_ip: u32, min: u16, max: u16) -> Option<u16> {
    let span = u32::from(max.saturating_sub(min)) + 1;
    for _ in 0..SNAT_TRIES {
        // SAFETY: a helper without preconditions.
        let offset = unsafe { bpf_get_prandom_u32() } % span;
        let port = (min + offset as u16).to_be();
        let reply = FlowKey { src_ip: backend_ip, src_port: backend_port, dst_ip: node_ip, dst_port: port, proto: flow.proto, pad: [0; 3] };
        // SAFETY: only presence is checked.
        if unsafe { FLOWS.get(&reply) }.is_none() {
            return Some(port);
        }
    }
    None
}

/// Sends a rewritten packet out towards its new destination: the kernel's
/// FIB says where, the neighbour table (or `bpf_redirect_neigh`) gives the
/// MAC addresses.
#[inline(always)]
fn redirect(ctx: &mut TcContext, nat: &FlowNat) -> i32 {
    // SAFETY: all-zero is a valid bpf_fib_lookup.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    // SAFETY: the context points at the packet's __sk_buff.
    params.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    params.__bindgen_anon_3.ipv4_src = nat.src_ip;
    params.__bindgen_anon_4.ipv4_dst = nat.dst_ip;
    // SAFETY: params lives on the stack for the call.
    let found = unsafe { fib_lookup(ctx.as_ptr(), &mut params, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) };
    match found {
        BPF_FIB_LKUP_RET_SUCCESS => {
            if ctx.store(0, &params.dmac, 0).is_err() || ctx.store(6, &params.smac, 0).is_err() {
                return DROP;
            }
            // SAFETY: a helper without preconditions.
            unsafe { bpf_redirect(params.ifindex, 0) as i32 }
        }
        // SAFETY: as above; the kernel resolves the neighbour.
        BPF_FIB_LKUP_RET_NO_NEIGH => unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) as i32 },
        _ => DROP,
    }
}

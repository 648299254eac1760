//! Reading an IPv4 TCP/UDP packet's 5-tuple and rewriting its addresses and
//! ports with incremental checksum updates.

use aya_ebpf::programs::TcContext;
use hawser_ebpf_common::{FlowKey, FlowNat, IPPROTO_TCP, IPPROTO_UDP};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IP_SRC: usize = ETH_HLEN + 12;
const IP_DST: usize = ETH_HLEN + 16;
const IP_CSUM: usize = ETH_HLEN + 10;
/// `bpf_l4_csum_replace` flags.
const BPF_F_PSEUDO_HDR: u64 = 0x10;
const BPF_F_MARK_MANGLED_0: u64 = 0x20;

/// Where a parsed packet's parts are.
pub struct Packet {
    pub flow: FlowKey,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The packet's 5-tuple, or `None` for anything but an unfragmented (or
/// first-fragment-free) IPv4 TCP/UDP packet.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Option<Packet> {
    let ether_type = u16::from_be(ctx.load::<u16>(12).ok()?);
    if ether_type != ETH_P_IP {
        return None;
    }
    let version_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
    if version_ihl >> 4 != 4 {
        return None;
    }
    // Fragments other than the first carry no ports: leave them alone.
    let frag = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).ok()?);
    if frag & 0x1fff != 0 {
        return None;
    }
    let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let l4 = ETH_HLEN + usize::from(version_ihl & 0x0f) * 4;
    let flow = FlowKey {
        src_ip: ctx.load(IP_SRC).ok()?,
        dst_ip: ctx.load(IP_DST).ok()?,
        src_port: ctx.load(l4).ok()?,
        dst_port: ctx.load(l4 + 2).ok()?,
        proto,
        pad: [0; 3],
    };
    let tcp_flags = if proto == IPPROTO_TCP { ctx.load(l4 + 13).ok()? } else { 0 };
    Some(Packet { flow, l4, tcp_flags })
}

/// Rewrites the packet's addresses and ports from `packet.flow` to `nat`,
/// fixing the IP and TCP/UDP checksums incrementally.
#[inline(always)]
pub fn rewrite(ctx: &mut TcContext, packet: &Packet, nat: &FlowNat) -> Result<(), i64> {
    let flow = &packet.flow;
    let (csum, mangled) = if flow.proto == IPPROTO_TCP { (packet.l4 + 16, 0) } else { (packet.l4 + 6, BPF_F_MARK_MANGLED_0) };
    if nat.src_ip != flow.src_ip {
        rewrite_ip(ctx, IP_SRC, csum, mangled, flow.src_ip, nat.src_ip)?;
    }
    if nat.dst_ip != flow.dst_ip {
        rewrite_ip(ctx, IP_DST, csum, mangled, flow.dst_ip, nat.dst_ip)?;
    }
    if nat.src_port != flow.src_port {
        rewrite_port(ctx, packet.l4, csum, mangled, flow.src_port, nat.src_port)?;
    }
    if nat.dst_port != flow.dst_port {
        rewrite_port(ctx, packet.l4 + 2, csum, mangled, flow.dst_port, nat.dst_port)?;
    }
    Ok(())
}

#[inline(always)]
fn rewrite_ip(ctx: &mut TcContext, at: usize, l4_csum: usize, mangled: u64, from: u32, to: u32) -> Result<(), i64> {
    ctx.l4_csum_replace(l4_csum, u64::from(from), u64::from(to), BPF_F_PSEUDO_HDR | mangled | 4)?;
    ctx.l3_csum_replace(IP_CSUM, u64::from(from), u64::from(to), 4)?;
    ctx.store(at, &to, 0)
}

#[inline(always)]
fn rewrite_port(ctx: &mut TcContext, at: usize, l4_csum: usize, mangled: u64, from: u16, to: u16) -> Result<(), i64> {
    ctx.l4_csum_replace(l4_csum, u64::from(from), u64::from(to), mangled | 2)?;
    ctx.store(at, &to, 0)
}

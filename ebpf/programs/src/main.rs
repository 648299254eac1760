//! The service proxy's BPF programs, built for `bpfel-unknown-none` by the
//! agent's build script (aya-build) and loaded by `agent/src/proxy/ebpf`.
//!
//! - `sock`: cgroup programs that balance at the socket: a `connect()` or
//!   `sendmsg()` to a service address goes straight to a backend, and the
//!   replies and `getpeername()` show the service address again.
//! - `nodeport`: tc programs on the node's underlay interface for traffic
//!   from outside the node: DNAT (plus SNAT when the backend is on another
//!   node) on the way in, reverse NAT on the way back.
//!
//! Everything they share with the loader (map keys and values) is in
//! `hawser-ebpf-common`; every map is declared in `maps`.
//!
//! On the host (clippy, `cargo build --workspace`) this crate is an empty
//! binary: the programs exist only for the BPF target.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod lb;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod nodeport;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod sock;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; this only
    // satisfies the compiler.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}

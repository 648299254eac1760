//! The tc NodePort programs run on crafted packets with
//! `BPF_PROG_TEST_RUN`: the kernel executes the real programs (as built by
//! the agent's build script) against real maps, and the test checks the
//! rewritten headers and that both checksums are still right, for DNAT to
//! a local backend and its reverse NAT, and DNAT+SNAT to a remote backend
//! and its reverse, over TCP and UDP.
//!
//! Each test loads its own copy of the programs with its maps pinned under
//! a directory of its own, removed on drop. Needs root; skipped otherwise.

use aya::maps::{Array, HashMap, MapData};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
use hawser_agent::proxy::ebpf::datapath::{PROGRAMS, ensure_bpffs};
use hawser_agent::proxy::ebpf::maglev;
use hawser_ebpf_common::{
    BACKEND_LOCAL, Backend, Config, FlowKey, IPPROTO_TCP, IPPROTO_UDP, ORIGIN_WIRE, SERVICE_EXTERNAL, Service, ServiceKey, SlotKey,
    maglev_flow_hash, maps,
};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
const NODE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const NODE_PORT: u16 = 30080;
const LOCAL_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 5);
const REMOTE_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);
const BACKEND_PORT: u16 = 8080;
const CLIENT_PORT: u16 = 45678;
const TC_ACT_OK: u32 = 0;

/// The programs loaded with their maps pinned in a directory of their own.
struct Loaded {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

fn load() -> Option<Loaded> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: loading BPF programs needs root");
        return None;
    }
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/hawser-test-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst)));
    ensure_bpffs(&pin_dir).expect("a bpffs at /sys/fs/bpf");
    std::fs::create_dir_all(&pin_dir).expect("the pin directory");
    let mut loaded =
        Loaded { ebpf: EbpfLoader::new().default_map_pin_directory(&pin_dir).load(PROGRAMS).expect("loading the programs"), pin_dir };
    for name in ["nodeport_ingress", "nodeport_egress"] {
        let program: &mut SchedClassifier = loaded.ebpf.program_mut(name).expect("the program").try_into().expect("a classifier");
        program.load().expect("the verifier accepts the program");
    }
    let mut config: Array<&mut MapData, Config> = loaded.ebpf.map_mut(maps::CONFIG).expect("the config map").try_into().unwrap();
    config.set(0, Config { node_ip: be(NODE), snat_port_min: 61000, snat_port_max: 65535 }, 0).unwrap();
    Some(loaded)
}

fn be(ip: Ipv4Addr) -> u32 {
    u32::from(ip).to_be()
}

impl Loaded {
    /// NodePort `NODE:NODE_PORT` over `proto` → one backend.
    fn node_port(&mut self, proto: u8, backend: Ipv4Addr, local: bool) {
        let mut backends: HashMap<&mut MapData, u32, Backend> = self.ebpf.map_mut(maps::BACKENDS).unwrap().try_into().unwrap();
        let flags = if local { BACKEND_LOCAL } else { 0 };
        backends.insert(1, Backend { ip: be(backend), port: BACKEND_PORT.to_be(), flags, pad: 0 }, 0).unwrap();
        let mut slots: HashMap<&mut MapData, SlotKey, u32> = self.ebpf.map_mut(maps::SLOTS).unwrap().try_into().unwrap();
        slots.insert(SlotKey { list: 1, slot: 0 }, 1, 0).unwrap();
        let mut services: HashMap<&mut MapData, ServiceKey, Service> = self.ebpf.map_mut(maps::SERVICES).unwrap().try_into().unwrap();
        let key = ServiceKey { ip: be(NODE), port: NODE_PORT.to_be(), proto, origin: ORIGIN_WIRE };
        let service = Service { id: 1, list: 1, count: 1, flags: SERVICE_EXTERNAL, affinity_timeout: 0, maglev_size: 0 };
        services.insert(key, service, 0).unwrap();
    }

    /// Runs program `name` on `packet`: its verdict and the packet after.
    fn run(&self, name: &str, packet: &[u8]) -> (u32, Vec<u8>) {
        let program: &SchedClassifier = self.ebpf.program(name).unwrap().try_into().unwrap();
        let fd = program.fd().expect("a loaded program");
        test_run(fd.as_fd().as_raw_fd(), packet)
    }
}

/// `BPF_PROG_TEST_RUN` (aya 0.14 has no wrapper): one run of the program
/// on a copy of `packet`.
fn test_run(prog_fd: i32, packet: &[u8]) -> (u32, Vec<u8>) {
    #[repr(C)]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut out = vec![0u8; packet.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: bpf(2) with an attr of the kernel's layout whose pointers
    // name live buffers of the sizes given.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &mut attr as *mut TestRunAttr, std::mem::size_of::<TestRunAttr>()) };
    assert_eq!(rc, 0, "BPF_PROG_TEST_RUN: {}", std::io::Error::last_os_error());
    out.truncate(attr.data_size_out as usize);
    (attr.retval, out)
}

/// The one's-complement sum of `data` as 16-bit words, folded.
fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    let bytes: Vec<u8> = chunks.concat();
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv4 + TCP (SYN) or UDP packet with right checksums and
/// a small payload.
fn packet(proto: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), tcp_flags: u8) -> Vec<u8> {
    let payload = b"hawser";
    let l4_len = if proto == IPPROTO_TCP { 20 } else { 8 } + payload.len();
    let mut p = Vec::new();
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
    let total = (20 + l4_len) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.0.octets());
    ip.extend_from_slice(&dst.0.octets());
    let ip_sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    if proto == IPPROTO_TCP {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        l4.extend_from_slice(&(l4_len as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    let sum = checksum(&[&pseudo_header(&ip, l4.len()), &l4]);
    let at = if proto == IPPROTO_TCP { 16 } else { 6 };
    l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&ip);
    p.extend_from_slice(&l4);
    p
}

fn pseudo_header(ip: &[u8], l4_len: usize) -> Vec<u8> {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, ip[9]]);
    pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
    pseudo
}

/// A packet's addresses and ports, after checking that its IP and TCP/UDP
/// checksums are right.
fn tuple(p: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let ip = &p[14..34];
    assert_eq!(checksum(&[ip]), 0, "IPv4 header checksum of {p:02x?}");
    let l4 = &p[34..];
    assert_eq!(checksum(&[&pseudo_header(ip, l4.len()), l4]), 0, "TCP/UDP checksum of {p:02x?}");
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    ((addr(12), port(0)), (addr(16), port(2)))
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const FIN: u8 = 0x01;
const ACK: u8 = 0x10;

/// To a backend on this node: DNAT only (the client's address kept), and
/// the backend's reply leaves with the NodePort's address again.
fn local_backend_dnat_and_reverse(proto: u8) {
    let Some(mut bpf) = load() else { return };
    bpf.node_port(proto, LOCAL_BACKEND, true);
    let (verdict, out) = bpf.run("nodeport_ingress", &packet(proto, (CLIENT, CLIENT_PORT), (NODE, NODE_PORT), SYN));
    assert_eq!(verdict, TC_ACT_OK, "passed on to the stack, to be routed to the pod");
    assert_eq!(tuple(&out), ((CLIENT, CLIENT_PORT), (LOCAL_BACKEND, BACKEND_PORT)));
    // Later packets of the connection follow the tracked entry.
    let (verdict, out) = bpf.run("nodeport_ingress", &packet(proto, (CLIENT, CLIENT_PORT), (NODE, NODE_PORT), ACK));
    assert_eq!((verdict, tuple(&out)), (TC_ACT_OK, ((CLIENT, CLIENT_PORT), (LOCAL_BACKEND, BACKEND_PORT))));
    // The reply on its way out.
    let (verdict, out) = bpf.run("nodeport_egress", &packet(proto, (LOCAL_BACKEND, BACKEND_PORT), (CLIENT, CLIENT_PORT), SYN | ACK));
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(tuple(&out), ((NODE, NODE_PORT), (CLIENT, CLIENT_PORT)));
    // FIN both ways ends the connection: the reply entry goes.
    if proto == IPPROTO_TCP {
        bpf.run("nodeport_ingress", &packet(proto, (CLIENT, CLIENT_PORT), (NODE, NODE_PORT), FIN | ACK));
        let (_, out) = bpf.run("nodeport_egress", &packet(proto, (LOCAL_BACKEND, BACKEND_PORT), (CLIENT, CLIENT_PORT), FIN | ACK));
        assert_eq!(tuple(&out), ((NODE, NODE_PORT), (CLIENT, CLIENT_PORT)), "the closing FIN is still translated");
        let after = packet(proto, (LOCAL_BACKEND, BACKEND_PORT), (CLIENT, CLIENT_PORT), ACK);
        assert_eq!(bpf.run("nodeport_egress", &after).1, after, "entries gone after FIN both ways");
        // Open it again for what follows.
        bpf.run("nodeport_ingress", &packet(proto, (CLIENT, CLIENT_PORT), (NODE, NODE_PORT), SYN));
    }
    // A later connection from the same client port straight to the pod
    // (routed, no service) clears the stale reply entry, so the pod's
    // answer to it leaves untouched.
    if proto == IPPROTO_TCP {
        let direct = packet(proto, (CLIENT, CLIENT_PORT), (LOCAL_BACKEND, BACKEND_PORT), SYN);
        assert_eq!(bpf.run("nodeport_ingress", &direct).1, direct);
        let answer = packet(proto, (LOCAL_BACKEND, BACKEND_PORT), (CLIENT, CLIENT_PORT), SYN | ACK);
        assert_eq!(bpf.run("nodeport_egress", &answer).1, answer, "a direct connection's reply is not NATed");
    }
    // Packets that are nobody's service pass untouched.
    let other = packet(proto, (CLIENT, CLIENT_PORT), (NODE, 22), SYN);
    let (verdict, out) = bpf.run("nodeport_ingress", &other);
    assert_eq!((verdict as i32, out), (-1, other), "TC_ACT_UNSPEC: on to the next program");
}

/// To a backend on another node: DNAT and SNAT to this node's address,
/// and the reply coming back is translated to the client's connection.
fn remote_backend_dnat_snat_and_reverse(proto: u8) {
    let Some(mut bpf) = load() else { return };
    bpf.node_port(proto, REMOTE_BACKEND, false);
    // The verdict is the redirect's (no route in the test's context), the
    // headers are what would be sent.
    let (_, out) = bpf.run("nodeport_ingress", &packet(proto, (CLIENT, CLIENT_PORT), (NODE, NODE_PORT), SYN));
    let ((src, snat_port), dst) = tuple(&out);
    assert_eq!((src, dst), (NODE, (REMOTE_BACKEND, BACKEND_PORT)));
    assert!((61000..=65535).contains(&snat_port), "SNAT source port {snat_port}: above the node's ephemeral range");
    let (_, out) = bpf.run("nodeport_ingress", &packet(proto, (REMOTE_BACKEND, BACKEND_PORT), (NODE, snat_port), SYN | ACK));
    assert_eq!(tuple(&out), ((NODE, NODE_PORT), (CLIENT, CLIENT_PORT)));
    if proto == IPPROTO_TCP {
        // The client's reset ends the connection: its entries go, so the
        // backend's next segment is no longer translated, and a late
        // segment from the client opens nothing.
        bpf.run("nodeport_ingress", &packet(proto, (CLIENT, CLIENT_PORT), (NODE, NODE_PORT), RST));
        let late = packet(proto, (REMOTE_BACKEND, BACKEND_PORT), (NODE, snat_port), ACK);
        assert_eq!(bpf.run("nodeport_ingress", &late).1, late, "after the RST the reply entry is gone");
        let stray = packet(proto, (CLIENT, CLIENT_PORT), (NODE, NODE_PORT), ACK);
        assert_eq!(bpf.run("nodeport_ingress", &stray), (u32::MAX, stray), "a non-SYN opens no connection (TC_ACT_UNSPEC)");
    }
}

#[test]
fn tcp_to_a_local_backend_is_dnatted_and_reverse_natted() {
    local_backend_dnat_and_reverse(IPPROTO_TCP);
}

#[test]
fn udp_to_a_local_backend_is_dnatted_and_reverse_natted() {
    local_backend_dnat_and_reverse(IPPROTO_UDP);
}

#[test]
fn tcp_to_a_remote_backend_is_dnatted_snatted_and_reverse_natted() {
    remote_backend_dnat_snat_and_reverse(IPPROTO_TCP);
}

#[test]
fn udp_to_a_remote_backend_is_dnatted_snatted_and_reverse_natted() {
    remote_backend_dnat_snat_and_reverse(IPPROTO_UDP);
}

/// With a Maglev table the tc program picks, for each connection, the
/// backend the table's entry for the connection's hash names (the hash
/// leaves out the node address, so any node picks the same).
#[test]
fn maglev_picks_the_backend_of_the_connections_table_entry() {
    let Some(mut bpf) = load() else { return };
    let backends: Vec<Backend> =
        (1..=3).map(|i| Backend { ip: be(Ipv4Addr::new(10, 244, i, 7)), port: BACKEND_PORT.to_be(), flags: 0, pad: 0 }).collect();
    let size = maglev::table_size(backends.len());
    let table = maglev::table(&backends, size);
    {
        let mut map: HashMap<&mut MapData, u32, Backend> = bpf.ebpf.map_mut(maps::BACKENDS).unwrap().try_into().unwrap();
        for (i, backend) in backends.iter().enumerate() {
            map.insert(i as u32 + 1, backend, 0).unwrap();
        }
        let mut slots: HashMap<&mut MapData, SlotKey, u32> = bpf.ebpf.map_mut(maps::SLOTS).unwrap().try_into().unwrap();
        for slot in 0..3 {
            slots.insert(SlotKey { list: 1, slot }, slot + 1, 0).unwrap();
        }
        let mut entries: HashMap<&mut MapData, SlotKey, u32> = bpf.ebpf.map_mut(maps::MAGLEV).unwrap().try_into().unwrap();
        for (index, chosen) in table.iter().enumerate() {
            entries.insert(SlotKey { list: 1, slot: index as u32 }, *chosen as u32 + 1, 0).unwrap();
        }
        let mut services: HashMap<&mut MapData, ServiceKey, Service> = bpf.ebpf.map_mut(maps::SERVICES).unwrap().try_into().unwrap();
        let key = ServiceKey { ip: be(NODE), port: NODE_PORT.to_be(), proto: IPPROTO_TCP, origin: ORIGIN_WIRE };
        services
            .insert(key, Service { id: 1, list: 1, count: 3, flags: SERVICE_EXTERNAL, affinity_timeout: 0, maglev_size: size }, 0)
            .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    for client_port in 40000..40060u16 {
        let (_, out) = bpf.run("nodeport_ingress", &packet(IPPROTO_TCP, (CLIENT, client_port), (NODE, NODE_PORT), SYN));
        let (_, (backend, _)) = tuple(&out);
        let flow = FlowKey {
            src_ip: be(CLIENT),
            dst_ip: be(Ipv4Addr::new(198, 51, 100, 99)),
            src_port: client_port.to_be(),
            dst_port: NODE_PORT.to_be(),
            proto: IPPROTO_TCP,
            pad: [0; 3],
        };
        let expected = backends[table[(maglev_flow_hash(&flow) % size) as usize]];
        assert_eq!(be(backend), expected.ip, "client port {client_port}");
        seen.insert(backend);
    }
    assert_eq!(seen.len(), 3, "60 connections spread over all three backends: {seen:?}");
}

//! The pod network against real kernel objects.
//!
//! Every test builds its own world of network namespaces named
//! `hawser-<run-id>-<role>` and runs the agent's code on a thread that has
//! entered a "node" namespace, so the host's own network is never touched;
//! traffic flows only between namespaces the test made, and the world is
//! removed on drop, even when an assertion fails. The world is built and
//! inspected with iproute2 and iptables-save, observers independent of the
//! netlink code under test. Needs root; skipped (with a message) otherwise.

use hawser_agent::network::ipam::Ipam;
use hawser_agent::network::{Config, NodeNetwork, PodInterface};
use ipnetwork::Ipv4Network;
use nix::sched::CloneFlags;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A test's namespaces and IPAM state; all of it goes on drop.
struct World {
    run_id: String,
    namespaces: Vec<String>,
    state: tempfile::TempDir,
}

impl World {
    /// Creates a namespace per role, or `None` (having said why) when not root.
    fn new(roles: &[&str]) -> Option<Self> {
        if !is_root() {
            eprintln!("skipping: the pod network tests make network namespaces, veths and bridges, which needs root");
            return None;
        }
        let mut world = Self { run_id: run_id(), namespaces: Vec::new(), state: tempfile::tempdir().expect("a temporary directory") };
        for role in roles {
            let name = world.netns(role);
            run(Command::new("ip").args(["netns", "add", &name]));
            world.namespaces.push(name);
        }
        Some(world)
    }

    fn netns(&self, role: &str) -> String {
        format!("hawser-{}-{role}", self.run_id)
    }

    fn netns_path(&self, role: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(self.netns(role))
    }

    fn config(&self, pod_cidr: &str) -> Config {
        Config::new(self.state.path(), pod_cidr.parse().unwrap())
    }

    /// `ip -n <role's namespace> args...`, which must succeed; its stdout.
    fn ip(&self, role: &str, args: &[&str]) -> String {
        run(Command::new("ip").arg("-n").arg(self.netns(role)).args(args))
    }

    /// Whether `ip -n <namespace> args...` succeeds (e.g. "does this link exist").
    fn ip_succeeds(&self, role: &str, args: &[&str]) -> bool {
        output(Command::new("ip").arg("-n").arg(self.netns(role)).args(args)).status.success()
    }

    /// A command run inside the role's namespace, with its own /sys.
    fn exec(&self, role: &str, command: &[&str]) -> String {
        run(Command::new("ip").args(["netns", "exec", &self.netns(role)]).args(command))
    }

    /// Deletes a namespace before the world ends (a pod that went away).
    fn delete_netns(&mut self, role: &str) {
        let name = self.netns(role);
        run(Command::new("ip").args(["netns", "del", &name]));
        self.namespaces.retain(|n| *n != name);
    }

    /// Runs `work` on a thread inside the role's namespace.
    fn in_netns<T: Send>(&self, role: &str, work: impl FnOnce() -> T + Send) -> T {
        let path = self.netns_path(role);
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                let netns = File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
                nix::sched::setns(&netns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
                work()
            });
            thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Sets the node up (as a starting agent does) inside its namespace and
    /// runs `body` with it on a runtime of that thread.
    fn on_node<T: Send, F, Fut>(&self, role: &str, config: Config, body: F) -> T
    where
        F: FnOnce(NodeNetwork) -> Fut + Send,
        Fut: Future<Output = T>,
    {
        self.in_netns(role, move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let network = NodeNetwork::setup(config).await.unwrap_or_else(|e| panic!("setting up the node network: {e}"));
                body(network).await
            })
        })
    }

    /// A listener bound inside the role's namespace.
    fn listen(&self, role: &str, addr: SocketAddrV4) -> TcpListener {
        let listener = self.in_netns(role, || TcpListener::bind(addr)).unwrap_or_else(|e| panic!("listening on {addr} in {role}: {e}"));
        listener.set_nonblocking(true).unwrap();
        listener
    }

    /// Connects from inside the role's namespace to `listener` at `addr`,
    /// exchanges a message both ways, and returns the client address the
    /// server saw.
    fn tcp_exchange(&self, from: &str, listener: &TcpListener, addr: SocketAddrV4) -> SocketAddr {
        let mut client = self
            .in_netns(from, || TcpStream::connect_timeout(&addr.into(), TIMEOUT))
            .unwrap_or_else(|e| panic!("connecting from {from} to {addr}: {e}"));
        let (mut server, seen) = accept_within(listener, TIMEOUT).unwrap_or_else(|e| panic!("accepting on {addr}: {e}"));
        for stream in [&client, &server] {
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        }
        client.write_all(b"ping").unwrap();
        let mut buf = [0; 4];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").unwrap();
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        seen
    }

    fn allocations(&self, pod_cidr: &str) -> BTreeMap<Ipv4Addr, String> {
        Ipam::open(self.state.path(), pod_cidr.parse().unwrap()).unwrap().allocated().unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Deleting a namespace deletes every link, route and rule in it.
        for name in self.namespaces.iter().rev() {
            let out = output(Command::new("ip").args(["netns", "del", name]));
            if !out.status.success() {
                eprintln!("cleaning up namespace {name}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status.lines().find_map(|line| line.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1));
    effective == Some("0")
}

/// Unique per world: the process id, the clock and a counter.
fn run_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:x}{:x}", std::process::id(), (nanos ^ NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9)) & 0xffff)
}

fn output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

/// Runs `command`, which must succeed; its stdout.
fn run(command: &mut Command) -> String {
    let out = output(command);
    assert!(out.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn accept_within(listener: &TcpListener, timeout: Duration) -> io::Result<(TcpStream, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false)?;
                return Ok((stream, peer));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e),
        }
    }
}

/// The interface index of link `name` in the role's namespace.
fn link_index(world: &World, role: &str, name: &str) -> u32 {
    let line = world.ip(role, &["-o", "link", "show", "dev", name]);
    line.split(':').next().and_then(|index| index.trim().parse().ok()).unwrap_or_else(|| panic!("no index in {line:?}"))
}

/// Checks a pod's namespace: `eth0` with the address and MTU, `lo` up, and
/// a default route via the gateway.
fn assert_pod_wired(world: &World, role: &str, pod: &PodInterface) {
    let eth0 = world.ip(role, &["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(eth0.contains(&format!("inet {}/{}", pod.ip, pod.prefix)), "{role} eth0: {eth0}");
    let link = world.ip(role, &["-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains(&format!("mtu {}", pod.mtu)) && link.contains(",UP"), "{role} eth0: {link}");
    let lo = world.ip(role, &["-o", "link", "show", "dev", "lo"]);
    assert!(lo.contains(",UP"), "{role} lo: {lo}");
    let default = world.ip(role, &["-4", "route", "show", "default"]);
    assert!(default.starts_with(&format!("default via {} dev eth0 ", pod.gateway)) && default.lines().count() == 1, "{role}: {default}");
}

#[test]
fn pods_on_one_node_get_distinct_addresses_and_reach_each_other() {
    let Some(world) = World::new(&["node", "pod-a", "pod-b"]) else { return };
    let (path_a, path_b) = (world.netns_path("pod-a"), world.netns_path("pod-b"));
    let (a, b) = world.on_node("node", world.config("10.244.1.0/24"), move |network| async move {
        let a = network.attach_pod("uid-a", &path_a).await.unwrap();
        let b = network.attach_pod("uid-b", &path_b).await.unwrap();
        (a, b)
    });

    let cidr: Ipv4Network = "10.244.1.0/24".parse().unwrap();
    let gateway = Ipv4Addr::new(10, 244, 1, 1);
    assert_ne!(a.ip, b.ip);
    for pod in [&a, &b] {
        assert!(cidr.contains(pod.ip) && ![cidr.network(), gateway, cidr.broadcast()].contains(&pod.ip), "{pod:?}");
        assert_eq!((pod.gateway, pod.prefix, pod.mtu), (gateway, 24, 1500), "no default route in the node: the fallback MTU");
    }
    assert_pod_wired(&world, "pod-a", &a);
    assert_pod_wired(&world, "pod-b", &b);

    // The host ends: ports of the bridge, with hairpin on.
    for pod in [&a, &b] {
        let link = world.ip("node", &["-o", "link", "show", "dev", &pod.host_veth]);
        assert!(link.contains("master hawser0") && link.contains("mtu 1500") && link.contains(",UP"), "{link}");
        let hairpin = world.exec("node", &["cat", &format!("/sys/class/net/{}/brport/hairpin_mode", pod.host_veth)]);
        assert_eq!(hairpin.trim(), "1", "hairpin on {}", pod.host_veth);
    }

    // Pod A reaches pod B at its own address, unNATed.
    let at_b = SocketAddrV4::new(b.ip, 8080);
    let listener = world.listen("pod-b", at_b);
    assert_eq!(world.tcp_exchange("pod-a", &listener, at_b).ip(), a.ip);
}

#[test]
fn attach_is_idempotent_and_detach_releases_the_veth_and_the_address() {
    let Some(mut world) = World::new(&["node", "old-sandbox", "pod", "gone", "clash"]) else { return };
    let cidr = "10.244.2.0/24";
    let (old_path, path) = (world.netns_path("old-sandbox"), world.netns_path("pod"));

    // The pod's first sandbox, then a new one (the pair moves to it, the
    // address stays), then a retry in the same sandbox (nothing changes).
    let (old, first, again) = world.on_node("node", world.config(cidr), {
        let path = path.clone();
        move |network| async move {
            let old = network.attach_pod("uid-c", &old_path).await.unwrap();
            let first = network.attach_pod("uid-c", &path).await.unwrap();
            (old, first, network.attach_pod("uid-c", &path).await.unwrap())
        }
    });
    assert_eq!(old, first);
    assert!(!world.ip_succeeds("old-sandbox", &["link", "show", "dev", "eth0"]), "the old sandbox's end went with its pair");
    let host_index = link_index(&world, "node", &first.host_veth);
    // And once more by a restarted agent (a new setup over the same state).
    let after_restart = world.on_node("node", world.config(cidr), {
        let path = path.clone();
        move |network| async move { network.attach_pod("uid-c", &path).await.unwrap() }
    });
    assert_eq!(first, again);
    assert_eq!(first, after_restart);
    assert_eq!(link_index(&world, "node", &first.host_veth), host_index, "the pair was kept, not remade");
    assert_pod_wired(&world, "pod", &first);
    assert_eq!(world.ip("node", &["-o", "link", "show", "type", "veth"]).lines().count(), 1, "one veth for the pod");
    assert_eq!(world.ip("pod", &["-o", "link", "show"]).lines().count(), 2, "lo and eth0 in the pod");
    assert_eq!(world.allocations(cidr), BTreeMap::from([(first.ip, "uid-c".to_string())]));

    world.on_node("node", world.config(cidr), move |network| async move {
        network.detach_pod("uid-c").await.unwrap();
        network.detach_pod("uid-c").await.expect("detaching twice is fine");
    });
    assert!(!world.ip_succeeds("node", &["link", "show", "dev", &first.host_veth]), "the host veth is gone");
    assert!(!world.ip_succeeds("pod", &["link", "show", "dev", "eth0"]), "and its peer with it");
    assert!(world.allocations(cidr).is_empty(), "the address is released");

    // A pod whose namespace is gone before it is detached.
    let gone_path = world.netns_path("gone");
    let gone =
        world.on_node("node", world.config(cidr), move |network| async move { network.attach_pod("uid-gone", &gone_path).await.unwrap() });
    world.delete_netns("gone");
    world.on_node("node", world.config(cidr), move |network| async move { network.detach_pod("uid-gone").await.unwrap() });
    assert!(!world.ip_succeeds("node", &["link", "show", "dev", &gone.host_veth]));
    assert!(world.allocations(cidr).is_empty());

    // A failed attach says what failed on what, and leaves nothing behind.
    world.ip("clash", &["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]);
    let (clash_path, missing_path) = (world.netns_path("clash"), world.netns_path("never-made"));
    let (clash, missing) = world.on_node("node", world.config(cidr), move |network| async move {
        (
            network.attach_pod("uid-clash", &clash_path).await.unwrap_err(),
            network.attach_pod("uid-missing", &missing_path).await.unwrap_err(),
        )
    });
    let veth = hawser_agent::network::host_veth_name("uid-clash");
    assert_eq!(clash.to_string(), format!("creating veth {veth} for pod uid-clash: File exists (os error 17)"));
    assert!(
        missing
            .to_string()
            .starts_with(&format!("opening network namespace {} of pod uid-missing: ", world.netns_path("never-made").display())),
        "{missing}"
    );
    assert!(world.allocations(cidr).is_empty(), "failed attaches keep no address");
    assert!(world.ip("node", &["-o", "link", "show", "type", "veth"]).is_empty(), "and no veth");
}

#[test]
fn nodes_route_to_each_others_pods_and_only_our_routes_are_touched() {
    let Some(world) = World::new(&["node1", "node2", "pod1", "pod2"]) else { return };
    // The underlay: the nodes' InternalIPs on one link, MTU 1400.
    world.ip(
        "node1",
        &["link", "add", "under0", "mtu", "1400", "type", "veth", "peer", "name", "under0", "mtu", "1400", "netns", &world.netns("node2")],
    );
    for (node, addr) in [("node1", "198.51.100.1/24"), ("node2", "198.51.100.2/24")] {
        world.ip(node, &["addr", "add", addr, "dev", "under0"]);
        world.ip(node, &["link", "set", "under0", "up"]);
    }
    // Node 1's MTU comes from its default route's interface; node 2's is configured.
    world.ip("node1", &["route", "add", "default", "via", "198.51.100.2"]);
    world.ip("node1", &["route", "add", "10.244.9.0/24", "via", "198.51.100.2"]); // not ours
    let node2_config = Config { mtu: Some(1400), ..world.config("10.244.2.0/24") };
    let peers: Vec<(Ipv4Network, Ipv4Addr)> = vec![
        ("10.244.1.0/24".parse().unwrap(), Ipv4Addr::new(198, 51, 100, 1)),
        ("10.244.2.0/24".parse().unwrap(), Ipv4Addr::new(198, 51, 100, 2)),
    ];

    let pod1 = world.on_node("node1", world.config("10.244.1.0/24"), {
        let (path, peers) = (world.netns_path("pod1"), peers.clone());
        move |network| async move {
            network.sync_peer_routes(&peers).await.unwrap();
            network.attach_pod("uid-1", &path).await.unwrap()
        }
    });
    let pod2 = world.on_node("node2", node2_config, {
        let (path, peers) = (world.netns_path("pod2"), peers.clone());
        move |network| async move {
            network.sync_peer_routes(&peers).await.unwrap();
            network.attach_pod("uid-2", &path).await.unwrap()
        }
    });
    assert_eq!((pod1.mtu, pod2.mtu), (1400, 1400));
    assert_pod_wired(&world, "pod1", &pod1);
    assert_pod_wired(&world, "pod2", &pod2);

    let to_node2 = world.ip("node1", &["route", "show", "10.244.2.0/24"]);
    assert_eq!(to_node2.trim(), "10.244.2.0/24 via 198.51.100.2 dev under0 proto 72");
    let own = world.ip("node1", &["route", "show", "10.244.1.0/24"]);
    assert!(own.trim().starts_with("10.244.1.0/24 dev hawser0 proto kernel") && own.lines().count() == 1, "own CIDR untouched: {own}");

    // Pod to pod across nodes, with the pod's own address (no NAT inside the cluster).
    let at_pod2 = SocketAddrV4::new(pod2.ip, 8080);
    let listener = world.listen("pod2", at_pod2);
    assert_eq!(world.tcp_exchange("pod1", &listener, at_pod2).ip(), pod1.ip);
    // Pod to an address outside the cluster: masqueraded to node 1's address.
    let at_node2 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 8081);
    let listener = world.listen("node2", at_node2);
    assert_eq!(world.tcp_exchange("pod1", &listener, at_node2).ip(), Ipv4Addr::new(198, 51, 100, 1));

    // A node that moved, one that cannot be reached directly (tried, reported,
    // and not in the way of the others), then no peers at all.
    let moved = world.on_node("node1", world.config("10.244.1.0/24"), move |network| async move {
        let unreachable = (Ipv4Network::new(Ipv4Addr::new(10, 244, 3, 0), 24).unwrap(), Ipv4Addr::new(203, 0, 113, 1));
        let moved = (Ipv4Network::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap(), Ipv4Addr::new(198, 51, 100, 3));
        network.sync_peer_routes(&[unreachable, moved]).await.unwrap_err()
    });
    assert_eq!(moved.to_string(), "adding route to pod CIDR 10.244.3.0/24 via node 203.0.113.1: Network is unreachable (os error 101)");
    assert_eq!(world.ip("node1", &["route", "show", "10.244.2.0/24"]).trim(), "10.244.2.0/24 via 198.51.100.3 dev under0 proto 72");

    world.on_node("node1", world.config("10.244.1.0/24"), move |network| async move { network.sync_peer_routes(&[]).await.unwrap() });
    assert_eq!(world.ip("node1", &["route", "show", "proto", "72"]), "", "our routes are gone");
    assert_eq!(
        world.ip("node1", &["route", "show", "10.244.9.0/24"]).trim(),
        "10.244.9.0/24 via 198.51.100.2 dev under0",
        "a foreign route survives"
    );
    assert!(world.ip("node1", &["route", "show", "default"]).contains("via 198.51.100.2"), "and so does the default route");
}

/// Asserts setup's state in the node; returns nothing, panics on a difference.
fn assert_node_set_up(world: &World) {
    let addresses = world.ip("node", &["-4", "-o", "addr", "show", "dev", "hawser0"]);
    assert_eq!(addresses.lines().count(), 1, "exactly the gateway address: {addresses}");
    assert!(addresses.contains("inet 10.244.3.1/24"), "{addresses}");
    let link = world.ip("node", &["-d", "-o", "link", "show", "dev", "hawser0"]);
    assert!(link.contains(",UP") && link.contains("link/ether 0a:58:0a:f4:03:01") && link.contains("nf_call_iptables 1"), "{link}");
    assert_eq!(world.exec("node", &["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(), "1");

    let nat = world.exec("node", &["iptables-save", "-t", "nat"]);
    assert!(
        nat.contains("-A HAWSER-POD-EGRESS -s 10.244.3.0/24 ! -d 10.244.0.0/16 -m comment --comment \"pod traffic leaving the cluster network\" -j MASQUERADE"),
        "{nat}"
    );
    assert_eq!(nat.lines().filter(|l| l.starts_with("-A POSTROUTING") && l.ends_with("-j HAWSER-POD-EGRESS")).count(), 1, "{nat}");
    let filter = world.exec("node", &["iptables-save", "-t", "filter"]);
    assert!(
        filter.contains("-A HAWSER-POD-FORWARD -s 10.244.3.0/24") && filter.contains("-A HAWSER-POD-FORWARD -d 10.244.3.0/24"),
        "{filter}"
    );
    assert_eq!(filter.lines().filter(|l| l.starts_with("-A FORWARD") && l.ends_with("-j HAWSER-POD-FORWARD")).count(), 1, "{filter}");
}

#[test]
fn setup_is_idempotent_and_teardown_removes_everything_it_made() {
    let Some(world) = World::new(&["node", "pod"]) else { return };
    let cidr = "10.244.3.0/24";
    world.ip("node", &["link", "add", "under0", "type", "veth", "peer", "name", "under1"]);
    world.ip("node", &["addr", "add", "198.51.100.1/24", "dev", "under0"]);
    world.ip("node", &["link", "set", "under0", "up"]);

    world.on_node("node", world.config(cidr), |_| async {});
    assert_node_set_up(&world);
    // A stale address (say, from an old pod CIDR) and a second setup.
    world.ip("node", &["addr", "add", "10.244.7.1/24", "dev", "hawser0"]);
    world.on_node("node", world.config(cidr), |_| async {});
    assert_node_set_up(&world);

    let path = world.netns_path("pod");
    let pod = world.on_node("node", world.config(cidr), move |network| async move {
        let pod = network.attach_pod("uid-t", &path).await.unwrap();
        network.sync_peer_routes(&[("10.244.4.0/24".parse().unwrap(), Ipv4Addr::new(198, 51, 100, 4))]).await.unwrap();
        network.teardown().await.unwrap();
        network.teardown().await.expect("tearing down twice is fine");
        pod
    });
    assert!(!world.ip_succeeds("node", &["link", "show", "dev", "hawser0"]), "the bridge is gone");
    assert!(!world.ip_succeeds("node", &["link", "show", "dev", &pod.host_veth]), "the pod's veth is gone");
    assert!(!world.ip_succeeds("pod", &["link", "show", "dev", "eth0"]));
    assert!(world.allocations(cidr).is_empty(), "the pod's address is released");
    assert_eq!(world.ip("node", &["route", "show", "proto", "72"]), "", "the peer routes are gone");
    let rules = world.exec("node", &["iptables-save"]);
    assert!(!rules.contains("HAWSER-POD"), "chains and jumps are gone: {rules}");
    assert!(world.ip_succeeds("node", &["link", "show", "dev", "under0"]), "what is not ours stays");
}

//! Test hosts as network namespaces: an underlay LAN (`198.51.100.0/24`, a
//! documentation range never routed off the machine) and hosts on it, each
//! a network namespace named `hawser-<run id>-<role>`.
//!
//! The LAN is a bridge in a namespace of its own that holds `198.51.100.1`
//! (where the control plane listens); every host gets a veth onto it with
//! its own address. Nothing is added to the machine's own namespace: the
//! test process reaches a server inside a namespace through a
//! [`Forwarder`] on its loopback. Every namespace, link and process made
//! here is removed on drop, also when a test fails.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use std::{fs, thread};

/// The LAN's router address, where the control plane listens.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const LAN_PREFIX: u8 = 24;
const LAN_BRIDGE: &str = "lan0";

/// A short id unique to this process and call, for names that must not
/// collide with another run's: 6 hex digits.
pub fn run_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static BASE: OnceLock<u32> = OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        std::process::id().wrapping_mul(2_654_435_761) ^ nanos
    });
    format!("{:06x}", base.wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst).wrapping_mul(40_503)) & 0xff_ffff)
}

/// Runs `ip` with `args`; panics with its stderr unless it succeeds.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn add(name: &str) -> Self {
        ip(&["netns", "add", name]);
        let ns = Self { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(&self.name, program)
    }

    /// Runs `program args` inside the namespace (bounded by `timeout`).
    pub fn run(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args);
        crate::run_bounded(cmd, timeout)
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        let out = self.run("sysctl", &["-qw", &format!("{key}={value}")], Duration::from_secs(10));
        assert!(out.status.success(), "sysctl {key}={value} in {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// A command that runs `program` inside network namespace `name`. Unlike
/// `ip netns exec`, only the network namespace changes: the program keeps
/// the machine's mounts (`ip netns exec` remounts /sys, which hides the
/// cgroup hierarchies an agent needs).
pub fn command_in(name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let path = Path::new("/run/netns").join(name);
    let ns = fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut cmd = Command::new(program);
    // SAFETY: between fork and exec only setns(2), which is async-signal-safe;
    // the fd stays open in the parent (owned by the closure) until then.
    unsafe {
        cmd.pre_exec(move || if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(io::Error::last_os_error()) });
    }
    cmd
}

/// The underlay LAN: a bridge holding [`GATEWAY`] in its own namespace.
pub struct Lan {
    pub id: String,
    pub ns: Netns,
    next_port: u32,
}

impl Lan {
    pub fn new(id: &str) -> Self {
        let ns = Netns::add(&format!("hawser-{id}-lan"));
        ns.ip(&["link", "add", LAN_BRIDGE, "type", "bridge"]);
        ns.ip(&["addr", "add", &format!("{GATEWAY}/{LAN_PREFIX}"), "dev", LAN_BRIDGE]);
        ns.ip(&["link", "set", LAN_BRIDGE, "up"]);
        Self { id: id.to_string(), ns, next_port: 0 }
    }

    /// A new host `role` at `address` on the LAN (its `eth0`), with a
    /// default route via the LAN's router.
    pub fn add_host(&mut self, role: &str, address: Ipv4Addr) -> Netns {
        let host = Netns::add(&format!("hawser-{}-{role}", self.id));
        self.next_port += 1;
        // The LAN end's name must fit IFNAMSIZ and be unique within the LAN namespace.
        let port = format!("p{}-{}", self.id, self.next_port);
        self.ns.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host.name]);
        self.ns.ip(&["link", "set", &port, "master", LAN_BRIDGE, "up"]);
        host.ip(&["addr", "add", &format!("{address}/{LAN_PREFIX}"), "dev", "eth0"]);
        host.ip(&["link", "set", "eth0", "up"]);
        host.ip(&["route", "add", "default", "via", &GATEWAY.to_string()]);
        host
    }
}

/// Accepts TCP connections on this process's loopback and connects each to
/// `target` from inside a network namespace: how the test process (and
/// kubectl) reach a server in a namespace without adding anything to the
/// machine's own network.
pub struct Forwarder {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    pub fn start(netns: &Netns, target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the forwarder");
        let port = listener.local_addr().expect("forwarder address").port();
        let ns_file = fs::File::open(netns.path()).unwrap_or_else(|e| panic!("open {}: {e}", netns.path().display()));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        thread::spawn(move || {
            // Sockets belong to the namespace of the thread that creates
            // them: the listener was made outside, every connect is made in
            // here.
            // SAFETY: setns(2) on this thread only, with a valid namespace fd.
            let rc = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into the forwarder's namespace: {}", io::Error::last_os_error());
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else { continue };
                pipe(client, upstream);
            }
        });
        Self { port, stop }
    }
}

/// Copies bytes both ways until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().expect("clone socket"), b.try_clone().expect("clone socket"));
    for (mut from, mut to) in [(a, b2), (b, a2)] {
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Kills every process in cgroup `name` (at the top of each hierarchy) and
/// its descendants, then removes the cgroups: what an agent's pods leave
/// (their supervisors live outside the agent's process tree on purpose).
pub fn remove_cgroup_tree(name: &str) {
    let roots = cgroup_roots(name);
    for _ in 0..50 {
        let mut any = false;
        for root in &roots {
            for dir in walk(root) {
                for pid in
                    fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse::<i32>().ok())
                {
                    any = true;
                    // SAFETY: kill(2) with a pid read from the cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if !any {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    for root in &roots {
        let mut dirs = walk(root);
        // Children before parents.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let _ = fs::remove_dir(&dir);
        }
    }
}

fn cgroup_roots(name: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut roots = vec![base.join(name), base.join("unified").join(name)];
    for controller in ["cpu", "cpu,cpuacct", "memory"] {
        roots.push(base.join(controller).join(name));
    }
    roots.into_iter().filter(|r| r.is_dir()).collect()
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut found = vec![root.to_path_buf()];
    let mut i = 0;
    while i < found.len() {
        if let Ok(entries) = fs::read_dir(&found[i]) {
            found.extend(entries.flatten().filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false)).map(|e| e.path()));
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_short_and_distinct() {
        let (a, b) = (run_id(), run_id());
        assert_eq!(a.len(), 6);
        assert_ne!(a, b);
    }
}

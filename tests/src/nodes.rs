//! Real clusters on one machine: nodes are network-namespace hosts on the
//! underlay LAN ([`crate::netns`]), each running a real `hawser agent`, so
//! pods are real processes with real addresses.
//!
//! - [`NetnsCluster`]: the control plane on the LAN's router address and N
//!   agents (`n1`, `n2`, ... at 198.51.100.11, .12, ...).
//! - [`OneNode`]: `hawser up` (control plane and agent in one process)
//!   inside one host, as a user runs it on a machine.
//!
//! Either runs its pods with the [`Runtime`] it is started with: the
//! embedded process runtime (pods run the host's test server binary), or
//! Docker: one [`Dockerd`] per cluster in the machine's own network
//! namespace, which every agent reaches over its unix socket
//! (`--runtime docker --docker-socket ...`), building the pause image from
//! the static pause binary (`--pause-image ... --pause-binary ...`); pods
//! run the `FROM scratch` test server image. A test writes its pods with
//! [`Runtime::server_command`] and [`Runtime::server_image`], so the same
//! test code runs against both.
//!
//! Dropping either (also when a test fails) kills the agents and every pod
//! process (by the agents' cgroups, and by stopping the dockerd), then
//! deletes the namespaces, links and files.

use crate::docker::{Dockerd, TEST_SERVER_IMAGE, TEST_SERVER_PATH, static_test_server};
use crate::netns::{self, Lan, Netns};
use crate::{TestCluster, block_on, hawser_binary, poll_until};
use std::fs::{self, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Where the API server listens inside the LAN namespace.
const API_PORT: u16 = 6443;

/// The node resolv.conf test agents get unless a test gives its own
/// (`--resolv-conf`): no nameserver, so cluster DNS forwards nothing and no
/// query leaves the machine; a search domain pods inherit.
pub const ISOLATED_RESOLV_CONF: &str = "# hawser test host: no upstream DNS server\nsearch example.test\n";

/// `args` plus `--resolv-conf <dir>/resolv.conf` (written with
/// [`ISOLATED_RESOLV_CONF`]) unless they name one already.
fn with_isolated_resolv_conf(dir: &std::path::Path, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if !args.contains(&"--resolv-conf") {
        let path = dir.join("resolv.conf");
        fs::write(&path, ISOLATED_RESOLV_CONF).expect("write the test resolv.conf");
        all.extend(["--resolv-conf".to_string(), path.to_str().expect("utf-8 path").to_string()]);
    }
    all
}

/// The test HTTP server (crate `test-server`), built next to `hawser`.
pub fn test_server_binary() -> PathBuf {
    let path = hawser_binary().with_file_name("hawser-test-server");
    assert!(path.exists(), "{} is missing: build the workspace first (cargo build --workspace)", path.display());
    path
}

/// The container runtime a test cluster's agents run pods with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// The embedded process runtime: pods run programs of the host.
    Process,
    /// Docker, through a dockerd of the cluster's own.
    Docker,
}

impl Runtime {
    /// The test server as a pod's `command[0]`: the host's binary for the
    /// process runtime, the binary inside [`TEST_SERVER_IMAGE`] for Docker.
    pub fn server_command(self) -> String {
        match self {
            Runtime::Process => test_server_command(),
            Runtime::Docker => TEST_SERVER_PATH.to_string(),
        }
    }

    /// A test server pod's `image` (the process runtime only records it).
    pub fn server_image(self) -> &'static str {
        match self {
            Runtime::Process => "hawser-test-server",
            Runtime::Docker => TEST_SERVER_IMAGE,
        }
    }

    /// For Docker: a dockerd of the cluster's own with the test server
    /// image in it, and the agent flags that use it.
    fn start(self, what: &str) -> (Option<Dockerd>, Vec<String>) {
        match self {
            Runtime::Process => (None, Vec::new()),
            Runtime::Docker => {
                let dockerd = Dockerd::start(what);
                block_on(dockerd.build_image(TEST_SERVER_IMAGE, &static_test_server()));
                let args = dockerd.agent_args();
                (Some(dockerd), args)
            }
        }
    }
}

/// One network-namespace host running a node agent (or `hawser up`).
pub struct AgentHost {
    pub name: String,
    pub ip: Ipv4Addr,
    pub cgroup_root: String,
    /// Where the agent's eBPF proxy pins its programs and maps (removed,
    /// which detaches them, when the host goes).
    pub bpf_pin_dir: PathBuf,
    agent: Option<Child>,
    agent_args: Vec<String>,
    /// Extra environment of the agent process (e.g. `RUST_LOG`).
    agent_env: Vec<(String, String)>,
    log: PathBuf,
    /// Dropped last: the namespace goes once its processes are gone.
    pub ns: Netns,
}

impl AgentHost {
    /// Host `name` at `ip` on `lan`, its agent (once started) logging to `log`.
    pub fn new(lan: &mut Lan, name: &str, ip: Ipv4Addr, log: PathBuf) -> Self {
        let ns = lan.add_host(name, ip);
        let cgroup_root = format!("hawser-{}-{name}", lan.id);
        let bpf_pin_dir = PathBuf::from(format!("/sys/fs/bpf/{cgroup_root}"));
        Self { name: name.to_string(), ip, cgroup_root, bpf_pin_dir, agent: None, agent_args: Vec::new(), agent_env: Vec::new(), log, ns }
    }

    /// Runs `program args` on this host (inside its namespace).
    pub fn run(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        self.ns.run(program, args, Duration::from_secs(30))
    }

    /// `GET url` from this host with the test server's client: the body,
    /// or why it failed.
    pub fn fetch(&self, url: &str) -> Result<String, String> {
        let out = self.run(test_server_binary(), &["fetch", url]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).trim().to_string())
        }
    }

    fn spawn_agent(&mut self) {
        let log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open agent log");
        let child = self
            .ns
            .command(hawser_binary())
            .arg("agent")
            .args(&self.agent_args)
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn hawser agent");
        self.agent = Some(child);
    }

    /// The agent's process id while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// SIGKILL to the agent, as a crash.
    pub fn kill9_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the agent again with the same flags and state.
    pub fn restart_agent(&mut self) {
        self.kill9_agent();
        self.spawn_agent();
    }

    /// The agent's log file (stdout and stderr of every start, appended).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for AgentHost {
    fn drop(&mut self) {
        if std::thread::panicking() && self.agent.is_some() {
            eprintln!("--- agent {} log tail ---\n{}\n--- end ---", self.name, self.log_tail(40));
        }
        self.kill9_agent();
        netns::remove_cgroup_tree(&self.cgroup_root);
        let _ = std::fs::remove_dir_all(&self.bpf_pin_dir);
    }
}

/// The control plane and N agents on network-namespace hosts.
pub struct NetnsCluster {
    /// Dropped first: agents and pods go before the server.
    pub nodes: Vec<AgentHost>,
    pub control: TestCluster,
    pub lan: Lan,
    pub runtime: Runtime,
    /// The agents' engine (Docker only), dropped last: stopping it ends
    /// the pods' containers.
    pub dockerd: Option<Dockerd>,
}

impl std::ops::Deref for NetnsCluster {
    type Target = TestCluster;
    fn deref(&self) -> &TestCluster {
        &self.control
    }
}

impl std::ops::DerefMut for NetnsCluster {
    fn deref_mut(&mut self) -> &mut TestCluster {
        &mut self.control
    }
}

impl NetnsCluster {
    /// Starts the control plane (with `server_args`) and `nodes` agents, and
    /// waits until every node is Ready with a pod CIDR.
    pub fn start(nodes: usize, server_args: &[&str]) -> Self {
        Self::start_with(nodes, server_args, &[])
    }

    /// As [`start`](Self::start), with extra `hawser agent` flags.
    pub fn start_with(count: usize, server_args: &[&str], agent_args: &[&str]) -> Self {
        Self::start_on(Runtime::Process, count, server_args, agent_args)
    }

    /// As [`start_with`](Self::start_with), with extra environment for
    /// every agent (e.g. `RUST_LOG` for a benchmark reading its debug lines).
    pub fn start_with_env(count: usize, server_args: &[&str], agent_args: &[&str], agent_env: &[(&str, &str)]) -> Self {
        Self::start_full(Runtime::Process, count, server_args, agent_args, agent_env)
    }

    /// As [`start_with`](Self::start_with), the agents running pods with
    /// `runtime` (Docker: one dockerd for all of them).
    pub fn start_on(runtime: Runtime, count: usize, server_args: &[&str], agent_args: &[&str]) -> Self {
        Self::start_full(runtime, count, server_args, agent_args, &[])
    }

    fn start_full(runtime: Runtime, count: usize, server_args: &[&str], agent_args: &[&str], agent_env: &[(&str, &str)]) -> Self {
        // First made, last dropped should the start fail.
        let (dockerd, runtime_args) = runtime.start("a netns cluster");
        let mut lan = Lan::new(&netns::run_id());
        let mut args = vec!["--advertise-address", "198.51.100.1"];
        args.extend_from_slice(server_args);
        let control = TestCluster::start_in(&lan.ns, "server", SocketAddr::from((netns::GATEWAY, API_PORT)), &args);
        let token_file = control.dir().join("agent-token");
        fs::write(&token_file, control.token()).expect("write the agent token");
        let ca = control.data_dir().join("pki").join("ca.crt");
        let agent_args = with_isolated_resolv_conf(control.dir(), agent_args);
        let mut nodes = Vec::new();
        for i in 1..=count {
            let name = format!("n{i}");
            let ip = Ipv4Addr::new(198, 51, 100, 10 + i as u8);
            let mut host = AgentHost::new(&mut lan, &name, ip, control.dir().join(format!("agent-{name}.log")));
            let data = control.dir().join(format!("agent-{name}"));
            host.agent_args = [
                "--server",
                &format!("https://{}:{API_PORT}", netns::GATEWAY),
                "--token-file",
                token_file.to_str().expect("utf-8 path"),
                "--certificate-authority",
                ca.to_str().expect("utf-8 path"),
                "--node-name",
                &name,
                "--node-ip",
                &ip.to_string(),
                "--agent-data-dir",
                data.to_str().expect("utf-8 path"),
                "--cgroup-root",
                &host.cgroup_root,
                "--bpf-pin-dir",
                host.bpf_pin_dir.to_str().expect("utf-8 path"),
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(runtime_args.iter().cloned())
            .chain(agent_args.iter().cloned())
            .collect();
            host.agent_env = agent_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            host.spawn_agent();
            nodes.push(host);
        }
        let cluster = Self { nodes, control, lan, runtime, dockerd };
        cluster.wait_nodes_ready();
        cluster
    }

    /// Waits until every node reports Ready and has a pod CIDR.
    pub fn wait_nodes_ready(&self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        wait_nodes_ready(&self.control, &names);
    }

    pub fn node(&self, name: &str) -> &AgentHost {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn node_mut(&mut self, name: &str) -> &mut AgentHost {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }
}

fn wait_nodes_ready(cluster: &TestCluster, names: &[String]) {
    // A bound, not a speed check: with the proxy suite's 10,000-service
    // test running beside it, a start can take over a minute on 2 cores.
    poll_until(Duration::from_secs(180), "every node Ready with a pod CIDR", || {
        let nodes = cluster.kubectl_json(&["get", "nodes", "-o", "json"]);
        let items = nodes["items"].as_array().cloned().unwrap_or_default();
        let ready = |n: &serde_json::Value| {
            n["spec"]["podCIDR"].is_string()
                && n["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        };
        names.iter().all(|name| items.iter().any(|n| n["metadata"]["name"] == name.as_str() && ready(n))).then_some(())
    });
}

/// `hawser up` inside one host: the one-machine cluster a user runs.
pub struct OneNode {
    pub cluster: TestCluster,
    /// The node's resolv.conf ([`ISOLATED_RESOLV_CONF`]).
    _resolv_conf: tempfile::TempDir,
    pub host: AgentHost,
    pub lan: Lan,
    pub runtime: Runtime,
    /// The agent's engine (Docker only), dropped last.
    pub dockerd: Option<Dockerd>,
}

impl std::ops::Deref for OneNode {
    type Target = TestCluster;
    fn deref(&self) -> &TestCluster {
        &self.cluster
    }
}

impl Drop for OneNode {
    fn drop(&mut self) {
        // The pods' processes go before the cluster's files do.
        self.cluster.kill9();
        netns::remove_cgroup_tree(&self.host.cgroup_root);
        let _ = std::fs::remove_dir_all(&self.host.bpf_pin_dir);
    }
}

impl OneNode {
    /// `hawser up` as node `n1` at 198.51.100.11, with extra flags.
    pub fn start(args: &[&str]) -> Self {
        Self::start_on(Runtime::Process, args)
    }

    /// As [`start`](Self::start), running pods with `runtime`.
    pub fn start_on(runtime: Runtime, args: &[&str]) -> Self {
        // First made, last dropped should the start fail.
        let (dockerd, runtime_args) = runtime.start("hawser up in a netns host");
        let mut lan = Lan::new(&netns::run_id());
        let host = AgentHost::new(&mut lan, "n1", Ipv4Addr::new(198, 51, 100, 11), PathBuf::from("/dev/null"));
        let pin_dir = host.bpf_pin_dir.to_str().expect("utf-8 path");
        let mut all = vec!["--node-name", "n1", "--cgroup-root", host.cgroup_root.as_str(), "--bpf-pin-dir", pin_dir];
        all.extend(runtime_args.iter().map(String::as_str));
        all.extend_from_slice(args);
        let resolv_conf = tempfile::Builder::new().prefix("hawser-resolv-").tempdir().expect("a temporary directory");
        let all = with_isolated_resolv_conf(resolv_conf.path(), &all);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let cluster = TestCluster::start_in(&host.ns, "up", SocketAddr::from(([0, 0, 0, 0], API_PORT)), &all);
        wait_nodes_ready(&cluster, &["n1".to_string()]);
        Self { cluster, _resolv_conf: resolv_conf, host, lan, runtime, dockerd }
    }

    /// Kills `hawser up` (control plane and agent) and starts it again.
    pub fn restart(&mut self) {
        self.cluster.restart();
    }
}

/// `Command` for the test server, for pod specs: its absolute path.
pub fn test_server_command() -> String {
    test_server_binary().to_str().expect("utf-8 path").to_string()
}

/// Runs `cmd` and returns its stdout, panicking with its stderr on failure.
pub fn output_of(mut cmd: Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl AgentHost {
    /// The processes of container `container` of pod `uid`, read from the
    /// agent's cgroups (pure v2 or hybrid layout).
    pub fn container_pids(&self, uid: &str, container: &str) -> Vec<u32> {
        let base = std::path::Path::new("/sys/fs/cgroup");
        [base.to_path_buf(), base.join("unified")]
            .iter()
            .map(|root| root.join(&self.cgroup_root).join(format!("pod{uid}")).join(container).join("cgroup.procs"))
            .find_map(|procs| fs::read_to_string(procs).ok())
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether any cgroup of pod `uid` is left on this node.
    pub fn pod_cgroup_exists(&self, uid: &str) -> bool {
        let base = std::path::Path::new("/sys/fs/cgroup");
        [base.to_path_buf(), base.join("unified")].iter().any(|root| root.join(&self.cgroup_root).join(format!("pod{uid}")).exists())
    }

    /// The names of the veth interfaces in this host's namespace.
    pub fn veths(&self) -> Vec<String> {
        self.ns
            .ip(&["-o", "link", "show", "type", "veth"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .filter(|name| name != "eth0")
            .collect()
    }
}

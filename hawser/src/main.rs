//! `hawser`: one binary for every role.
//!
//! - `hawser server`: the control plane: the API server over the store, the
//!   scheduler and the controllers (which reach the API server over HTTPS,
//!   like any other client).
//! - `hawser agent`: the node agent: registers this machine as a Node, wires
//!   the pod network and runs the pods bound to it.
//! - `hawser up`: everything one machine needs, in the foreground: the
//!   control plane and an agent for this machine.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hawser_agent::agent::{AgentConfig, RuntimeKind};
use hawser_control_plane::apiserver::{Config, Server};
use hawser_control_plane::{controllers, scheduler};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "hawser", version, about = "A small, fast, networking-first Kubernetes-style cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the Kubernetes API over HTTPS on a durable store.
    Server(ServerArgs),
    /// Run the node agent: register this node and run its pods.
    Agent(AgentArgs),
    /// Bring up a one-machine cluster in the foreground: control plane and agent.
    Up(UpArgs),
    /// The process runtime's per-pod supervisor, started by the node agent.
    #[command(hide = true)]
    PodSupervisor(PodSupervisorArgs),
}

#[derive(clap::Args)]
struct PodSupervisorArgs {
    /// The pod's directory in the runtime's state (it holds `sandbox.json`).
    #[arg(long)]
    dir: PathBuf,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where the store, certificates, tokens and kubeconfig live.
    #[arg(long, default_value = "/var/lib/hawser")]
    data_dir: PathBuf,
    /// Address and port to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// `redb` (embedded, in the data dir) or `etcd://HOST:PORT[,HOST:PORT...]`.
    #[arg(long, default_value = "redb")]
    store: String,
    /// Run without the scheduler (e.g. to benchmark the API server alone).
    #[arg(long)]
    disable_scheduler: bool,
    /// Run without the controllers.
    #[arg(long)]
    disable_controller_manager: bool,
    /// The address the `kubernetes` Service's Endpoints point at (default:
    /// the listen address, or the host's first non-loopback IPv4 address).
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// How long a node's Lease may go unrenewed before the node is marked Unknown.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    node_monitor_grace_period: Duration,
    /// How long new pods tolerate a not-ready or unreachable node before they
    /// are evicted, unless they say otherwise (Kubernetes' default: 300).
    #[arg(long, default_value_t = 30)]
    default_unreachable_toleration_seconds: u64,
    /// The pod network, split into one block per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: ipnetwork::Ipv4Network,
    /// The prefix length of each node's block of the cluster CIDR.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u8).range(1..=30))]
    node_cidr_mask_size: u8,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The API server's URL.
    #[arg(long, required_unless_present = "cleanup")]
    server: Option<String>,
    /// A file holding the bearer token the agent authenticates with.
    #[arg(long, required_unless_present = "cleanup")]
    token_file: Option<PathBuf>,
    /// The CA certificate that signed the API server's (PEM).
    #[arg(long, required_unless_present_any = ["insecure_skip_tls_verify", "cleanup"])]
    certificate_authority: Option<PathBuf>,
    /// Trust any API server certificate (development only).
    #[arg(long)]
    insecure_skip_tls_verify: bool,
    /// The address other nodes reach this node at (its InternalIP).
    #[arg(long, required_unless_present = "cleanup")]
    node_ip: Option<std::net::Ipv4Addr>,
    /// The cluster's pod network (pod traffic inside it is not masqueraded).
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: ipnetwork::Ipv4Network,
    /// Remove every iptables chain and rule agents made (service proxy
    /// and pod network), then exit. Pods, bridge and routes are left alone.
    #[arg(long)]
    cleanup: bool,
    #[command(flatten)]
    node: NodeArgs,
}

/// What `hawser agent` and `hawser up` share.
#[derive(clap::Args)]
struct NodeArgs {
    /// The Node's name (default: this machine's hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// `process` (embedded: namespaces and host programs) or `docker`.
    #[arg(long, default_value = "process", value_parser = ["process", "docker"])]
    runtime: String,
    /// The Docker engine's socket, for `--runtime docker`.
    #[arg(long, default_value = "/var/run/docker.sock")]
    docker_socket: PathBuf,
    /// The image of the pause container holding each pod's namespaces, for
    /// `--runtime docker` (never pulled: the engine must have it, or
    /// `--pause-binary` builds it).
    #[arg(long, default_value = concat!("hawser-pause:", env!("CARGO_PKG_VERSION")))]
    pause_image: String,
    /// A statically linked `hawser-pause` (crate `pause/`) to build
    /// `--pause-image` from when the engine lacks it.
    #[arg(long)]
    pause_binary: Option<PathBuf>,
    /// Where the agent keeps its state (IPAM, runtime state, pod volumes).
    #[arg(long)]
    agent_data_dir: Option<PathBuf>,
    /// The port logs and exec are served on (0: any free port, reported in the Node).
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// Cluster DNS server addresses pods with `dnsPolicy: ClusterFirst` use.
    #[arg(long, default_value = "10.96.0.10", value_delimiter = ',')]
    cluster_dns: Vec<String>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The node-local DNS address: the agent serves cluster DNS on it and
    /// on the --cluster-dns addresses (a link `hawser-dns` holds them). `none`:
    /// no DNS server on this node.
    #[arg(long, default_value = "169.254.20.10")]
    node_local_dns: String,
    /// How long resolvers may cache cluster DNS answers, in seconds.
    #[arg(long, default_value_t = 5)]
    dns_ttl: u32,
    /// The node's resolv.conf: pods with `dnsPolicy: Default` get it, and
    /// cluster DNS forwards other names to its nameservers.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Most pods this node runs (the Node's `pods` capacity).
    #[arg(long, default_value_t = hawser_agent::node::DEFAULT_MAX_PODS)]
    max_pods: u32,
    /// Labels for the Node, `key=value,...`.
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    /// The cgroup holding this agent's pods (one per agent on a machine).
    #[arg(long, default_value = "hawser")]
    cgroup_root: String,
    /// The service proxy's backend: `ebpf` (socket-level balancing and tc
    /// NodePort; falls back to iptables, with the reason logged, where the
    /// kernel cannot run it) or `iptables`.
    #[arg(long, default_value = "ebpf", value_parser = ["ebpf", "iptables"])]
    proxy_mode: String,
    /// How the eBPF proxy picks a backend for NodePort traffic from outside
    /// the node: `random`, or `maglev` (consistent hashing: every node
    /// sends a connection to the same backend).
    #[arg(long, default_value = "random", value_parser = ["random", "maglev"])]
    ebpf_lb_algorithm: String,
    /// Where the eBPF proxy pins its programs and maps (on a bpffs).
    #[arg(long, default_value = hawser_agent::proxy::ebpf::DEFAULT_PIN_DIR)]
    bpf_pin_dir: PathBuf,
    /// Which iptables programs the proxy and the pod network use: the
    /// system's `iptables-restore`, or `nft` / `legacy` explicitly.
    #[arg(long, default_value = "system")]
    iptables_backend: hawser_agent::iptables::Backend,
    /// The shortest time between two proxy syncs (changes meanwhile wait).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    proxy_min_sync_period: Duration,
    /// How often the proxy re-checks all its rules (a full sync).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    proxy_sync_period: Duration,
}

#[derive(clap::Args)]
struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// This node's InternalIP (default: the API server's advertise address).
    #[arg(long)]
    node_ip: Option<std::net::Ipv4Addr>,
    #[command(flatten)]
    node: NodeArgs,
}

impl NodeArgs {
    fn agent_config(
        &self,
        server: String,
        token_file: PathBuf,
        certificate_authority: Option<PathBuf>,
        node_ip: std::net::Ipv4Addr,
        cluster_cidr: ipnetwork::Ipv4Network,
        default_data_dir: PathBuf,
    ) -> anyhow::Result<AgentConfig> {
        let node_name = match &self.node_name {
            Some(name) => name.clone(),
            None => {
                std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the hostname for --node-name")?.trim().to_lowercase()
            }
        };
        let mut labels = std::collections::BTreeMap::new();
        for label in self.node_labels.iter().filter(|l| !l.is_empty()) {
            let (k, v) = label.split_once('=').with_context(|| format!("--node-labels: {label:?} is not key=value"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        Ok(AgentConfig {
            server,
            token_file,
            certificate_authority,
            node_name,
            node_ip,
            labels,
            runtime: match self.runtime.as_str() {
                "docker" => RuntimeKind::Docker {
                    socket: self.docker_socket.clone(),
                    pause_image: self.pause_image.clone(),
                    pause_binary: self.pause_binary.clone(),
                },
                _ => RuntimeKind::Process,
            },
            data_dir: self.agent_data_dir.clone().unwrap_or(default_data_dir),
            cluster_cidr,
            cluster_dns: self.cluster_dns.clone(),
            cluster_domain: self.cluster_domain.clone(),
            node_local_dns: match self.node_local_dns.as_str() {
                "none" => None,
                ip => Some(ip.parse().with_context(|| format!("--node-local-dns {ip:?} is not an IPv4 address or none"))?),
            },
            dns_ttl: self.dns_ttl,
            resolv_conf: self.resolv_conf.clone(),
            max_pods: self.max_pods,
            port: self.port,
            supervisor_exe: std::env::current_exe().context("locating the hawser binary for pod supervisors")?,
            cgroup_root: self.cgroup_root.clone(),
            proxy_mode: self.proxy_mode.parse().map_err(anyhow::Error::msg)?,
            bpf_pin_dir: self.bpf_pin_dir.clone(),
            maglev: self.ebpf_lb_algorithm == "maglev",
            iptables: self.iptables_backend,
            proxy_min_sync_period: self.proxy_min_sync_period,
            proxy_sync_period: self.proxy_sync_period,
        })
    }
}

impl ServerArgs {
    fn config(&self) -> Config {
        Config {
            data_dir: self.data_dir.clone(),
            listen: self.listen,
            store: self.store.clone(),
            advertise_address: self.advertise_address,
            default_toleration_seconds: self.default_unreachable_toleration_seconds as i64,
        }
    }

    fn controllers(&self) -> anyhow::Result<controllers::Config> {
        anyhow::ensure!(
            self.node_cidr_mask_size >= self.cluster_cidr.prefix(),
            "--node-cidr-mask-size /{} is larger than --cluster-cidr {}",
            self.node_cidr_mask_size,
            self.cluster_cidr
        );
        Ok(controllers::Config {
            node_monitor_grace_period: self.node_monitor_grace_period,
            cluster_cidr: self.cluster_cidr,
            node_cidr_prefix: self.node_cidr_mask_size,
            ..Default::default()
        })
    }
}

/// Starts the API server, then the scheduler and the controllers as its
/// clients; returns once all of them run.
async fn start_control_plane(args: &ServerArgs) -> anyhow::Result<Server> {
    let controller_config = args.controllers()?;
    let server = Server::start(&args.config()).await?;
    let client = hawser_runtime::client::from_kubeconfig(&server.kubeconfig).await?;
    let informers = Arc::new(hawser_runtime::Informers::new(client));
    if !args.disable_scheduler {
        scheduler::start(&informers, &scheduler::Config::default());
    }
    if !args.disable_controller_manager {
        controllers::start(&informers, &controller_config);
    }
    Ok(server)
}

fn main() {
    let cli = Cli::parse();
    // The supervisor unshares namespaces, which needs a single-threaded
    // process: it runs before (and without) any async runtime.
    if let Command::PodSupervisor(args) = cli.command {
        let args = hawser_agent::runtime::process::SupervisorArgs { dir: args.dir };
        if let Err(e) = hawser_agent::runtime::process::run_supervisor(args) {
            eprintln!("hawser pod-supervisor: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    run_async(cli);
}

#[tokio::main]
async fn run_async(cli: Cli) {
    // hickory's server logs every DNS request at info: only its warnings,
    // unless RUST_LOG asks for hickory by name.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let filter =
        if filter.contains("hickory") { filter } else { format!("{filter},hickory_server=warn,hickory_net=warn,hickory_resolver=warn") };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()))
        .init();
    if let Err(e) = run(cli).await {
        eprintln!("hawser: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(args) => {
            let server = start_control_plane(&args).await?;
            tracing::info!(addr = %server.local_addr, kubeconfig = %server.kubeconfig.display(), "API server ready");
            server.serve(shutdown_signal()).await
        }
        Command::Agent(args) if args.cleanup => {
            hawser_agent::agent::cleanup(args.node.iptables_backend, &args.node.bpf_pin_dir).await?;
            println!("removed the agent's iptables chains and rules and its BPF programs and maps");
            Ok(())
        }
        Command::Agent(args) => {
            let ca = if args.insecure_skip_tls_verify { None } else { args.certificate_authority.clone() };
            let config = args.node.agent_config(
                args.server.clone().context("--server is required")?,
                args.token_file.clone().context("--token-file is required")?,
                ca,
                args.node_ip.context("--node-ip is required")?,
                args.cluster_cidr,
                PathBuf::from("/var/lib/hawser/agent"),
            )?;
            hawser_agent::agent::run(config, shutdown_signal()).await
        }
        Command::Up(args) => up(args).await,
        Command::PodSupervisor(_) => unreachable!("handled before the async runtime starts"),
    }
}

/// The control plane and an agent for this machine, until Ctrl-C.
async fn up(args: UpArgs) -> anyhow::Result<()> {
    let server = start_control_plane(&args.server).await?;
    let kubeconfig = std::fs::canonicalize(&server.kubeconfig).context("locating the kubeconfig")?;
    let node_ip = match args.node_ip.or(server.api.advertise_address.and_then(|ip| match ip {
        std::net::IpAddr::V4(v4) => Some(v4),
        std::net::IpAddr::V6(_) => None,
    })) {
        Some(ip) => ip,
        None => anyhow::bail!("this machine has no non-loopback IPv4 address to be the node's; give one with --node-ip"),
    };
    // The agent talks to the API server in this process over loopback
    // (the certificate names 127.0.0.1) with the admin token.
    let data_dir = std::fs::canonicalize(&args.server.data_dir).context("locating the data dir")?;
    let token_file = data_dir.join("agent-token");
    write_private(&token_file, server.api.tokens.admin_token())?;
    let port = server.local_addr.port();
    let host = if server.local_addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { server.local_addr.ip().to_string() };
    let url = format!("https://{host}:{port}");
    let ca = hawser_control_plane::apiserver::tls::Pki::new(&data_dir).ca_cert_path();
    let config = args.node.agent_config(url, token_file, Some(ca), node_ip, args.server.cluster_cidr, data_dir.join("agent"))?;
    println!("Hawser is up: the API server listens on https://{}", server.local_addr);
    println!("kubeconfig: {}", kubeconfig.display());
    println!("export KUBECONFIG={}", kubeconfig.display());
    println!(
        "node {} ({node_ip}) runs pods with the {} runtime; Ctrl-C stops the cluster (pods keep running)",
        config.node_name, args.node.runtime
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(hawser_agent::agent::run(config, {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }));
    let serve = server.serve({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        }
    });
    tokio::select! {
        result = serve => result?,
        result = agent => {
            result.context("the agent task panicked")??;
            anyhow::bail!("the agent stopped");
        }
    }
    println!("Hawser stopped.");
    Ok(())
}

/// Writes a secret file only its owner can read.
fn write_private(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(content.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

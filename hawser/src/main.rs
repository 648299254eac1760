//! `hawser`: one binary for every role.
//!
//! - `hawser server`: the control plane: the API server over the store, the
//!   scheduler and the controllers (which reach the API server over HTTPS,
//!   like any other client).
//! - `hawser up`: everything one machine needs, in the foreground: today the
//!   control plane; the node agent joins it when it exists.

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    /// Bring up a one-machine cluster in the foreground.
    Up(ServerArgs),
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
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
        Command::Up(args) => {
            let server = start_control_plane(&args).await?;
            let kubeconfig = std::fs::canonicalize(&server.kubeconfig).context("locating the kubeconfig")?;
            println!("Hawser is up: the API server listens on https://{}", server.local_addr);
            println!("kubeconfig: {}", kubeconfig.display());
            println!("export KUBECONFIG={}", kubeconfig.display());
            println!(
                "(no node agent runs yet: pods are scheduled to Node objects once some exist, but nothing starts them; Ctrl-C stops the cluster)"
            );
            server.serve(shutdown_signal()).await?;
            println!("Hawser stopped.");
            Ok(())
        }
        Command::PodSupervisor(_) => unreachable!("handled before the async runtime starts"),
    }
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

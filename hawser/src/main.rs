//! `hawser`: one binary for every role.
//!
//! - `hawser server`: the control plane (API server over the store).
//! - `hawser up`: everything one machine needs, in the foreground: today the
//!   control plane; the node agent joins it when it exists.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hawser_control_plane::apiserver::{Config, Server};
use std::net::SocketAddr;
use std::path::PathBuf;

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
}

impl ServerArgs {
    fn config(&self) -> Config {
        Config { data_dir: self.data_dir.clone(), listen: self.listen, store: self.store.clone() }
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("hawser: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(args) => {
            let server = Server::start(&args.config()).await?;
            tracing::info!(addr = %server.local_addr, kubeconfig = %server.kubeconfig.display(), "API server ready");
            server.serve(shutdown_signal()).await
        }
        Command::Up(args) => {
            let server = Server::start(&args.config()).await?;
            let kubeconfig = std::fs::canonicalize(&server.kubeconfig).context("locating the kubeconfig")?;
            println!("Hawser is up: the API server listens on https://{}", server.local_addr);
            println!("kubeconfig: {}", kubeconfig.display());
            println!("export KUBECONFIG={}", kubeconfig.display());
            println!("(no node agent runs yet: pods are stored and listed but not started; Ctrl-C stops the cluster)");
            server.serve(shutdown_signal()).await?;
            println!("Hawser stopped.");
            Ok(())
        }
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

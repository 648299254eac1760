//! `cargo xtask cluster up|down`: a development cluster of network-namespace
//! hosts on this machine, the same one the end-to-end tests build
//! ([`hawser_tests::nodes::NetnsCluster`]).
//!
//! - `serve --nodes N --state DIR`: builds the cluster, writes
//!   `DIR/kubeconfig.yaml` (the API server reached through a loopback port
//!   forwarded into the LAN namespace) and `DIR/serve.pid`, then holds the
//!   cluster until SIGTERM or Ctrl-C, when it tears everything down: agents,
//!   pod processes, namespaces, links, files.
//! - `cleanup --state DIR`: removes what `DIR/resources` lists, for a
//!   `serve` that was killed before it could clean up.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hawser_tests::netns;
use hawser_tests::nodes::NetnsCluster;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Parser)]
#[command(about = "A development cluster of network-namespace hosts")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the cluster and hold it until SIGTERM or Ctrl-C.
    Serve {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long)]
        state: PathBuf,
        /// Extra `hawser agent` flags (e.g. `--runtime=docker`).
        #[arg(long, allow_hyphen_values = true)]
        agent_arg: Vec<String>,
    },
    /// Remove the namespaces and cgroups a dead `serve` left.
    Cleanup {
        #[arg(long)]
        state: PathBuf,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Cmd::Serve { nodes, state, agent_arg } => serve(nodes, &state, &agent_arg),
        Cmd::Cleanup { state } => {
            cleanup(&state);
            Ok(())
        }
    }
}

fn serve(nodes: usize, state: &std::path::Path, agent_args: &[String]) -> Result<()> {
    fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let cluster = NetnsCluster::start_with(nodes, &[], &agent_args);
    // What to remove should this process die without its drop running.
    let mut resources = vec![format!("netns {}", cluster.lan.ns.name)];
    for node in &cluster.nodes {
        resources.push(format!("netns {}", node.ns.name));
        resources.push(format!("cgroup {}", node.cgroup_root));
        resources.push(format!("bpf {}", node.bpf_pin_dir.display()));
    }
    fs::write(state.join("resources"), resources.join("\n") + "\n")?;
    fs::copy(cluster.kubeconfig_path(), state.join("kubeconfig.yaml"))?;
    fs::write(state.join("serve.pid"), std::process::id().to_string())?;
    println!("cluster up: {nodes} nodes; KUBECONFIG={}", state.join("kubeconfig.yaml").display());
    for node in &cluster.nodes {
        println!("  {} at {} (netns {})", node.name, node.ip, node.ns.name);
    }
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    println!("tearing the cluster down");
    drop(cluster);
    let _ = fs::remove_file(state.join("kubeconfig.yaml"));
    let _ = fs::remove_file(state.join("resources"));
    let _ = fs::remove_file(state.join("serve.pid"));
    Ok(())
}

fn cleanup(state: &std::path::Path) {
    let listed = fs::read_to_string(state.join("resources")).unwrap_or_default();
    // Pods first (their processes hold the pod namespaces), then the hosts.
    for name in listed.lines().filter_map(|l| l.strip_prefix("cgroup ")) {
        netns::remove_cgroup_tree(name);
    }
    for pins in listed.lines().filter_map(|l| l.strip_prefix("bpf ")) {
        let _ = fs::remove_dir_all(pins);
    }
    for name in listed.lines().filter_map(|l| l.strip_prefix("netns ")) {
        let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
    }
    for file in ["resources", "kubeconfig.yaml", "serve.pid"] {
        let _ = fs::remove_file(state.join(file));
    }
}

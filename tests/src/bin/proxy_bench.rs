//! `cargo xtask bench proxy`: the service proxy's cost, on a real two-node
//! cluster of network-namespace hosts (`tests/src/nodes.rs`) made for the
//! run and torn down afterwards (also on failure or Ctrl-C).
//!
//! Per proxy mode (`--modes`: `iptables`, `ebpf`; `direct` is the pod IP,
//! no proxy on the path; default `direct,iptables,ebpf`, one cluster per
//! proxy mode, `direct` measured on each) and per service count
//! (`--services`), where every service but the measured one (`bench`) is a
//! background ClusterIP service selecting the same `--endpoints` pods:
//!
//! 1. **Programming** (proxy modes): the agent's own `service proxy synced
//!    full=… services=… elapsed_ms=… elapsed_us=…` debug lines on node n1
//!    (the agents run with `RUST_LOG=info,hawser_agent::proxy=debug`),
//!    kept in milliseconds with microsecond resolution (an eBPF sync takes
//!    well under 1 ms). Full sync *cold* (agent stopped, `hawser agent
//!    --cleanup --bpf-pin-dir <n1's>`, agent started: every chain or map
//!    entry is new) and *warm* (agent restarted over its own rules or
//!    pinned maps); one change (the `bench` pod's readiness flipped, the
//!    partial sync that follows); and Service create → its cluster IP
//!    answering from n1's own namespace, polled every 10 ms. What the
//!    kernel then holds: the `HAWSER-SVC-`/`HAWSER-SEP-` chains
//!    (iptables-save) or the pinned service, slot and backend map entries
//!    (eBPF).
//! 2. **Data path**, a client pod on n1 → the server pod on n2: iperf3
//!    throughput, and new connections per second with per-connection
//!    latency (`hawser-test-server bench`, a closed loop of
//!    connect/GET/close), to the pod IP (`direct`) and to the cluster IP
//!    (iptables: DNAT in the nat table; eBPF: the address rewritten at
//!    `connect()`).
//! 3. **NodePort** from a client host on the underlay (198.51.100.50): to
//!    the NodePort on n2 (the pod's node) and on n1 (no local endpoint, so
//!    forwarded to n2), against `direct`: the pod IP through a route on the
//!    client via n2, the same hop without the NAT (iptables rules, or the
//!    eBPF tc programs on the underlay interface).
//!
//! The goals (iptables and eBPF) are checked as ratios between rows of the
//! same run. Output: tables on stdout, `programming.csv`, `datapath.csv`,
//! `results.md` and SVG plots under `--out`.

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use hawser_agent::proxy::ebpf::maps::ProxyMaps;
use hawser_tests::netns::{self, Netns};
use hawser_tests::nodes::{AgentHost, NetnsCluster, test_server_command};
use hawser_tests::stats::percentile;
use hawser_tests::{block_on, hawser_binary, run_bounded};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use std::{fs, thread};

/// The agents' `--proxy-mode` values this benchmark knows.
const PROXY_MODES: &[&str] = &["iptables", "ebpf"];
const IPTABLES: &str = "iptables";
const EBPF: &str = "ebpf";
/// The mode that reaches the pod IP with no proxy on the path.
const DIRECT: &str = "direct";
/// The client host on the underlay, outside every node.
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
const IPERF3: &str = "/usr/bin/iperf3";
const IPERF_PORT: u16 = 5201;
/// The agents' debug filter: our sync lines, the rest at info.
const AGENT_LOG: &str = "info,hawser_agent::proxy=debug";
/// The data-path rows' `path` values. The pod's rows go to the pod IP
/// (`direct`) or to the cluster IP (a proxy mode).
const POD_PATH: &str = "pod n1 → pod n2";
const CLIENT_DIRECT_PATH: &str = "client → pod n2 (routed via n2)";
const NODEPORT_LOCAL_PATH: &str = "client → NodePort n2 (local endpoint)";
const NODEPORT_FORWARDED_PATH: &str = "client → NodePort n1 → pod n2";

#[derive(Parser)]
#[command(about = "Service proxy benchmark: rule programming and data path on a real two-node cluster")]
struct Args {
    /// `direct` (the pod IP) and proxy modes (`iptables`, `ebpf`): one
    /// cluster per proxy mode, `direct` measured on each.
    #[arg(long, value_delimiter = ',', default_value = "direct,iptables,ebpf")]
    modes: Vec<String>,
    /// Service counts to measure at, the measured service included.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000")]
    services: Vec<usize>,
    /// Pods selected by every background service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// The agents' `--iptables-backend`: system, nft or legacy (the
    /// iptables proxy's rules; in ebpf mode only the pod network's).
    #[arg(long, default_value = "system")]
    iptables_backend: String,
    /// Length of each data-path measurement (iperf3 and the connection loop).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Connections in flight in the connection loop.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Readiness flips (each one change) per service count.
    #[arg(long, default_value_t = 6)]
    changes: usize,
    /// Service create → cluster IP answering samples per service count.
    #[arg(long, default_value_t = 5)]
    creates: usize,
    /// The longest a full sync may take before the run gives up on it.
    #[arg(long, default_value_t = 900)]
    sync_timeout_seconds: u64,
    /// Where the CSV files, results.md and the plots go.
    #[arg(long, default_value = "target/bench/proxy")]
    out: PathBuf,
}

/// What a dead driver leaves for the signal handler to remove.
#[derive(Default)]
struct Resources {
    netns: Vec<String>,
    cgroups: Vec<String>,
    dirs: Vec<PathBuf>,
}

static RESOURCES: Mutex<Resources> = Mutex::new(Resources { netns: Vec::new(), cgroups: Vec::new(), dirs: Vec::new() });

fn main() -> Result<()> {
    let mut args = Args::parse();
    for mode in &args.modes {
        if mode != DIRECT && !PROXY_MODES.contains(&mode.as_str()) {
            bail!("unknown mode {mode:?}: expected {DIRECT} or one of {PROXY_MODES:?}");
        }
    }
    anyhow::ensure!(!args.services.is_empty() && !args.services.contains(&0), "--services needs counts of at least 1");
    anyhow::ensure!(args.endpoints >= 1, "--endpoints needs at least 1");
    anyhow::ensure!(Path::new(IPERF3).exists(), "{IPERF3} is missing: run `cargo xtask deps` (Debian package iperf3)");
    args.services.sort_unstable();
    args.services.dedup();
    let backend_label = resolve_backend(&args.iptables_backend);
    catch_signals();

    // One cluster per proxy mode; `direct` is measured beside each (its
    // nodes run a proxy too, which new connections to a pod IP also meet).
    let mut clusters: Vec<String> = args.modes.iter().filter(|m| *m != DIRECT).cloned().collect();
    if clusters.is_empty() {
        clusters.push(PROXY_MODES[0].to_string());
    }
    let modes = args.modes.iter().filter(|m| *m != DIRECT).cloned().collect();
    let mut results = Results { backend: backend_label.clone(), modes, ..Default::default() };
    let mut failure = None;
    for mode in &clusters {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_cluster(&args, &backend_label, mode, &mut results)));
        let error = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("{e:#}"),
            Err(panic) => {
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
            }
        };
        eprintln!("proxy bench: the {mode} cluster failed: {error}");
        results.notes.push(format!("the {mode} run stopped early: {}", error.lines().next().unwrap_or("")));
        failure = Some(error);
    }
    report(&args, &results)?;
    match failure {
        Some(e) => Err(anyhow!("the run failed (partial results written): {}", e.lines().next().unwrap_or(""))),
        None => Ok(()),
    }
}

/// SIGINT/SIGTERM: kill whatever runs in the run's namespaces and cgroups,
/// delete them, and exit, since the cluster's drop will not run.
fn catch_signals() {
    thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a signal runtime");
        rt.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        eprintln!("proxy bench: interrupted; removing the cluster");
        let res = RESOURCES.lock().unwrap_or_else(|p| p.into_inner());
        for name in &res.netns {
            kill_processes_in(name);
        }
        for cgroup in &res.cgroups {
            netns::remove_cgroup_tree(cgroup);
        }
        for name in &res.netns {
            // The main thread, failing as its processes die, may be
            // deleting the same namespaces as it unwinds.
            let _ = std::process::Command::new("ip").args(["netns", "del", name]).stderr(std::process::Stdio::null()).status();
        }
        for dir in &res.dirs {
            let _ = fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    });
}

/// SIGKILL to every process whose network namespace is `/run/netns/<name>`.
fn kill_processes_in(name: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = fs::metadata(Path::new("/run/netns").join(name)) else { return };
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(ns) = fs::metadata(entry.path().join("ns/net"))
            && ns.ino() == target.ino()
            && ns.dev() == target.dev()
        {
            // SAFETY: kill(2) on a pid read from /proc.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn register(cluster: &NetnsCluster, client: &Netns) {
    let mut res = RESOURCES.lock().unwrap_or_else(|p| p.into_inner());
    res.netns = cluster.nodes.iter().map(|n| n.ns.name.clone()).chain([client.name.clone(), cluster.lan.ns.name.clone()]).collect();
    res.cgroups = cluster.nodes.iter().map(|n| n.cgroup_root.clone()).collect();
    // The eBPF proxy's pinned programs and maps go with their pin dirs.
    res.dirs = std::iter::once(cluster.dir().to_path_buf()).chain(cluster.nodes.iter().map(|n| n.bpf_pin_dir.clone())).collect();
}

fn unregister() {
    *RESOURCES.lock().unwrap_or_else(|p| p.into_inner()) = Resources::default();
}

#[derive(Default)]
struct Results {
    /// `--iptables-backend`, `system` resolved.
    backend: String,
    /// The proxy modes of `--modes`, in order.
    modes: Vec<String>,
    programming: Vec<Programming>,
    datapath: Vec<DataPath>,
    notes: Vec<String>,
}

/// One service count's programming figures on n1; times in milliseconds
/// (from the agent's microseconds where it logs them).
#[derive(Default)]
struct Programming {
    mode: String,
    backend: String,
    services: usize,
    /// Every Service the agent sees (the cluster's own `kubernetes` one too).
    services_total: usize,
    cleanup_ms: Option<f64>,
    cold_ms: Option<f64>,
    /// Agent start → its first full sync done (informer lists included).
    cold_start_ms: Option<f64>,
    warm_ms: Option<f64>,
    warm_start_ms: Option<f64>,
    /// Warm sync done → the agent's log quiet for 3 s: the post-sync work
    /// (one `conntrack -D` per service that got endpoints, in either mode)
    /// before the next sync can start.
    settle_ms: Option<f64>,
    one_change_ms: Vec<f64>,
    /// Syncs that failed during the measurements (retried by the agent).
    failed_syncs: Vec<String>,
    create_to_vip_ms: Vec<f64>,
    kernel: Option<KernelState>,
    note: String,
}

/// What the kernel holds for the proxy on n1 after the warm sync.
#[derive(Clone, Copy)]
enum KernelState {
    /// `HAWSER-SVC-` and `HAWSER-SEP-` chains in the nat table.
    Iptables { svc_chains: usize, sep_chains: usize },
    /// Entries of the pinned service, slot and backend maps.
    Ebpf { services: usize, slots: usize, backends: usize },
}

impl std::fmt::Display for KernelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelState::Iptables { svc_chains, sep_chains } => write!(f, "{svc_chains} SVC / {sep_chains} SEP chains"),
            KernelState::Ebpf { services, slots, backends } => {
                write!(f, "{services} service / {slots} slot / {backends} backend entries")
            }
        }
    }
}

/// One path's data-path figures.
struct DataPath {
    cluster: String,
    services: usize,
    path: &'static str,
    mode: String,
    target: String,
    gbps: Option<f64>,
    load: Option<Load>,
    note: String,
}

/// `hawser-test-server bench`'s summary.
#[derive(Clone, Copy)]
struct Load {
    connections: u64,
    failed: u64,
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

/// What one run of a mode's cluster deployed.
struct Deployed {
    server: String,
    vip: String,
    http_node_port: u16,
    iperf_node_port: u16,
}

/// The proxy backend a mode's rows name: the iptables backend's label, or
/// `bpf` (the iptables programs then serve the pod network only).
fn backend_of(mode: &str, iptables_label: &str) -> String {
    match mode {
        EBPF => "bpf".into(),
        _ => iptables_label.to_string(),
    }
}

/// `system` named by what it is here (`iptables --version` says
/// `nf_tables` or `legacy`), for the tables and plots.
fn resolve_backend(backend: &str) -> String {
    if backend != "system" {
        return backend.to_string();
    }
    let version = std::process::Command::new("iptables").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    match version {
        Ok(v) if v.contains("nf_tables") => "system (nft)".into(),
        Ok(v) if v.contains("legacy") => "system (legacy)".into(),
        _ => "system".into(),
    }
}

fn run_cluster(args: &Args, backend: &str, mode: &str, results: &mut Results) -> Result<()> {
    println!("==> {mode} cluster: 2 nodes, --iptables-backend {backend}, services {:?}", args.services);
    // The periodic full resync is pushed past the run so that it never
    // lands inside a measurement; a node left without its agent during a
    // long --cleanup must not be declared lost either.
    let agent_args = ["--proxy-mode", mode, "--iptables-backend", &args.iptables_backend, "--proxy-sync-period", "1h"];
    let mut cluster = NetnsCluster::start_with_env(2, &["--node-monitor-grace-period", "1h"], &agent_args, &[("RUST_LOG", AGENT_LOG)]);
    let client = cluster.lan.add_host("client", CLIENT);
    register(&cluster, &client);
    let outcome = measure_cluster(args, backend, mode, &mut cluster, &client, results);
    if outcome.is_err() {
        for node in &cluster.nodes {
            eprintln!("--- agent {} log tail ---\n{}", node.name, node.log_tail(20));
        }
    }
    drop(client);
    drop(cluster);
    unregister();
    outcome
}

fn measure_cluster(
    args: &Args,
    backend: &str,
    mode: &str,
    cluster: &mut NetnsCluster,
    client: &Netns,
    results: &mut Results,
) -> Result<()> {
    let deployed = deploy(args, cluster, client)?;
    // A node whose kernel cannot run the eBPF proxy falls back to iptables:
    // its rows would be labelled with the wrong mode.
    for node in &cluster.nodes {
        wait_backend(node, 0, mode, Duration::from_secs(60))?;
    }
    let measure_proxy = args.modes.iter().any(|m| m == mode);
    let measure_direct = args.modes.iter().any(|m| m == DIRECT);
    let mut background = 0;
    for &count in &args.services {
        let wanted = count - 1;
        if wanted > background {
            let started = Instant::now();
            create_background(cluster, background, wanted)?;
            wait_background_endpoints(cluster, wanted, args.endpoints)?;
            println!("  {wanted} background services with {} endpoints each in {:.1} s", args.endpoints, started.elapsed().as_secs_f64());
            background = wanted;
        }
        println!("==> {count} services ({mode} cluster)");
        if measure_proxy {
            let mut p = Programming {
                mode: mode.to_string(),
                backend: backend_of(mode, backend),
                services: count,
                services_total: count_services(cluster)?,
                ..Default::default()
            };
            let outcome = programming(args, cluster, &deployed, &mut p);
            let mut notes: Vec<String> = Vec::new();
            if let Err(e) = &outcome {
                notes.push(format!("{e:#}"));
            }
            if !p.note.is_empty() {
                notes.push(p.note.clone());
            }
            if let Some(first) = p.failed_syncs.first() {
                let first = first.lines().next().unwrap_or("");
                notes.push(format!("{} sync(s) failed and were retried by the agent, first: {first}", p.failed_syncs.len()));
            }
            p.note = notes.join("; ");
            print_programming(&p);
            results.programming.push(p);
            // A full sync that never finished leaves the agent busy: the
            // rest of this cluster would measure nothing meaningful.
            outcome?;
        }
        if measure_proxy {
            // Both agents caught up (the measured service's endpoint
            // programmed everywhere) before traffic is measured.
            let started = Instant::now();
            let n1 = cluster.node("n1");
            let (ip1, ip2) = (n1.ip, cluster.node("n2").ip);
            let limit = Duration::from_secs(300);
            let settled = wait_vip_answers(n1, &deployed.vip, 80, limit)
                .and_then(|_| wait_answers(client, &format!("{ip2}:{}", deployed.http_node_port), limit))
                .and_then(|_| wait_answers(client, &format!("{ip1}:{}", deployed.http_node_port), limit));
            let waited = started.elapsed();
            if let Err(e) = settled {
                let note = format!("at {count} services the data path was measured unsettled: {e:#}");
                println!("  {note}");
                results.notes.push(note);
            } else if waited > Duration::from_secs(1) {
                let note = format!(
                    "at {count} services the NodePorts answered on both nodes only {:.1} s after the programming measurements (an agent catching up)",
                    waited.as_secs_f64()
                );
                println!("  {note}");
                results.notes.push(note);
            }
        }
        results.datapath.extend(datapath(args, mode, count, cluster, client, &deployed, measure_direct, measure_proxy)?);
    }
    Ok(())
}

fn pod_json(name: &str, node: &str, labels: Value, containers: Value) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": containers},
    })
    .to_string()
}

fn deploy(args: &Args, cluster: &mut NetnsCluster, client: &Netns) -> Result<Deployed> {
    let server = test_server_command();
    // The background services' endpoints, spread by the scheduler.
    cluster.apply(
        "bg.yaml",
        &json!({
            "apiVersion": "v1",
            "kind": "ReplicationController",
            "metadata": {"name": "bg"},
            "spec": {
                "replicas": args.endpoints,
                "selector": {"app": "bg"},
                "template": {
                    "metadata": {"labels": {"app": "bg"}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "web", "image": "hawser-test-server", "command": [server]}]},
                },
            },
        })
        .to_string(),
        &[],
    );
    // The measured service's one endpoint on n2: the test server (readiness
    // probed every second, so a flip is one endpoint change) and iperf3.
    cluster.apply(
        "server.yaml",
        &pod_json(
            "server",
            "n2",
            json!({"app": "bench"}),
            json!([
                {"name": "web", "image": "hawser-test-server", "command": [server],
                 "ports": [{"name": "http", "containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}},
                {"name": "iperf", "image": "iperf3", "command": [IPERF3, "-s", "-p", IPERF_PORT.to_string()]},
            ]),
        ),
        &[],
    );
    // The client pod on n1: idle until the loads are exec'd in it.
    cluster.apply(
        "client.yaml",
        &pod_json("client", "n1", json!({"app": "client"}), json!([{"name": "idle", "image": "hawser-test-server", "command": [server]}])),
        &[],
    );
    cluster.apply(
        "bench-svc.yaml",
        &json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "bench"},
            "spec": {
                "type": "NodePort",
                "selector": {"app": "bench"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "iperf", "port": IPERF_PORT, "targetPort": IPERF_PORT},
                ],
            },
        })
        .to_string(),
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let server_ip = loop {
        let pods = cluster.kubectl_json(&["get", "pods"]);
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        let ready = items.iter().filter(|p| is_ready(p)).count();
        if ready == args.endpoints + 2 {
            let server = items.iter().find(|p| p["metadata"]["name"] == "server").context("the server pod")?;
            break server["status"]["podIP"].as_str().context("the server's pod IP")?.to_string();
        }
        anyhow::ensure!(Instant::now() < deadline, "only {ready} of {} pods Ready after 2 minutes", args.endpoints + 2);
        thread::sleep(Duration::from_millis(500));
    };
    let svc = cluster.kubectl_json(&["get", "service", "bench"]);
    let vip = svc["spec"]["clusterIP"].as_str().context("bench's cluster IP")?.to_string();
    let node_port = |name: &str| -> Result<u16> {
        svc["spec"]["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["name"] == name))
            .and_then(|p| p["nodePort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .with_context(|| format!("bench's {name} node port"))
    };
    let (http_node_port, iperf_node_port) = (node_port("http")?, node_port("iperf")?);
    // The client host reaches n2's pods through n2, as a router on the
    // underlay that knew the pod routes would send it.
    let n2 = cluster.node("n2");
    let nodes = cluster.kubectl_json(&["get", "node", "n2"]);
    let pod_cidr = nodes["spec"]["podCIDR"].as_str().context("n2's pod CIDR")?;
    client.ip(&["route", "add", pod_cidr, "via", &n2.ip.to_string()]);
    println!("  server pod {server_ip} on n2, bench service {vip} (NodePorts http {http_node_port}, iperf {iperf_node_port})");
    Ok(Deployed { server: server_ip, vip, http_node_port, iperf_node_port })
}

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Background services `bg-<from>` .. `bg-<to - 1>`, by server-side apply,
/// 16 requests in flight.
fn create_background(cluster: &NetnsCluster, from: usize, to: usize) -> Result<()> {
    block_on(async {
        let client = cluster.kube_client().await;
        let api: Api<Service> = Api::namespaced(client, "default");
        let params = PatchParams::apply("proxy-bench").force();
        futures::stream::iter(from..to)
            .map(|i| {
                let (api, params) = (api.clone(), params.clone());
                async move {
                    let name = format!("bg-{i:05}");
                    let svc = json!({
                        "apiVersion": "v1",
                        "kind": "Service",
                        "metadata": {"name": name},
                        "spec": {"selector": {"app": "bg"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
                    });
                    api.patch(&name, &params, &Patch::Apply(&svc)).await.with_context(|| format!("applying service {name}"))
                }
            })
            .buffer_unordered(16)
            .try_for_each(|_| async { Ok(()) })
            .await
    })
}

/// Waits until `count` background services each have `endpoints` ready
/// endpoints in their EndpointSlices.
fn wait_background_endpoints(cluster: &NetnsCluster, count: usize, endpoints: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = block_on(async {
            let client = cluster.kube_client().await;
            let api: Api<EndpointSlice> = Api::namespaced(client, "default");
            let mut ready: BTreeMap<String, usize> = BTreeMap::new();
            let mut params = ListParams::default().limit(2000);
            loop {
                let page = api.list(&params).await?;
                for slice in &page.items {
                    let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) else { continue };
                    if service.starts_with("bg-") {
                        let n = slice.endpoints.iter().filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)).count();
                        *ready.entry(service.clone()).or_default() += n;
                    }
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
            anyhow::Ok(ready.values().filter(|&&n| n == endpoints).count())
        })?;
        if done >= count {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {done} of {count} background services have their endpoints after 10 minutes");
        thread::sleep(Duration::from_secs(2));
    }
}

fn count_services(cluster: &NetnsCluster) -> Result<usize> {
    block_on(async {
        let client = cluster.kube_client().await;
        let api: Api<Service> = Api::all(client);
        let mut total = 0;
        let mut params = ListParams::default().limit(5000);
        loop {
            let page = api.list_metadata(&params).await?;
            total += page.items.len();
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(total),
            }
        }
    })
}

/// A `service proxy synced` debug line of the agent.
#[derive(Debug, Clone, Copy)]
struct SyncLine {
    full: bool,
    services: usize,
    /// `elapsed_us`, or `elapsed_ms` × 1000 from an agent that logs no
    /// microseconds.
    elapsed_us: u64,
}

impl SyncLine {
    fn ms(&self) -> f64 {
        self.elapsed_us as f64 / 1e3
    }
}

fn parse_sync(line: &str) -> Option<SyncLine> {
    if !line.contains("service proxy synced") {
        return None;
    }
    let field = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key));
    Some(SyncLine {
        full: field("full=")? == "true",
        services: field("services=")?.parse().ok()?,
        elapsed_us: match field("elapsed_us=") {
            Some(us) => us.parse().ok()?,
            None => field("elapsed_ms=")?.parse::<u64>().ok()?.checked_mul(1000)?,
        },
    })
}

/// The proxy backend `host`'s agent last announced after byte `from` of its
/// log (`service proxy synced its caches; programming backend=…`).
fn running_backend(host: &AgentHost, from: u64) -> Option<String> {
    let log = fs::read(host.log_path()).ok()?;
    let log = String::from_utf8_lossy(log.get(from as usize..)?).into_owned();
    log.lines()
        .rev()
        .filter(|l| l.contains("service proxy synced its caches"))
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("backend=")).map(|b| b.trim_matches('"').to_string()))
}

/// Waits until `host`'s agent announces its proxy backend after byte
/// `from`; fails if it is not `mode` (the agent's fallback reason quoted).
fn wait_backend(host: &AgentHost, from: u64, mode: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match running_backend(host, from) {
            Some(backend) if backend == mode => return Ok(()),
            Some(backend) => {
                let log = fs::read_to_string(host.log_path()).unwrap_or_default();
                let why = log.lines().rev().find(|l| l.contains("falling back")).unwrap_or("no fallback reason logged").to_string();
                bail!("the agent on {} runs the {backend} proxy, not {mode}: {}", host.name, why.trim());
            }
            None => {
                anyhow::ensure!(Instant::now() < deadline, "{}'s agent announced no proxy backend within {timeout:?}", host.name);
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn log_len(host: &AgentHost) -> u64 {
    fs::metadata(host.log_path()).map(|m| m.len()).unwrap_or(0)
}

/// Waits for the first sync line in `host`'s log after byte `from` that
/// `wanted` accepts; fails on a dead agent or `timeout`. Failed syncs on
/// the way (the agent retries them as full syncs) are added to `failed`.
fn wait_sync(
    host: &AgentHost,
    from: u64,
    timeout: Duration,
    failed: &mut Vec<String>,
    wanted: impl Fn(&SyncLine) -> bool,
) -> Result<SyncLine> {
    let deadline = Instant::now() + timeout;
    let mut offset = from;
    let mut pending = String::new();
    loop {
        let mut file = fs::File::open(host.log_path())?;
        file.seek(SeekFrom::Start(offset))?;
        let mut chunk = String::new();
        offset += file.read_to_string(&mut chunk)? as u64;
        pending.push_str(&chunk);
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if line.contains("service proxy sync failed") {
                let why = line.split("error=").nth(1).unwrap_or(&line).trim().to_string();
                eprintln!("  (a sync on {} failed; the agent retries it: {why})", host.name);
                failed.push(why);
            }
            if let Some(sync) = parse_sync(&line).filter(&wanted) {
                return Ok(sync);
            }
        }
        let alive = host.agent_pid().is_some_and(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
        });
        if !alive {
            let tail = host.log_tail(20);
            let why = tail.lines().rev().find(|l| l.starts_with("hawser:")).or(tail.lines().last()).unwrap_or("").to_string();
            bail!("the agent on {} died: {why}", host.name);
        }
        anyhow::ensure!(Instant::now() < deadline, "no wanted sync line from {}'s agent within {timeout:?}", host.name);
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `host`'s agent log has not grown for `quiet`.
fn wait_quiet(host: &AgentHost, quiet: Duration, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let (mut len, mut since) = (log_len(host), Instant::now());
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = log_len(host);
        if now != len {
            (len, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{}'s agent still busy after {timeout:?}", host.name);
    }
}

fn save_program(backend: &str) -> &'static str {
    match backend {
        "nft" => "iptables-nft-save",
        "legacy" => "iptables-legacy-save",
        _ => "iptables-save",
    }
}

fn programming(args: &Args, cluster: &mut NetnsCluster, deployed: &Deployed, p: &mut Programming) -> Result<()> {
    let timeout = Duration::from_secs(args.sync_timeout_seconds);
    let mode = p.mode.clone();
    let n1 = cluster.node_mut("n1");

    // Cold: no chain, program or map of ours left, the agent starts from
    // nothing. --cleanup removes both modes' state, the eBPF one under
    // this node's pin dir (not the default one).
    n1.kill9_agent();
    let started = Instant::now();
    let pin_dir = n1.bpf_pin_dir.to_str().context("the BPF pin dir as UTF-8")?.to_string();
    let cleanup = n1.ns.run(
        hawser_binary(),
        &["agent", "--cleanup", "--iptables-backend", &args.iptables_backend, "--bpf-pin-dir", &pin_dir],
        timeout,
    );
    anyhow::ensure!(cleanup.status.success(), "hawser agent --cleanup: {}", String::from_utf8_lossy(&cleanup.stderr));
    p.cleanup_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    let mark = log_len(n1);
    let started = Instant::now();
    n1.restart_agent();
    let cold = wait_sync(n1, mark, timeout, &mut p.failed_syncs, |s| s.full)?;
    p.cold_start_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    p.cold_ms = Some(cold.ms());
    wait_backend(n1, mark, &mode, Duration::ZERO)?;
    println!(
        "  cold full sync: {} ({} services; agent start → synced {:.0} ms)",
        fmt_ms(cold.ms()),
        cold.services,
        p.cold_start_ms.unwrap()
    );

    // Warm: the agent killed and started again over its own rules (or
    // pinned maps).
    let mark = log_len(n1);
    let started = Instant::now();
    n1.restart_agent();
    let warm = wait_sync(n1, mark, timeout, &mut p.failed_syncs, |s| s.full)?;
    p.warm_start_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    p.warm_ms = Some(warm.ms());
    wait_backend(n1, mark, &mode, Duration::ZERO)?;
    println!("  warm full sync: {} (agent start → synced {:.0} ms)", fmt_ms(warm.ms()), p.warm_start_ms.unwrap());
    let synced = Instant::now();
    wait_quiet(n1, Duration::from_secs(3), timeout)?;
    p.settle_ms = Some(synced.elapsed().saturating_sub(Duration::from_secs(3)).as_secs_f64() * 1e3);
    println!("  agent busy after the warm sync (conntrack clean-up) for {:.0} ms", p.settle_ms.unwrap());

    // What the kernel holds now.
    let kernel = if mode == EBPF {
        let contents = ProxyMaps::open(&n1.bpf_pin_dir)
            .and_then(|maps| maps.dump())
            .with_context(|| format!("reading the pinned maps under {}", n1.bpf_pin_dir.display()))?;
        KernelState::Ebpf { services: contents.services.len(), slots: contents.slots.len(), backends: contents.backends.len() }
    } else {
        let saved = n1.ns.run(save_program(&args.iptables_backend), &["-t", "nat"], timeout);
        anyhow::ensure!(saved.status.success(), "iptables-save: {}", String::from_utf8_lossy(&saved.stderr));
        let saved = String::from_utf8_lossy(&saved.stdout);
        KernelState::Iptables {
            svc_chains: saved.lines().filter(|l| l.starts_with(":HAWSER-SVC-")).count(),
            sep_chains: saved.lines().filter(|l| l.starts_with(":HAWSER-SEP-")).count(),
        }
    };
    println!("  kernel state: {kernel}");
    p.kernel = Some(kernel);

    // One change: the bench pod's readiness off and on, each flip one
    // service's endpoints changing; the partial sync that follows.
    let n1 = cluster.node("n1");
    let n2 = cluster.node("n2");
    thread::sleep(Duration::from_millis(1100));
    for i in 0..args.changes {
        let ready = if i % 2 == 0 { "false" } else { "true" };
        let mark = log_len(n1);
        n2.fetch(&format!("http://{}:8080/set?ready={ready}", deployed.server)).map_err(|e| anyhow!("flipping readiness: {e}"))?;
        // A failed partial sync is retried as a full one: that is no
        // one-change sample.
        let sync = wait_sync(n1, mark, Duration::from_secs(60), &mut p.failed_syncs, |_| true)?;
        if sync.full {
            thread::sleep(Duration::from_millis(1500));
            continue;
        }
        if sync.services != 1 {
            p.note = format!("a partial sync covered {} services, not 1", sync.services);
        }
        p.one_change_ms.push(sync.ms());
        // The next change gets a sync of its own (--proxy-min-sync-period 1s).
        thread::sleep(Duration::from_millis(1500));
    }
    if args.changes % 2 == 1 {
        n2.fetch(&format!("http://{}:8080/set?ready=true", deployed.server)).map_err(|e| anyhow!("readiness back on: {e}"))?;
    }
    wait_vip_answers(n1, &deployed.vip, 80, Duration::from_secs(60)).context("the bench service answering again after the flips")?;
    println!("  one change (partial sync): [{}]", p.one_change_ms.iter().map(|&m| fmt_ms(m)).collect::<Vec<_>>().join(", "));

    // Service create → its cluster IP answering from n1.
    for i in 0..args.creates {
        let name = format!("probe-{i}");
        let started = Instant::now();
        let vip = block_on(async {
            let api: Api<Service> = Api::namespaced(cluster.kube_client().await, "default");
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"selector": {"app": "bench"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            }))?;
            let made = api.create(&PostParams::default(), &svc).await?;
            made.spec.and_then(|s| s.cluster_ip).context("a cluster IP in the create response")
        })?;
        let answered = wait_vip_answers(n1, &vip, 80, Duration::from_secs(60))?;
        p.create_to_vip_ms.push(answered.duration_since(started).as_secs_f64() * 1e3);
        block_on(async {
            let api: Api<Service> = Api::namespaced(cluster.kube_client().await, "default");
            api.delete(&name, &DeleteParams::default()).await.map(|_| ())
        })?;
        // The delete is two events too (the Service, then its
        // EndpointSlice): let both syncs and the min sync period pass, so
        // that every sample starts on a quiet agent, as the first does.
        thread::sleep(Duration::from_secs(3));
    }
    println!("  service create → cluster IP answers: {:?} ms", p.create_to_vip_ms.iter().map(|m| m.round()).collect::<Vec<_>>());
    Ok(())
}

/// Connects to `vip:port` from `host`'s own namespace every 10 ms (each
/// attempt bounded by 10 ms) until an HTTP GET gets a 2xx answer; the
/// instant it did.
fn wait_vip_answers(host: &AgentHost, vip: &str, port: u16, timeout: Duration) -> Result<Instant> {
    wait_answers(&host.ns, &format!("{vip}:{port}"), timeout)
}

/// [`wait_vip_answers`] from any namespace, to `target` (`IP:PORT`).
fn wait_answers(from: &Netns, target: &str, timeout: Duration) -> Result<Instant> {
    let addr: SocketAddr = target.parse()?;
    let ns = fs::File::open(from.path())?;
    thread::scope(|s| {
        s.spawn(|| {
            // Sockets belong to the namespace of the thread that makes them.
            // SAFETY: setns(2) on this thread only, with a valid namespace fd.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            anyhow::ensure!(rc == 0, "setns: {}", std::io::Error::last_os_error());
            let started = Instant::now();
            let mut tick = started;
            loop {
                if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(10)) {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut answer = String::new();
                    if write!(stream, "GET / HTTP/1.0\r\n\r\n").is_ok()
                        && stream.read_to_string(&mut answer).is_ok()
                        && answer.starts_with("HTTP/1.0 2")
                    {
                        return Ok(Instant::now());
                    }
                }
                anyhow::ensure!(started.elapsed() < timeout, "{addr} did not answer from {} within {timeout:?}", from.name);
                tick += Duration::from_millis(10);
                thread::sleep(tick.saturating_duration_since(Instant::now()));
            }
        })
        .join()
        .map_err(|_| anyhow!("the poll thread panicked"))?
    })
}

/// Runs `program args` in pod `pod` through `kubectl exec`.
fn pod_exec(cluster: &NetnsCluster, pod: &str, program: &str, args: &[&str], timeout: Duration) -> Output {
    let mut all = vec!["exec", pod, "--", program];
    all.extend_from_slice(args);
    run_bounded(cluster.kubectl_command(&all), timeout)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).trim().to_string()
}

/// iperf3's received throughput in Gbit/s, or why there is none.
fn parse_iperf(out: &Output) -> Result<f64, String> {
    let doc: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 printed no JSON ({e}): {}", text(out)))?;
    if let Some(error) = doc["error"].as_str() {
        return Err(format!("iperf3: {error}"));
    }
    doc["end"]["sum_received"]["bits_per_second"].as_f64().map(|b| b / 1e9).ok_or_else(|| format!("no end.sum_received in {}", text(out)))
}

fn parse_load(out: &Output) -> Result<Load, String> {
    let line = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> Option<&str> {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1).copied())
    };
    let parse = || -> Option<Load> {
        Some(Load {
            connections: field("connections")?.parse().ok()?,
            failed: field("failed")?.parse().ok()?,
            per_second: field("per_second")?.parse().ok()?,
            p50_us: field("p50_us")?.parse().ok()?,
            p99_us: field("p99_us")?.parse().ok()?,
        })
    };
    if !out.status.success() {
        return Err(format!("the load generator failed: {}", text(out)));
    }
    parse().ok_or_else(|| format!("unexpected load generator output: {}", text(out)))
}

/// Where a data-path load starts.
enum Source<'a> {
    Pod(&'a str),
    Host(&'a Netns),
}

fn measure_path(
    args: &Args,
    cluster: &NetnsCluster,
    from: &Source,
    iperf_target: (&str, u16),
    http_url: &str,
) -> (Option<f64>, Option<Load>, String) {
    let seconds = args.seconds.to_string();
    let timeout = Duration::from_secs(args.seconds + 60);
    let run = |program: &str, a: &[&str]| match from {
        Source::Pod(pod) => pod_exec(cluster, pod, program, a, timeout),
        Source::Host(ns) => ns.run(program, a, timeout),
    };
    let mut notes = Vec::new();
    let port = iperf_target.1.to_string();
    let iperf_args = ["-c", iperf_target.0, "-p", &port, "-t", &seconds, "-J"];
    let mut gbps = parse_iperf(&run(IPERF3, &iperf_args));
    if gbps.as_ref().is_err_and(|e| e.contains("busy")) {
        // The server still closing the previous test: once more.
        thread::sleep(Duration::from_secs(2));
        gbps = parse_iperf(&run(IPERF3, &iperf_args));
    }
    let gbps = gbps.map_err(|e| notes.push(e)).ok();
    let loader = test_server_command();
    let concurrency = args.concurrency.to_string();
    let load = parse_load(&run(&loader, &["bench", http_url, "--seconds", &seconds, "--concurrency", &concurrency]))
        .map_err(|e| notes.push(e))
        .ok();
    if let Some(l) = load.filter(|l| l.failed > 0) {
        notes.push(format!("{} of {} connections failed", l.failed, l.failed + l.connections));
    }
    (gbps, load, notes.join("; "))
}

#[allow(clippy::too_many_arguments)]
fn datapath(
    args: &Args,
    mode: &str,
    count: usize,
    cluster: &NetnsCluster,
    client: &Netns,
    d: &Deployed,
    direct: bool,
    proxy: bool,
) -> Result<Vec<DataPath>> {
    let n1 = cluster.node("n1").ip.to_string();
    let n2 = cluster.node("n2").ip.to_string();
    let pod_url = format!("http://{}:8080/", d.server);
    let vip_url = format!("http://{}:80/", d.vip);
    // Direct and proxied legs of the same path side by side.
    struct Leg<'a> {
        path: &'static str,
        mode: String,
        from: Source<'a>,
        iperf: (String, u16),
        url: String,
    }
    let mut plan: Vec<Leg> = Vec::new();
    if direct {
        let iperf = (d.server.clone(), IPERF_PORT);
        plan.push(Leg { path: POD_PATH, mode: DIRECT.into(), from: Source::Pod("client"), iperf, url: pod_url.clone() });
    }
    if proxy {
        let iperf = (d.vip.clone(), IPERF_PORT);
        plan.push(Leg { path: POD_PATH, mode: mode.into(), from: Source::Pod("client"), iperf, url: vip_url });
    }
    if direct {
        let iperf = (d.server.clone(), IPERF_PORT);
        plan.push(Leg { path: CLIENT_DIRECT_PATH, mode: DIRECT.into(), from: Source::Host(client), iperf, url: pod_url });
    }
    if proxy {
        let np2 = format!("http://{n2}:{}/", d.http_node_port);
        let np1 = format!("http://{n1}:{}/", d.http_node_port);
        let from = Source::Host(client);
        plan.push(Leg { path: NODEPORT_LOCAL_PATH, mode: mode.into(), from, iperf: (n2, d.iperf_node_port), url: np2 });
        let from = Source::Host(client);
        plan.push(Leg { path: NODEPORT_FORWARDED_PATH, mode: mode.into(), from, iperf: (n1, d.iperf_node_port), url: np1 });
    }
    let mut rows = Vec::new();
    for Leg { path, mode: row_mode, from, iperf: iperf_target, url } in plan {
        let (gbps, load, note) = measure_path(args, cluster, &from, (&iperf_target.0, iperf_target.1), &url);
        let row = DataPath {
            cluster: mode.to_string(),
            services: count,
            path,
            mode: row_mode,
            target: url.trim_start_matches("http://").trim_end_matches('/').to_string(),
            gbps,
            load,
            note,
        };
        println!(
            "  {:<40} {:<9} {:>7} Gbit/s {:>8} conn/s  p50 {:>6} ms  p99 {:>6} ms {}",
            row.path,
            row.mode,
            opt(row.gbps, 2),
            opt(row.load.map(|l| l.per_second), 0),
            opt(row.load.map(|l| l.p50_us as f64 / 1e3), 2),
            opt(row.load.map(|l| l.p99_us as f64 / 1e3), 2),
            row.note
        );
        rows.push(row);
    }
    Ok(rows)
}

/// Milliseconds with the decimals that matter: 3 below 1 ms, 2 below
/// 10 ms, 1 below 100 ms, none above.
fn ms_text(ms: f64) -> String {
    let digits = match ms {
        m if m < 1.0 => 3,
        m if m < 10.0 => 2,
        m if m < 100.0 => 1,
        _ => 0,
    };
    format!("{ms:.digits$}")
}

fn fmt_ms(ms: f64) -> String {
    format!("{} ms", ms_text(ms))
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(fmt_ms).unwrap_or_else(|| "—".into())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "—".into())
}

fn median_f64(v: &[f64]) -> Option<f64> {
    let mut sorted: Vec<Duration> = v.iter().map(|&m| Duration::from_secs_f64(m / 1e3)).collect();
    sorted.sort_unstable();
    (!sorted.is_empty()).then(|| percentile(&sorted, 50.0).as_secs_f64() * 1e3)
}

fn print_programming(p: &Programming) {
    if !p.note.is_empty() {
        println!("  note: {}", p.note);
    }
}

// ---------------------------------------------------------------- output

const ANCHORS: &str = "\
Anchors (published figures, not measured here):
- kube-proxy iptables mode at 10,000 services: ~20,000 rule evaluations per new
  connection (Tigera's comparison of kube-proxy modes). Our chain layout is
  kube-proxy's: a new connection (to a cluster IP or a pod IP) walks the same
  linear HAWSER-SERVICES list, so compare the rows across service counts.
- Kubernetes network programming latency after KEP-3453 (minimizing iptables-restore
  input): p50 ~13 s at 5,000 nodes (SIG Scalability's test). Our 'service create →
  cluster IP answers' is the same SLI (object change → data path programmed on a
  node) on a 2-node cluster.
- Cilium 1.8 (Cilium's bare-metal test, 2020), NodePort forwarding: XDP forwarded
  the full 10 Mpps offered, the tc NodePort path (the kind our eBPF mode attaches
  to the underlay) about 3.5 Mpps, kube-proxy's iptables mode about 2.3 Mpps.
  Their hardware and traffic (small-packet pps from a traffic generator) differ
  from ours (a 2-core VM, network namespaces and veths, TCP connections): their
  numbers and ours do not compare, only ratios between rows of one run do.";

/// The goals of every proxy mode of the run, checked against what was
/// measured.
fn goals(results: &Results) -> String {
    if results.modes.is_empty() {
        return "Goals: no proxy mode measured in this run.\n".into();
    }
    let mut sections = Vec::new();
    for mode in &results.modes {
        match mode.as_str() {
            IPTABLES => sections.push(iptables_goals(results)),
            EBPF => sections.push(ebpf_goals(results)),
            _ => {}
        }
    }
    sections.join("\n")
}

/// The iptables goals.
fn iptables_goals(results: &Results) -> String {
    let mut out = String::from("Our iptables goals:\n");
    let at_10k: Vec<&Programming> = results.programming.iter().filter(|p| p.mode == IPTABLES && p.services >= 10_000).collect();
    if at_10k.is_empty() {
        out.push_str("- full sync of 10,000 services × 10 endpoints under 1 s: not measured in this run (no 10,000-service step)\n");
    }
    for p in &at_10k {
        for (what, v) in [("cold", p.cold_ms), ("warm", p.warm_ms)] {
            let verdict = match v {
                Some(ms) if ms < 1000.0 => format!("met ({})", fmt_ms(ms)),
                Some(ms) => format!("NOT met ({})", fmt_ms(ms)),
                None => "not measured (the sync did not finish, see the notes)".into(),
            };
            let _ = writeln!(out, "- {what} full sync of {} services under 1 s ({} backend): {verdict}", p.services, p.backend);
        }
    }
    for p in results.programming.iter().filter(|p| p.mode == IPTABLES) {
        let verdict = match median_f64(&p.one_change_ms) {
            Some(ms) if ms < 50.0 => format!("met (median {})", fmt_ms(ms)),
            Some(ms) => format!("NOT met (median {})", fmt_ms(ms)),
            None => "not measured".into(),
        };
        let _ = writeln!(out, "- one change under 50 ms at {} services ({} backend): {verdict}", p.services, p.backend);
    }
    out
}

/// `met` when every check passed, `NOT met` when one failed, else `not
/// measured`.
fn verdict(checks: &[Option<bool>]) -> &'static str {
    if checks.contains(&Some(false)) {
        "NOT met"
    } else if checks.contains(&None) || checks.is_empty() {
        "not measured"
    } else {
        "met"
    }
}

/// `row`'s throughput and new connections/s against its [`baseline`]'s,
/// each ratio at least `min`: the verdict and the numbers.
fn vs_direct(results: &Results, row: &DataPath, min: f64) -> (&'static str, String) {
    let Some(base) = baseline(results, row) else {
        return ("not measured", format!("no direct row at {} services: add `direct` to --modes", row.services));
    };
    let pairs = [("Gbit/s", row.gbps, base.gbps, 2), ("conn/s", row.load.map(|l| l.per_second), base.load.map(|l| l.per_second), 0)];
    let mut checks = Vec::new();
    let mut numbers = Vec::new();
    for (unit, value, direct, digits) in pairs {
        match (value, direct) {
            (Some(v), Some(d)) if d > 0.0 => {
                let ratio = v / d;
                checks.push(Some(ratio >= min));
                numbers.push(format!("{v:.digits$} vs {d:.digits$} {unit} direct = {ratio:.3}×"));
            }
            _ => {
                checks.push(None);
                numbers.push(format!("{unit} not measured"));
            }
        }
    }
    (verdict(&checks), numbers.join("; "))
}

/// The eBPF goals, as ratios between rows of this run.
fn ebpf_goals(results: &Results) -> String {
    let mut out = String::from("Our eBPF goals (ratios between rows of this run):\n");
    let programming: Vec<&Programming> = results.programming.iter().filter(|p| p.mode == EBPF).collect();
    let clusterip: Vec<&DataPath> = results.datapath.iter().filter(|d| d.mode == EBPF && d.path == POD_PATH).collect();

    // The cluster IP against the pod IP, from the client pod.
    if clusterip.is_empty() {
        out.push_str("- throughput and new connections/s through a ClusterIP ≥ 0.98 × direct: not measured\n");
    }
    for d in &clusterip {
        let (verdict, numbers) = vs_direct(results, d, 0.98);
        let _ = writeln!(
            out,
            "- throughput and new connections/s through the ClusterIP ≥ 0.98 × direct ({POD_PATH}) at {} services: {verdict} ({numbers})",
            d.services
        );
    }

    // p99 connection latency: the largest service count against 1.
    let one = clusterip.iter().find(|d| d.services == 1);
    let largest = clusterip.iter().filter(|d| d.services > 1).max_by_key(|d| d.services);
    match (one, largest) {
        (Some(one), Some(big)) => {
            let stated = if big.services >= 10_000 {
                String::new()
            } else {
                format!(" (stated at 10,000; {} is this run's largest count)", big.services)
            };
            let verdict = match (one.load, big.load) {
                (Some(a), Some(b)) if a.p99_us > 0 => {
                    let ratio = b.p99_us as f64 / a.p99_us as f64;
                    format!(
                        "{} ({} vs {} at 1 service = {ratio:.3}×)",
                        if ratio <= 1.05 { "met" } else { "NOT met" },
                        fmt_ms(b.p99_us as f64 / 1e3),
                        fmt_ms(a.p99_us as f64 / 1e3)
                    )
                }
                _ => "not measured (a connection loop gave no figures, see the notes)".into(),
            };
            let _ = writeln!(
                out,
                "- p99 connection latency through the ClusterIP at {} services ≤ 1.05 × at 1 service{stated}: {verdict}",
                big.services
            );
        }
        _ => out.push_str(
            "- p99 connection latency through the ClusterIP at 10,000 services ≤ 1.05 × at 1 service: not measured (needs 1 and a larger service count)\n",
        ),
    }

    // One change.
    if programming.is_empty() {
        out.push_str("- one service change applied in under 1 ms: not measured\n");
    }
    for p in &programming {
        let verdict = match median_f64(&p.one_change_ms) {
            Some(ms) => {
                let met = if ms < 1.0 { "met" } else { "NOT met" };
                format!("{met} (median {} of {} samples)", fmt_ms(ms), p.one_change_ms.len())
            }
            None => "not measured".into(),
        };
        let _ = writeln!(out, "- one service change applied in under 1 ms at {} services: {verdict}", p.services);
    }

    // Full syncs at 10,000 services.
    let at_10k: Vec<&&Programming> = programming.iter().filter(|p| p.services >= 10_000).collect();
    if at_10k.is_empty() {
        out.push_str("- full sync (cold and warm) of 10,000 services under 100 ms: not measured in this run (no 10,000-service step)\n");
    }
    for p in &at_10k {
        for (what, v) in [("cold", p.cold_ms), ("warm", p.warm_ms)] {
            let verdict = match v {
                Some(ms) if ms < 100.0 => format!("met ({})", fmt_ms(ms)),
                Some(ms) => format!("NOT met ({})", fmt_ms(ms)),
                None => "not measured (the sync did not finish, see the notes)".into(),
            };
            let _ = writeln!(out, "- {what} full sync of {} services under 100 ms: {verdict}", p.services);
        }
    }

    // NodePort from the client host against the pod IP over the same hop.
    let local: Vec<&DataPath> = results.datapath.iter().filter(|d| d.mode == EBPF && d.path == NODEPORT_LOCAL_PATH).collect();
    if local.is_empty() {
        out.push_str("- NodePort from the client host ≥ 0.95 × direct: not measured\n");
    }
    for d in &local {
        let (verdict, numbers) = vs_direct(results, d, 0.95);
        let _ = writeln!(
            out,
            "- NodePort from the client host ≥ 0.95 × direct ({NODEPORT_LOCAL_PATH} against {CLIENT_DIRECT_PATH}) at {} services: \
             {verdict} ({numbers})",
            d.services
        );
    }
    for d in results.datapath.iter().filter(|d| d.mode == EBPF && d.path == NODEPORT_FORWARDED_PATH) {
        let (_, numbers) = vs_direct(results, d, 0.95);
        let _ = writeln!(
            out,
            "  - for information, not a goal ({NODEPORT_FORWARDED_PATH}: one more hop, and SNAT) at {} services: {numbers}",
            d.services
        );
    }
    out
}

fn programming_table(results: &Results) -> String {
    let mut t = String::from(
        "| mode | backend | services (API total) | cold full sync | warm full sync | agent start → synced (cold / warm) | busy after warm sync | one change, median (samples) | create → VIP answers, median (samples) | kernel state | --cleanup |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in &results.programming {
        let samples = |v: &[f64]| v.iter().map(|&m| ms_text(m)).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            t,
            "| {} | {} | {} ({}) | {} | {} | {} / {} | {} | {} ({}) | {} ({}) | {} | {} |",
            p.mode,
            p.backend,
            p.services,
            p.services_total,
            opt_ms(p.cold_ms),
            opt_ms(p.warm_ms),
            opt(p.cold_start_ms, 0),
            opt(p.warm_start_ms, 0) + " ms",
            p.settle_ms.map(|m| if m >= 1000.0 { format!("{:.1} s", m / 1e3) } else { fmt_ms(m) }).unwrap_or("—".into()),
            opt_ms(median_f64(&p.one_change_ms)),
            samples(&p.one_change_ms),
            opt_ms(median_f64(&p.create_to_vip_ms)),
            samples(&p.create_to_vip_ms),
            p.kernel.map(|k| k.to_string()).unwrap_or("—".into()),
            p.cleanup_ms.map(|m| format!("{m:.0} ms")).unwrap_or("—".into()),
        );
    }
    t
}

/// The direct row a proxied row compares with: the same source, to the pod IP.
fn baseline<'a>(results: &'a Results, row: &DataPath) -> Option<&'a DataPath> {
    let from_pod = row.path.starts_with("pod");
    results
        .datapath
        .iter()
        .find(|d| d.cluster == row.cluster && d.services == row.services && d.mode == DIRECT && d.path.starts_with("pod") == from_pod)
}

fn datapath_table(results: &Results) -> String {
    let mut t = String::from(
        "| services | path | mode | target | iperf3 Gbit/s | new conn/s | conn p50 | conn p99 | vs direct (Gbit/s, conn/s, p99) | notes |\n|---:|---|---|---|---:|---:|---:|---:|---|---|\n",
    );
    for d in &results.datapath {
        let ratio = match baseline(results, d).filter(|_| d.mode != DIRECT) {
            Some(b) => {
                let r = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                    _ => "—".into(),
                };
                format!(
                    "{}, {}, {}",
                    r(d.gbps, b.gbps),
                    r(d.load.map(|l| l.per_second), b.load.map(|l| l.per_second)),
                    r(d.load.map(|l| l.p99_us as f64), b.load.map(|l| l.p99_us as f64))
                )
            }
            None => String::new(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            d.services,
            d.path,
            d.mode,
            d.target,
            opt(d.gbps, 2),
            opt(d.load.map(|l| l.per_second), 0),
            opt(d.load.map(|l| l.p50_us as f64 / 1e3), 2) + " ms",
            opt(d.load.map(|l| l.p99_us as f64 / 1e3), 2) + " ms",
            ratio,
            d.note.replace('|', "/")
        );
    }
    t
}

fn report(args: &Args, results: &Results) -> Result<()> {
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut csv = String::from(
        "mode,backend,services,services_total,endpoints_per_service,cold_full_sync_ms,warm_full_sync_ms,cold_start_to_synced_ms,warm_start_to_synced_ms,busy_after_warm_sync_ms,cleanup_ms,one_change_median_ms,one_change_samples_ms,create_to_vip_median_ms,create_to_vip_samples_ms,svc_chains,sep_chains,bpf_service_entries,bpf_slot_entries,bpf_backend_entries,note\n",
    );
    let cell = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_default();
    // Sync times to the agent's microsecond.
    let cell_us = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    for p in &results.programming {
        let count = |c: Option<usize>| c.map(|c| c.to_string()).unwrap_or_default();
        let (svc, sep, bpf_services, bpf_slots, bpf_backends) = match p.kernel {
            Some(KernelState::Iptables { svc_chains, sep_chains }) => (Some(svc_chains), Some(sep_chains), None, None, None),
            Some(KernelState::Ebpf { services, slots, backends }) => (None, None, Some(services), Some(slots), Some(backends)),
            None => (None, None, None, None, None),
        };
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},\"{}\"",
            p.mode,
            p.backend,
            p.services,
            p.services_total,
            args.endpoints,
            cell_us(p.cold_ms),
            cell_us(p.warm_ms),
            cell(p.cold_start_ms),
            cell(p.warm_start_ms),
            cell(p.settle_ms),
            cell(p.cleanup_ms),
            cell_us(median_f64(&p.one_change_ms)),
            p.one_change_ms.iter().map(|m| format!("{m:.3}")).collect::<Vec<_>>().join(" "),
            cell(median_f64(&p.create_to_vip_ms)),
            p.create_to_vip_ms.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(" "),
            count(svc),
            count(sep),
            count(bpf_services),
            count(bpf_slots),
            count(bpf_backends),
            p.note.replace('"', "'"),
        );
    }
    fs::write(args.out.join("programming.csv"), csv)?;
    let mut csv = String::from(
        "cluster_mode,backend,services,path,mode,target,seconds,concurrency,iperf3_gbps,connections,failed,conns_per_s,conn_p50_ms,conn_p99_ms,note\n",
    );
    for d in &results.datapath {
        let _ = writeln!(
            csv,
            "{},{},{},\"{}\",{},{},{},{},{},{},{},{},{},{},\"{}\"",
            d.cluster,
            backend_of(&d.cluster, &results.backend),
            d.services,
            d.path,
            d.mode,
            d.target,
            args.seconds,
            args.concurrency,
            d.gbps.map(|g| format!("{g:.3}")).unwrap_or_default(),
            d.load.map(|l| l.connections.to_string()).unwrap_or_default(),
            d.load.map(|l| l.failed.to_string()).unwrap_or_default(),
            cell(d.load.map(|l| l.per_second)),
            d.load.map(|l| format!("{:.3}", l.p50_us as f64 / 1e3)).unwrap_or_default(),
            d.load.map(|l| format!("{:.3}", l.p99_us as f64 / 1e3)).unwrap_or_default(),
            d.note.replace('"', "'"),
        );
    }
    fs::write(args.out.join("datapath.csv"), csv)?;

    let mut md = format!(
        "# Service proxy benchmark\n\nmodes {:?}, services {:?}, {} endpoints per background service, --iptables-backend {} (the iptables proxy's; the pod network's in every mode), {} s per data-path measurement, {} connections in flight\n\n",
        args.modes, args.services, args.endpoints, results.backend, args.seconds, args.concurrency
    );
    md.push_str("## Programming (node n1, from the agent's `service proxy synced` lines)\n\n");
    md.push_str(&programming_table(results));
    md.push_str("\n## Data path\n\n");
    md.push_str(&datapath_table(results));
    md.push_str("\nNodePort rows compare with `client → pod n2 (routed via n2)`: the client host reaches the pod IP through a route via n2, the pod's node, so direct and NodePort-on-n2 cross the same hop and differ only by the proxy's NAT (iptables rules, or the eBPF tc programs on the underlay); NodePort on n1 adds the hop to n2 (and SNAT, so replies return through n1). The pod rows of a proxy mode go to the cluster IP (iptables: DNAT in the nat table; eBPF: rewritten at `connect()`, the packets then go to the pod IP directly).\n\n");
    md.push_str(&goals(results));
    md.push('\n');
    md.push_str(ANCHORS);
    md.push('\n');
    if !results.notes.is_empty() {
        md.push_str("\nNotes:\n");
        for note in &results.notes {
            let _ = writeln!(md, "- {note}");
        }
    }
    fs::write(args.out.join("results.md"), &md)?;
    println!("\n{md}");

    let mut plots = Vec::new();
    if !results.programming.is_empty() {
        let path = args.out.join("programming.svg");
        plot_programming(&path, results)?;
        plots.push(path);
    }
    if !results.datapath.is_empty() {
        let path = args.out.join("datapath.svg");
        plot_datapath(&path, results)?;
        plots.push(path);
    }
    println!("written: {}", ["programming.csv", "datapath.csv", "results.md"].map(|f| args.out.join(f).display().to_string()).join(", "));
    for plot in plots {
        println!("plot: {}", plot.display());
    }
    Ok(())
}

// ---------------------------------------------------------------- plots
//
// SVG with no font feature: plotters writes text as SVG <text> elements
// (the viewer's fonts draw them) and only estimates their size, so the
// build needs neither fontconfig nor a font file.

use plotters::prelude::*;

type Series = (String, Vec<(f64, f64)>);

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e:?}")
}

/// One log-log panel of `series` against the service count.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let points: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).filter(|p| p.1 > 0.0).collect();
    if points.is_empty() {
        return Ok(());
    }
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max) * 2.0;
    let y_min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let mut builder = ChartBuilder::on(area);
    builder.caption(title, ("sans-serif", 18)).margin(12).x_label_area_size(40).y_label_area_size(64);
    // Dark, distinct colours (Palette99's yellows vanish on white).
    const COLOURS: [RGBColor; 8] = [
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0x17, 0xbe, 0xcf),
        RGBColor(0x33, 0x33, 0x33),
    ];
    let style = |i: usize| COLOURS[i % COLOURS.len()].to_rgba();
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart.configure_mesh().x_desc("services").y_desc(y_desc).draw().map_err(draw_err)?;
            for (i, (name, pts)) in series.iter().enumerate() {
                let pts: Vec<(f64, f64)> = pts.iter().copied().filter(|p| p.1 > 0.0).collect();
                let color = style(i);
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(draw_err)?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(draw_err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(draw_err)?;
        }};
    }
    if log_y {
        draw!(builder.build_cartesian_2d((0.5..x_max).log_scale(), (y_min / 2.0..y_max * 3.0).log_scale()).map_err(draw_err)?);
    } else {
        draw!(builder.build_cartesian_2d((0.5..x_max).log_scale(), 0.0..y_max * 1.6).map_err(draw_err)?);
    }
    Ok(())
}

fn plot_programming(path: &Path, results: &Results) -> Result<()> {
    let mut series: Vec<Series> = Vec::new();
    let label = |p: &Programming, what: &str| match p.mode.as_str() {
        EBPF => format!("{what} ({})", p.mode),
        _ => format!("{what} ({} {})", p.mode, p.backend),
    };
    let mut add = |name: String, x: f64, y: Option<f64>| {
        if let Some(y) = y {
            match series.iter_mut().find(|(n, _)| *n == name) {
                Some((_, pts)) => pts.push((x, y)),
                None => series.push((name, vec![(x, y)])),
            }
        }
    };
    for p in &results.programming {
        let x = p.services as f64;
        add(label(p, "cold full sync"), x, p.cold_ms);
        add(label(p, "warm full sync"), x, p.warm_ms);
        add(label(p, "one change, median"), x, median_f64(&p.one_change_ms));
        add(label(p, "create → VIP answers, median"), x, median_f64(&p.create_to_vip_ms));
    }
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    panel(&root, "Service proxy programming on node n1 (ms, log scale)", "milliseconds", &series, true)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

fn plot_datapath(path: &Path, results: &Results) -> Result<()> {
    let mut by_metric: [Vec<Series>; 3] = Default::default();
    for d in &results.datapath {
        let name = format!("{} [{}]", d.path, d.mode);
        let values = [d.gbps, d.load.map(|l| l.per_second), d.load.map(|l| l.p99_us as f64 / 1e3)];
        for (metric, value) in by_metric.iter_mut().zip(values) {
            if let Some(v) = value {
                match metric.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, pts)) => pts.push((d.services as f64, v)),
                    None => metric.push((name.clone(), vec![(d.services as f64, v)])),
                }
            }
        }
    }
    let root = SVGBackend::new(path, (1000, 1500)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let areas = root.split_evenly((3, 1));
    panel(&areas[0], "iperf3 throughput (Gbit/s)", "Gbit/s", &by_metric[0], false)?;
    panel(&areas[1], "new connections per second", "connections/s", &by_metric[1], false)?;
    panel(&areas[2], "per-connection latency p99 (ms)", "ms", &by_metric[2], false)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_lines_parse() {
        let line = "2026-11-24T21:13:00.123456Z DEBUG hawser_agent::proxy: service proxy synced full=true services=1003 elapsed_ms=412";
        let s = parse_sync(line).unwrap();
        assert!(s.full);
        assert_eq!((s.services, s.elapsed_us), (1003, 412_000));
        let line =
            "2026-11-24T21:13:00.123456Z DEBUG hawser_agent::proxy: service proxy synced full=false services=1 elapsed_ms=0 elapsed_us=87";
        let s = parse_sync(line).unwrap();
        assert!(!s.full);
        assert_eq!((s.services, s.elapsed_us), (1, 87));
        assert_eq!(s.ms(), 0.087);
        assert_eq!(fmt_ms(0.087), "0.087 ms");
        assert_eq!(fmt_ms(4.5), "4.50 ms");
        assert_eq!(fmt_ms(412.0), "412 ms");
        assert!(parse_sync("INFO hawser_agent::proxy: service proxy synced its caches; programming").is_none());
    }
}

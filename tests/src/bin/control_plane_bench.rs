//! Scheduler and controller benchmarks, run by `cargo xtask bench scheduler`
//! and `cargo xtask bench controllers` against a fresh `hawser server`.
//!
//! Nodes are simulated (kwok-style Node objects and Leases, see
//! `hawser_tests::kwok`); everything else is the real control plane over
//! its real API.
//!
//! - `scheduler`: N pods created by C concurrent clients onto M nodes; a
//!   watcher timestamps each pod's first event with `spec.nodeName` set.
//!   Reports pods bound per second and create→bound latency.
//! - `controllers`: one ReplicationController of R replicas, from the create
//!   request to every pod existing (and bound); then readiness flips of one
//!   pod behind a Service, from the status write to the Endpoints watch
//!   event that reflects it.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use hawser_tests::kwok::{NodeShape, register};
use hawser_tests::stats::{Summary, ms};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, ReplicationController, Service};
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Scheduler and controller benchmarks against a hawser server")]
struct Args {
    /// The server's kubeconfig (written to its data dir).
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    Scheduler {
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        #[arg(long, default_value_t = 16)]
        clients: usize,
    },
    Controllers {
        #[arg(long, default_value_t = 1_000)]
        replicas: usize,
        #[arg(long, default_value_t = 20)]
        nodes: usize,
        #[arg(long, default_value_t = 100)]
        flips: usize,
    },
}

const TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)?;
    let ns = format!("bench-{}", std::process::id());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}}))?)
        .await
        .context("creating the benchmark namespace")?;
    match args.bench {
        Bench::Scheduler { pods, nodes, clients } => scheduler(client, &ns, pods, nodes, clients).await,
        Bench::Controllers { replicas, nodes, flips } => controllers(client, &ns, replicas, nodes, flips).await,
    }
}

async fn register_nodes(client: &kube::Client, count: usize) -> Result<Vec<String>> {
    let names: Vec<String> = (0..count).map(|i| format!("bench-node-{i:03}")).collect();
    futures::stream::iter(names.clone())
        .map(|name| {
            let client = client.clone();
            async move { register(&client, &NodeShape::new(&name).without_pods()).await.with_context(|| format!("registering {name}")) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    // Let the scheduler's node cache catch up before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(names)
}

/// Timestamps of the first event showing each pod, and showing it bound.
#[derive(Default)]
struct PodTimes {
    seen: HashMap<String, Instant>,
    bound: HashMap<String, (Instant, String)>,
}

/// Watches pods in `ns` from now on, recording [`PodTimes`]; returns once the watch is open.
async fn watch_pods(client: &kube::Client, ns: &str) -> Result<Arc<Mutex<PodTimes>>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let rv = api.list_metadata(&Default::default()).await?.metadata.resource_version.unwrap_or_default();
    let mut stream = api.watch(&WatchParams::default().timeout(290), &rv).await?.boxed();
    let times = Arc::new(Mutex::new(PodTimes::default()));
    let sink = times.clone();
    tokio::spawn(async move {
        while let Some(Ok(event)) = stream.next().await {
            let (WatchEvent::Added(pod) | WatchEvent::Modified(pod)) = event else { continue };
            let now = Instant::now();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let mut t = sink.lock().unwrap();
            t.seen.entry(name.clone()).or_insert(now);
            if let Some(node) = pod.spec.and_then(|s| s.node_name) {
                t.bound.entry(name).or_insert((now, node));
            }
        }
    });
    Ok(times)
}

async fn wait_for(times: &Arc<Mutex<PodTimes>>, what: &str, done: impl Fn(&PodTimes) -> bool) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while !done(&times.lock().unwrap()) {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn scheduler(client: kube::Client, ns: &str, pods: usize, nodes: usize, clients: usize) -> Result<()> {
    println!("registering {nodes} nodes");
    register_nodes(&client, nodes).await?;
    let times = watch_pods(&client, ns).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    println!("creating {pods} pods from {clients} clients");
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (api, sent, next) = (api.clone(), sent.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= pods {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let name = format!("pod-{i:06}");
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": name, "labels": {"app": "bench"}},
                        "spec": {"containers": [{"name": "c", "image": "registry.example/bench:1",
                                                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
                    }))?;
                    sent.lock().unwrap().insert(name.clone(), Instant::now());
                    api.create(&PostParams::default(), &pod).await.with_context(|| format!("creating {name}"))?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let created = started.elapsed();
    wait_for(&times, "every pod bound", |t| t.bound.len() >= pods).await?;
    let t = times.lock().unwrap();
    let sent = sent.lock().unwrap();
    let last_bound = t.bound.values().map(|(at, _)| *at).max().context("no pod bound")?;
    let span = last_bound - started;
    let latencies: Vec<Duration> = t.bound.iter().filter_map(|(name, (at, _))| Some(*at - *sent.get(name)?)).collect();
    let summary = Summary::of(&latencies).context("no latencies")?;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, node) in t.bound.values() {
        *per_node.entry(node).or_default() += 1;
    }
    println!();
    println!("scheduler: {pods} pods onto {nodes} nodes, {clients} creating clients");
    println!("  all created in      {:>9.2} s ({:.0} creates/s)", created.as_secs_f64(), pods as f64 / created.as_secs_f64());
    println!(
        "  all bound in        {:>9.2} s ({:.0} pods bound/s, first create to last bind)",
        span.as_secs_f64(),
        pods as f64 / span.as_secs_f64()
    );
    println!("  create→bound        p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms", ms(summary.p50), ms(summary.p99), ms(summary.max));
    println!(
        "  pods per node       min {} max {} over {} nodes",
        per_node.values().min().unwrap_or(&0),
        per_node.values().max().unwrap_or(&0),
        per_node.len()
    );
    Ok(())
}

async fn controllers(client: kube::Client, ns: &str, replicas: usize, nodes: usize, flips: usize) -> Result<()> {
    println!("registering {nodes} nodes");
    let node_names = register_nodes(&client, nodes).await?;
    let times = watch_pods(&client, ns).await?;
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": {"name": "big"},
        "spec": {"replicas": replicas, "selector": {"app": "big"},
                 "template": {"metadata": {"labels": {"app": "big"}},
                              "spec": {"containers": [{"name": "c", "image": "registry.example/bench:1",
                                                       "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]}}}
    }))?;
    println!("creating a ReplicationController of {replicas} replicas");
    let started = Instant::now();
    Api::<ReplicationController>::namespaced(client.clone(), ns).create(&PostParams::default(), &rc).await?;
    wait_for(&times, "every replica to exist", |t| t.seen.len() >= replicas).await?;
    let all_exist = times.lock().unwrap().seen.values().max().copied().context("no pods")? - started;
    wait_for(&times, "every replica bound", |t| t.bound.len() >= replicas).await?;
    let all_bound = times.lock().unwrap().bound.values().map(|(at, _)| *at).max().context("no pods")? - started;

    // Endpoints latency: one pre-bound pod behind a Service, readiness flipped.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": "flip"}, "spec": {"selector": {"app": "flip"}, "ports": [{"port": 80}]}}))?;
    Api::<Service>::namespaced(client.clone(), ns).create(&PostParams::default(), &svc).await?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "flip", "labels": {"app": "flip"}},
        "spec": {"nodeName": node_names[0], "containers": [{"name": "c", "image": "registry.example/bench:1"}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let ready_patch = |ready: bool| {
        let status = if ready { "True" } else { "False" };
        Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.244.0.2", "conditions": [{"type": "Ready", "status": status}]}}))
    };
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    let rv = eps.list_metadata(&Default::default()).await?.metadata.resource_version.unwrap_or_default();
    let mut watch = eps.watch(&WatchParams::default().timeout(290), &rv).await?.boxed();
    let ready_in = |e: &Endpoints| e.subsets.iter().flatten().any(|s| s.addresses.as_ref().is_some_and(|a| !a.is_empty()));
    let mut latencies = Vec::new();
    let mut ready = false;
    for _ in 0..flips {
        ready = !ready;
        let sent = Instant::now();
        pods.patch_status("flip", &PatchParams::default(), &ready_patch(ready)).await?;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.context("no Endpoints change within 10 s")?;
            match event.context("the Endpoints watch ended")?? {
                WatchEvent::Added(e) | WatchEvent::Modified(e) if e.metadata.name.as_deref() == Some("flip") && ready_in(&e) == ready => {
                    break;
                }
                _ => {}
            }
        }
        latencies.push(sent.elapsed());
    }
    let flip = Summary::of(&latencies).context("no flips")?;
    println!();
    println!("controllers: ReplicationController of {replicas} replicas, {nodes} simulated nodes");
    println!("  all pods exist after {:>8.2} s", all_exist.as_secs_f64());
    println!("  all pods bound after {:>8.2} s", all_bound.as_secs_f64());
    println!(
        "  endpoints follow a readiness flip ({flips} flips, status write sent → Endpoints event): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(flip.p50),
        ms(flip.p99),
        ms(flip.max)
    );
    Ok(())
}

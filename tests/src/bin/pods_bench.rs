//! `cargo xtask bench pods`: pod startup and the agent's cost at rest, on a
//! real one-node cluster (control plane + one `hawser agent` in a network
//! namespace host, the process runtime, the test HTTP server as the pod).
//!
//! - startup: one ReplicationController of `--replicas` pods; per pod, from
//!   the watch event that shows it created to the one that shows it Ready
//!   (Kubernetes' pod startup SLI, measured by a watcher as its e2e
//!   density test does); and create-to-all-Ready for the whole RC.
//! - at rest: `--idle-pods` pods running and Ready, then the agent process's
//!   resident memory and CPU use over `--idle-seconds`.

use anyhow::{Context, Result};
use clap::Parser;
use futures::StreamExt;
use hawser_tests::nodes::{NetnsCluster, test_server_command};
use hawser_tests::stats::{Summary, ms};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Pod startup latency and agent cost at rest, on a real node")]
struct Args {
    #[arg(long, default_value_t = 100)]
    replicas: usize,
    #[arg(long, default_value_t = 500)]
    idle_pods: usize,
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // A /22 and room for the idle pods: a /24 holds 253 pods at most.
    let max_pods = (args.idle_pods.max(args.replicas) + 10).to_string();
    let cluster = NetnsCluster::start_with(1, &["--node-cidr-mask-size", "22"], &["--max-pods", &max_pods]);
    let agent_pid = cluster.nodes[0].agent_pid().context("the agent runs")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let client = cluster.kube_client().await;
        startup(&client, args.replicas).await?;
        at_rest(&client, args.idle_pods, Duration::from_secs(args.idle_seconds), agent_pid).await
    });
    drop(cluster);
    result
}

fn rc(name: &str, replicas: usize) -> Result<ReplicationController> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"app": name},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "web", "image": "hawser-test-server", "command": [test_server_command()]}],
                },
            },
        },
    }))?)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates an RC of `replicas` and waits until all its pods are Ready;
/// returns per-pod create→Ready as the watch saw them, and the total.
async fn run_rc(client: &kube::Client, name: &str, replicas: usize) -> Result<(Vec<Duration>, Duration)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    let version = pods.list_metadata(&Default::default()).await?.metadata.resource_version.unwrap_or_default();
    let mut events = pods.watch(&WatchParams::default().labels(&format!("app={name}")), &version).await?.boxed();
    let start = Instant::now();
    rcs.create(&PostParams::default(), &rc(name, replicas)?).await?;
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut ready: HashMap<String, Duration> = HashMap::new();
    let deadline = Duration::from_secs(300);
    while ready.len() < replicas {
        let event = tokio::time::timeout(deadline.saturating_sub(start.elapsed()), events.next())
            .await
            .with_context(|| format!("only {} of {replicas} pods Ready after {deadline:?}", ready.len()))?
            .context("the watch ended")??;
        let pod = match event {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
            WatchEvent::Error(e) => anyhow::bail!("watch error: {e:?}"),
            _ => continue,
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let created = *seen.entry(uid.clone()).or_insert_with(Instant::now);
        if is_ready(&pod) && !ready.contains_key(&uid) {
            ready.insert(uid, created.elapsed());
        }
    }
    Ok((ready.into_values().collect(), start.elapsed()))
}

async fn delete_rc(client: &kube::Client, name: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    rcs.delete(name, &DeleteParams::foreground()).await?;
    let started = Instant::now();
    while !pods.list(&Default::default()).await?.items.is_empty() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "pods of {name} still there after 5 minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

async fn startup(client: &kube::Client, replicas: usize) -> Result<()> {
    let (samples, total) = run_rc(client, "startup", replicas).await?;
    let s = Summary::of(&samples).context("no samples")?;
    println!("pod startup, {replicas} replicas on one node (create seen → Ready seen, by watch):");
    println!("  p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", ms(s.p50), ms(s.p99), ms(s.max));
    println!("  RC create → all {replicas} Ready: {:.2} s ({:.0} pods/s)", total.as_secs_f64(), replicas as f64 / total.as_secs_f64());
    delete_rc(client, "startup").await
}

/// (resident bytes, CPU ticks used) of a process.
fn usage(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok((rss_kb * 1024, ticks))
}

async fn at_rest(client: &kube::Client, pods: usize, window: Duration, agent_pid: u32) -> Result<()> {
    let (rss_before, _) = usage(agent_pid)?;
    let (_, total) = run_rc(client, "idle", pods).await?;
    // Let the start-up work (status writes, events) drain first.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, ticks_before) = usage(agent_pid)?;
    tokio::time::sleep(window).await;
    let (rss, ticks_after) = usage(agent_pid)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (ticks_after - ticks_before) as f64 / hz / window.as_secs_f64() * 100.0;
    println!("{pods} pods Ready on one node in {:.1} s; then at rest for {} s:", total.as_secs_f64(), window.as_secs());
    println!(
        "  agent RSS {:.1} MiB (before the pods: {:.1} MiB), agent CPU {cpu:.1}% of one core",
        rss as f64 / 1048576.0,
        rss_before as f64 / 1048576.0
    );
    delete_rc(client, "idle").await
}

//! `cargo xtask bench dns`: the agent's cluster DNS beside dnsmasq, side by
//! side in one run, on a real one-node cluster (control plane + one
//! `hawser agent` in a network-namespace host).
//!
//! - `--services` selector-less ClusterIP Services are created through the
//!   API; the agent answers their names from its watch cache. dnsmasq (the
//!   cache layer of kube-dns, the DNS Kubernetes shipped before CoreDNS)
//!   serves the same names from a hosts file, authoritative for
//!   cluster.local as ours is.
//! - Both forward other names to the same upstream (a third dnsmasq on the
//!   node's loopback) and cache them.
//! - `dnsperf` runs in the node's namespace against each server in turn,
//!   `--rounds` times, for cluster names (every Service's, in random order)
//!   and for cached external names (`--external` names, asked once before
//!   measuring). Both servers' addresses are exempt from conntrack.
//!
//! Prints a Markdown table and writes it, with the raw dnsperf outputs,
//! under `--out`.

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use hawser_tests::block_on;
use hawser_tests::dnsmasq::Dnsmasq;
use hawser_tests::nodes::{AgentHost, NetnsCluster};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams};
use rand::seq::SliceRandom;
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The agent's node-local address.
const OURS: &str = "169.254.20.10";
/// dnsmasq under test, on the node's loopback.
const DNSMASQ: &str = "127.0.0.2";
/// The shared upstream for external names.
const UPSTREAM: &str = "127.0.0.53";
/// CoreDNS' published figure: internal names, 2 vCPU (n1-standard-2),
/// coredns/deployment kubernetes/Scaling_CoreDNS.md.
const COREDNS_QPS: f64 = 33_700.0;

#[derive(Parser)]
#[command(about = "Cluster DNS queries/s and latency beside dnsmasq")]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// External names (cached after a first pass).
    #[arg(long, default_value_t = 1_000)]
    external: usize,
    /// dnsperf seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Measurements per server and name set, alternating servers.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Queries dnsperf keeps in flight.
    #[arg(long, default_value_t = 100)]
    outstanding: usize,
    #[arg(long, default_value = "target/bench/dns")]
    out: PathBuf,
}

/// What one dnsperf run reported.
#[derive(Clone, Copy, Debug)]
struct Run {
    qps: f64,
    /// Average latency, seconds.
    latency: f64,
    latency_stddev: f64,
    /// Percent of queries without an answer.
    lost: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let dir = tempfile::Builder::new().prefix("hawser-dns-bench-").tempdir()?;
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, format!("nameserver {UPSTREAM}\n"))?;
    let cluster = NetnsCluster::start_with(1, &[], &["--resolv-conf", resolv_conf.to_str().context("utf-8 path")?]);
    let node = &cluster.nodes[0];

    // The upstream: every external name has an address, for 5 minutes
    // (dnsmasq's own answers have TTL 0 otherwise: nobody could cache them).
    let _upstream = Dnsmasq::start(&node.ns, UPSTREAM, &["--address=/ext.test/192.0.2.9".to_string(), "--local-ttl=300".to_string()]);

    let started = Instant::now();
    let ips = create_services(&cluster, args.services)?;
    eprintln!("created {} services in {:.1} s", ips.len(), started.elapsed().as_secs_f64());
    let last = format!("svc-{:05}.default.svc.cluster.local", args.services - 1);
    wait_answered(node, OURS, &last, Duration::from_secs(120)).context("the agent answering the last service")?;

    // dnsmasq with the same names, authoritative for cluster.local, caching
    // as much as it can (10,000 is its maximum).
    let hosts = dir.path().join("services.hosts");
    let lines: String = ips.iter().map(|(name, ip)| format!("{ip} {name}.default.svc.cluster.local\n")).collect();
    std::fs::write(&hosts, lines)?;
    let _dnsmasq = Dnsmasq::start(
        &node.ns,
        DNSMASQ,
        &[
            format!("--addn-hosts={}", hosts.display()),
            "--local=/cluster.local/".into(),
            format!("--server={UPSTREAM}"),
            "--cache-size=10000".into(),
            "--dns-forward-max=1000".into(),
            "--local-ttl=5".into(),
        ],
    );
    untrack(node, DNSMASQ)?;
    wait_answered(node, DNSMASQ, &last, Duration::from_secs(10))?;

    // Query files: every service once, shuffled; the external names.
    let mut cluster_names: Vec<String> = ips.iter().map(|(name, _)| format!("{name}.default.svc.cluster.local A")).collect();
    cluster_names.shuffle(&mut rand::rng());
    let cluster_file = dir.path().join("cluster.queries");
    std::fs::write(&cluster_file, cluster_names.join("\n") + "\n")?;
    let external_file = dir.path().join("external.queries");
    std::fs::write(&external_file, (0..args.external).map(|i| format!("host-{i}.ext.test A\n")).collect::<String>())?;

    let servers = [("hawser agent", OURS), ("dnsmasq", DNSMASQ)];
    let sets = [("cluster names", &cluster_file), ("cached external names", &external_file)];
    // Warm both caches with every external name, and each server's path.
    for (_, address) in servers {
        dnsperf(node, address, &external_file, 2, args.outstanding, None)?;
        dnsperf(node, address, &cluster_file, 2, args.outstanding, None)?;
    }
    let mut runs: Vec<(&str, &str, Run)> = Vec::new();
    for round in 0..args.rounds {
        for (set, file) in sets {
            for (server, address) in servers {
                let raw = args.out.join(format!("dnsperf-{}-{}-{round}.txt", server.replace(' ', "-"), set.replace(' ', "-")));
                let run = dnsperf(node, address, file, args.seconds, args.outstanding, Some(&raw))?;
                eprintln!("round {round}: {server:12} {set:22} {:>9.0} q/s  avg {:.3} ms", run.qps, run.latency * 1e3);
                runs.push((server, set, run));
            }
        }
    }
    let report = report(&args, &runs);
    println!("{report}");
    std::fs::write(args.out.join("results.md"), &report)?;
    Ok(())
}

/// Creates `count` selector-less ClusterIP Services `svc-NNNNN`; returns
/// each name with its cluster IP.
fn create_services(cluster: &NetnsCluster, count: usize) -> Result<Vec<(String, String)>> {
    block_on(async {
        let client = cluster.kube_client().await;
        let api: Api<Service> = Api::namespaced(client, "default");
        let params = PatchParams::apply("dns-bench").force();
        futures::stream::iter(0..count)
            .map(|i| {
                let (api, params) = (api.clone(), params.clone());
                async move {
                    let name = format!("svc-{i:05}");
                    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                        "spec": {"ports": [{"name": "http", "port": 80}]}});
                    // A loaded control plane may drop a connection: retry.
                    let mut tries = 0;
                    loop {
                        match api.patch(&name, &params, &Patch::Apply(&svc)).await {
                            Ok(_) => return anyhow::Ok(()),
                            Err(e) if tries < 3 => {
                                tries += 1;
                                eprintln!("applying {name} (try {tries}): {e}");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            Err(e) => return Err(e).with_context(|| format!("applying service {name}")),
                        }
                    }
                }
            })
            .buffer_unordered(16)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        let mut ips = Vec::with_capacity(count);
        let mut params = ListParams::default().limit(5000);
        loop {
            let page = api.list(&params).await?;
            for svc in page.items {
                let name = svc.metadata.name.unwrap_or_default();
                if let Some(ip) = svc.spec.and_then(|s| s.cluster_ip).filter(|_| name.starts_with("svc-")) {
                    ips.push((name, ip));
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        ips.sort();
        anyhow::ensure!(ips.len() == count, "{} of {count} services have a cluster IP", ips.len());
        Ok(ips)
    })
}

/// Waits until `server` answers `name` with an address.
fn wait_answered(node: &AgentHost, server: &str, name: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let out = node.run("dig", &["+short", "+time=1", "+tries=1", &format!("@{server}"), name]);
        if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.parse::<std::net::Ipv4Addr>().is_ok()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{server} does not answer {name} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// DNS to and from `address` skips conntrack, as the agent's addresses do.
fn untrack(node: &AgentHost, address: &str) -> Result<()> {
    for rule in [["PREROUTING", "-d"], ["OUTPUT", "-d"], ["OUTPUT", "-s"]] {
        let out = node.run("iptables", &["-t", "raw", "-I", rule[0], rule[1], address, "-j", "NOTRACK"]);
        anyhow::ensure!(out.status.success(), "iptables: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// One dnsperf run from the node against `server`.
fn dnsperf(node: &AgentHost, server: &str, queries: &Path, seconds: u64, outstanding: usize, keep: Option<&Path>) -> Result<Run> {
    let out = node.ns.run(
        "dnsperf",
        &[
            "-s",
            server,
            "-d",
            queries.to_str().context("utf-8 path")?,
            "-l",
            &seconds.to_string(),
            "-q",
            &outstanding.to_string(),
            "-t",
            "2",
        ],
        Duration::from_secs(seconds + 30),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some(path) = keep {
        std::fs::write(path, &text)?;
    }
    anyhow::ensure!(out.status.success(), "dnsperf against {server}: {}{}", text, String::from_utf8_lossy(&out.stderr));
    let field = |label: &str| -> Result<f64> {
        let line =
            text.lines().find(|l| l.trim_start().starts_with(label)).with_context(|| format!("dnsperf printed no {label:?}:\n{text}"))?;
        let value = line.split(':').nth(1).and_then(|v| v.split_whitespace().next()).context("a value")?;
        value.parse().with_context(|| format!("{label} {value:?}"))
    };
    Ok(Run {
        qps: field("Queries per second")?,
        latency: field("Average Latency (s)")?,
        latency_stddev: field("Latency StdDev (s)")?,
        lost: {
            let line = text.lines().find(|l| l.trim_start().starts_with("Queries lost")).context("dnsperf printed no lost count")?;
            let percent = line.split('(').nth(1).and_then(|p| p.split('%').next()).context("a percentage")?;
            percent.parse().with_context(|| format!("lost {percent:?}"))?
        },
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(args: &Args, runs: &[(&str, &str, Run)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`cargo xtask bench dns --services {} --external {} --seconds {} --rounds {} --outstanding {}`\n",
        args.services, args.external, args.seconds, args.rounds, args.outstanding
    );
    let _ = writeln!(out, "| names | server | queries/s (median) | each run | avg latency | latency stddev | ours ÷ dnsmasq |");
    let _ = writeln!(out, "|---|---|---:|---|---:|---:|---:|");
    for set in ["cluster names", "cached external names"] {
        let of = |server: &str| runs.iter().filter(|(s, n, _)| *s == server && *n == set).map(|(_, _, r)| *r).collect::<Vec<_>>();
        let dnsmasq = median(of("dnsmasq").iter().map(|r| r.qps).collect());
        for server in ["hawser agent", "dnsmasq"] {
            let these = of(server);
            let qps = median(these.iter().map(|r| r.qps).collect());
            let each: Vec<String> = these.iter().map(|r| format!("{:.0}", r.qps)).collect();
            let latency = median(these.iter().map(|r| r.latency).collect());
            let stddev = median(these.iter().map(|r| r.latency_stddev).collect());
            let ratio = if server == "dnsmasq" { String::new() } else { format!("**{:.2}×**", qps / dnsmasq) };
            let _ = writeln!(
                out,
                "| {set} | {server} | {qps:.0} | {} | {:.3} ms | {:.3} ms | {ratio} |",
                each.join(", "),
                latency * 1e3,
                stddev * 1e3
            );
        }
    }
    let lost: f64 = runs.iter().map(|(_, _, r)| r.lost).fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "\nWorst run's lost queries: {lost:.2}%. CoreDNS' published figure for internal names on a 2-vCPU n1-standard-2: ~{COREDNS_QPS:.0} q/s (coredns/deployment, Scaling_CoreDNS.md; other hardware, not measured here)."
    );
    out
}

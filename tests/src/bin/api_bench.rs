//! API benchmark driver, run by `cargo xtask bench api` against a fresh server.
//!
//! N pod creates from C concurrent clients, each client on its own HTTP/1.1
//! keep-alive connection with one request in flight, while a watcher on the
//! same namespace timestamps every ADDED event. Reports create throughput and
//! latency, and watch delivery latency measured two ways:
//! - from send: create request sent → ADDED event read (what a controller
//!   waiting on someone else's write sees, the "create → event" figure);
//! - from 201: create response read → ADDED event read (the delay after the
//!   writer already knew; 0 when the event won the race).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hawser_tests::https_client;
use hawser_tests::stats::{Summary, ms};
use serde_json::{Value, json};
use tokio::sync::Notify;

#[derive(Parser)]
#[command(about = "Pod-create and watch-delivery benchmark against a hawser API server")]
struct Args {
    /// API server URL, e.g. https://127.0.0.1:6443
    #[arg(long)]
    server: String,
    /// PEM file with the CA that signed the server's certificate.
    #[arg(long)]
    ca: std::path::PathBuf,
    /// Bearer token (from the environment, so it stays out of `ps`).
    #[arg(long, env = "HAWSER_TOKEN", hide_env_values = true)]
    token: String,
    /// Number of pods to create.
    #[arg(long, default_value_t = 10_000)]
    creates: usize,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// How long to wait for the last ADDED events after the last create.
    #[arg(long, default_value_t = 30)]
    watch_grace_secs: u64,
}

/// One acknowledged create.
struct Created {
    name: String,
    sent: Instant,
    answered: Instant,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.clients > 0 && args.creates > 0, "--creates and --clients must be positive");
    let ca = std::fs::read_to_string(&args.ca).with_context(|| format!("read {}", args.ca.display()))?;
    let base = args.server.trim_end_matches('/').to_owned();
    let admin = https_client(&ca, Some(&args.token));

    wait_ready(&admin, &base).await?;
    let ns = format!("bench-{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let resp = admin
        .post(format!("{base}/api/v1/namespaces"))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .send()
        .await?;
    if resp.status().as_u16() != 201 {
        bail!("creating namespace {ns}: {} {}", resp.status(), resp.text().await?);
    }
    let pods_url = format!("{base}/api/v1/namespaces/{ns}/pods");

    // Watch from the list's resourceVersion so no event is missed, and wait
    // for the response headers so connection set-up is not counted as delivery.
    let list: Value = admin.get(&pods_url).send().await?.error_for_status()?.json().await?;
    let rv = list["metadata"]["resourceVersion"].as_str().context("pod list has no resourceVersion")?;
    let watch_client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
        .tls_built_in_root_certs(false)
        .no_proxy()
        .build()?;
    let watch = watch_client
        .get(format!("{pods_url}?watch=true&resourceVersion={rv}"))
        .bearer_auth(&args.token)
        .send()
        .await?
        .error_for_status()
        .context("starting the watch")?;
    let stop = Arc::new(Notify::new());
    let watcher = tokio::spawn(read_watch(watch, args.creates, stop.clone()));

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        // One client each, at most one idle connection: one request in flight
        // at a time means one keep-alive connection per client.
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
            .tls_built_in_root_certs(false)
            .no_proxy()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()?;
        let (url, token, next, total) = (pods_url.clone(), args.token.clone(), next.clone(), args.creates);
        clients.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let name = format!("bench-{i:06}");
                let pod = json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "registry.example/bench:1"}]},
                });
                let sent = Instant::now();
                match client.post(&url).bearer_auth(&token).json(&pod).send().await {
                    Ok(resp) if resp.status().as_u16() == 201 => {
                        // Reading the body is part of the create: a client
                        // cannot act on the object before it has it.
                        let ok = resp.bytes().await.is_ok();
                        let answered = Instant::now();
                        if ok {
                            done.push(Created { name, sent, answered });
                        } else {
                            errors.push(format!("{name}: body cut off"));
                        }
                    }
                    Ok(resp) => {
                        let status = resp.status();
                        errors.push(format!("{name}: {status} {}", resp.text().await.unwrap_or_default()));
                    }
                    Err(e) => errors.push(format!("{name}: {e}")),
                }
            }
            (done, errors)
        }));
    }
    let mut created = Vec::with_capacity(args.creates);
    let mut errors = Vec::new();
    for c in clients {
        let (d, e) = c.await?;
        created.extend(d);
        errors.extend(e);
    }
    let elapsed = started.elapsed();

    // Give the watch a bounded grace period for the last events.
    let grace = tokio::time::sleep(Duration::from_secs(args.watch_grace_secs));
    tokio::pin!(grace);
    let mut watcher = watcher;
    let (events, watch_error) = tokio::select! {
        r = &mut watcher => r?,
        _ = &mut grace => { stop.notify_one(); watcher.await? }
    };

    let create_lat: Vec<Duration> = created.iter().map(|c| c.answered - c.sent).collect();
    let mut from_send = Vec::new();
    let mut from_201 = Vec::new();
    for c in &created {
        if let Some(&at) = events.get(&c.name) {
            from_send.push(at.saturating_duration_since(c.sent));
            from_201.push(at.saturating_duration_since(c.answered));
        }
    }
    let missed = created.len() - from_send.len();
    report(&args, elapsed, &create_lat, &from_send, &from_201, missed, errors.len());

    // Leave the server as we found it (the namespace takes the pods along).
    let _ = admin.delete(format!("{base}/api/v1/namespaces/{ns}")).send().await;

    for e in errors.iter().take(5) {
        eprintln!("create error: {e}");
    }
    if let Some(e) = watch_error {
        eprintln!("watch error: {e}");
    }
    if !errors.is_empty() || missed > 0 {
        bail!("{} creates failed, {missed} acknowledged creates never seen by the watch", errors.len());
    }
    Ok(())
}

async fn wait_ready(client: &reqwest::Client, base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            other => {
                if Instant::now() >= deadline {
                    bail!("{base}/readyz not ready within 30 s: {other:?}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads newline-delimited WatchEvents until `expected` ADDED events arrived,
/// the stream ends, or `stop` fires. Returns when each pod's ADDED was read.
async fn read_watch(mut resp: reqwest::Response, expected: usize, stop: Arc<Notify>) -> (HashMap<String, Instant>, Option<String>) {
    let mut seen = HashMap::with_capacity(expected);
    let mut buf: Vec<u8> = Vec::new();
    let error = loop {
        if seen.len() >= expected {
            break None;
        }
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = stop.notified() => break None,
        };
        match chunk {
            Ok(Some(bytes)) => {
                let at = Instant::now();
                buf.extend_from_slice(&bytes);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    if event["type"] == "ADDED"
                        && let Some(name) = event["object"]["metadata"]["name"].as_str()
                    {
                        seen.entry(name.to_owned()).or_insert(at);
                    } else if event["type"] == "ERROR" {
                        return (seen, Some(event["object"].to_string()));
                    }
                }
            }
            Ok(None) => break Some("the server closed the watch".to_owned()),
            Err(e) => break Some(e.to_string()),
        }
    };
    (seen, error)
}

fn report(
    args: &Args,
    elapsed: Duration,
    create: &[Duration],
    from_send: &[Duration],
    from_201: &[Duration],
    missed: usize,
    errors: usize,
) {
    let rate = create.len() as f64 / elapsed.as_secs_f64();
    let c = Summary::of(create);
    let s = Summary::of(from_send);
    let a = Summary::of(from_201);
    let f = |x: Option<Summary>, pick: fn(&Summary) -> Duration| x.map(|s| ms(pick(&s)));
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"));

    println!("hawser API benchmark: {} pod creates from {} clients (one HTTP/1.1 keep-alive connection each)", args.creates, args.clients);
    println!("{:<34} {:>12}", "metric", "value");
    println!("{:<34} {:>12}", "creates acknowledged (201)", create.len());
    println!("{:<34} {:>12}", "create errors", errors);
    println!("{:<34} {:>12.3}", "wall time (s)", elapsed.as_secs_f64());
    println!("{:<34} {:>12.0}", "creates/s", rate);
    println!("{:<34} {:>12}", "create latency p50", cell(f(c, |s| s.p50)));
    println!("{:<34} {:>12}", "create latency p99", cell(f(c, |s| s.p99)));
    println!("{:<34} {:>12}", "create latency max", cell(f(c, |s| s.max)));
    println!("{:<34} {:>12}", "watch delivery p50 (from send)", cell(f(s, |s| s.p50)));
    println!("{:<34} {:>12}", "watch delivery p99 (from send)", cell(f(s, |s| s.p99)));
    println!("{:<34} {:>12}", "watch delivery p50 (from 201)", cell(f(a, |s| s.p50)));
    println!("{:<34} {:>12}", "watch delivery p99 (from 201)", cell(f(a, |s| s.p99)));
    println!("{:<34} {:>12}", "ADDED events missed", missed);
    let json = json!({
        "bench": "api",
        "creates": args.creates,
        "clients": args.clients,
        "acknowledged": create.len(),
        "errors": errors,
        "wall_s": elapsed.as_secs_f64(),
        "creates_per_s": rate,
        "create_p50_ms": f(c, |s| s.p50),
        "create_p99_ms": f(c, |s| s.p99),
        "create_max_ms": f(c, |s| s.max),
        "watch_from_send_p50_ms": f(s, |s| s.p50),
        "watch_from_send_p99_ms": f(s, |s| s.p99),
        "watch_from_201_p50_ms": f(a, |s| s.p50),
        "watch_from_201_p99_ms": f(a, |s| s.p99),
        "watch_missed": missed,
    });
    println!("{json}");
}

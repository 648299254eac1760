//! `cargo xtask`: the project's tasks, one function each.
//!
//! - `deps`: install the Debian packages Hawser needs (idempotent, as root)
//!   and the eBPF toolchain (nightly `rust-src`, `bpf-linker`)
//! - `up`: build and run `hawser up --data-dir target/hawser` in the foreground
//! - `test`: deps, fmt check, clippy, build, unit and end-to-end tests (what CI runs)
//! - `cluster up --nodes N` / `cluster down`: control plane + N agents in
//!   network-namespace hosts, for development (the e2e tests' cluster)
//! - `bench scheduler`, `bench controllers`: the control plane over simulated nodes
//! - `bench api`: pod-create and watch-delivery benchmark on a fresh server
//! - `bench pods`: pod startup and the agent's cost on a real node
//! - `bench proxy`: the service proxy's rule programming and data path on a
//!   real two-node cluster

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// Debian packages the project needs, each with what needs it.
const PACKAGES: &[&str] = &[
    // `ip`: the agent's pod network (bridge, veth, routes) and the e2e test
    // hosts in network namespaces.
    "iproute2",
    // The iptables service-proxy backend (`iptables-restore`).
    "iptables",
    // Flushing stale UDP conntrack entries when a service's endpoints change.
    "conntrack",
    // Poking the API by hand as the README and docs show (`curl --cacert`).
    "curl",
    // CA bundle for curl and apt over HTTPS.
    "ca-certificates",
    // `cargo xtask bench proxy`: data-path throughput between pods and
    // from the underlay client host (run as a pod and by the driver).
    "iperf3",
    // The docker runtime's engine (`dockerd`, containerd, runc); its tests
    // start a dockerd of their own.
    "docker.io",
    // Cluster DNS tests: `dig` (SRV, PTR, rcodes) from pods, and dnsmasq as
    // the upstream server the tests run on loopback.
    "dnsutils",
    "dnsmasq-base",
    // `cargo xtask bench dns`: the load generator.
    "dnsperf",
    // LLVM 22 (rustc's own LLVM) for bpf-linker, which links the eBPF
    // proxy's programs (see `bpf_toolchain`).
    "llvm-22-dev",
];

/// bpf-linker's version, built against Debian's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The real kubectl the end-to-end tests drive.
const KUBECTL: &str = "/usr/bin/kubectl";

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Hawser's build, run, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the Debian packages Hawser needs (as root; skips what is installed).
    Deps,
    /// Build hawser (debug) and run `hawser up --data-dir target/hawser` in the foreground.
    Up,
    /// Everything CI checks: deps, fmt, clippy, build, unit and end-to-end tests.
    Test,
    /// A development cluster of network-namespace hosts on this machine.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// The control plane and N agents, each in its own namespace host on
    /// 198.51.100.0/24; returns once every node is Ready.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// `process` or `docker`.
        #[arg(long, default_value = "process")]
        runtime: String,
    },
    /// Removes everything `up` made: processes, pods, namespaces, links.
    Down,
}

#[derive(Subcommand)]
enum Bench {
    /// Pod creates from concurrent clients, and watch delivery latency.
    Api {
        #[arg(long, default_value_t = 10_000)]
        creates: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
    /// Pods created onto simulated nodes: bound per second, create→bound
    /// latency. Flags go to the driver (`--pods`, `--nodes`, `--clients`).
    Scheduler {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        driver_args: Vec<String>,
    },
    /// Real pods on one real node: startup latency of an RC, then agent
    /// memory and CPU with many pods at rest. Flags go to the driver
    /// (`--replicas`, `--idle-pods`, `--idle-seconds`).
    Pods {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        driver_args: Vec<String>,
    },
    /// A large ReplicationController from create to all pods, and Endpoints
    /// latency. Flags go to the driver (`--replicas`, `--nodes`, `--flips`).
    Controllers {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        driver_args: Vec<String>,
    },
    /// The service proxy on a real two-node cluster: full-sync and
    /// one-change programming time, service create → VIP answering, and the
    /// data path (iperf3, new connections/s, latency) direct vs through the
    /// proxy, per service count. Flags go to the driver (`--modes
    /// direct,iptables,ebpf`, `--services 1,1000,10000`, `--endpoints 10`,
    /// `--iptables-backend system|nft|legacy`, `--seconds`, ...); results
    /// under target/bench/proxy/.
    Proxy {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        driver_args: Vec<String>,
    },
    /// Cluster DNS on a real one-node cluster beside dnsmasq serving the
    /// same Service names from a hosts file: dnsperf queries/s and latency
    /// for cluster names and cached external names. Flags go to the driver
    /// (`--services 10000`, `--seconds`, `--rounds`, ...); results under
    /// target/bench/dns/.
    Dns {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        driver_args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Deps => deps(),
        Task::Up => up(),
        Task::Test => test(),
        Task::Cluster { action: ClusterAction::Up { nodes, runtime } } => cluster_up(nodes, &runtime),
        Task::Cluster { action: ClusterAction::Down } => cluster_down(),
        Task::Bench { bench: Bench::Api { creates, clients } } => bench_api(creates, clients),
        Task::Bench { bench: Bench::Scheduler { driver_args } } => bench_control_plane("scheduler", &driver_args),
        Task::Bench { bench: Bench::Controllers { driver_args } } => bench_control_plane("controllers", &driver_args),
        Task::Bench { bench: Bench::Pods { driver_args } } => bench_pods(&driver_args),
        Task::Bench { bench: Bench::Proxy { driver_args } } => bench_proxy(&driver_args),
        Task::Bench { bench: Bench::Dns { driver_args } } => bench_dns(&driver_args),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root (this crate lives in `<root>/xtask`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits inside the workspace").to_owned()
}

/// The cargo target dir, read off where this binary runs from
/// (`<target>/debug/xtask`), so `CARGO_TARGET_DIR` is honoured.
fn target_dir() -> Result<PathBuf> {
    let exe = env::current_exe().context("locating the xtask binary")?;
    exe.parent().and_then(Path::parent).map(Path::to_owned).context("xtask binary is not inside a target dir")
}

/// `cargo`, the same one that launched us.
fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs one named step with inherited stdio; fails naming the step.
fn run(step: &str, cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("{step}: could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{step} failed ({})", describe(status));
    }
    Ok(())
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

fn is_installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .context("deps: running dpkg-query (is this a Debian system?)")?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "install ok installed")
}

fn deps() -> Result<()> {
    let mut missing = Vec::new();
    for &package in PACKAGES {
        if !is_installed(package)? {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        println!("deps: all {} packages already installed", PACKAGES.len());
    } else {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "deps: missing Debian packages {}; run `cargo xtask deps` as root (or `sudo apt-get install {}`)",
                missing.join(" "),
                missing.join(" ")
            );
        }
        println!("deps: installing {}", missing.join(" "));
        run("deps: apt-get update", Command::new("apt-get").arg("update"))?;
        run(
            "deps: apt-get install",
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    bpf_toolchain()?;
    let kubectl = Command::new(KUBECTL).args(["version", "--client"]).output();
    match kubectl {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            println!("deps: {KUBECTL}: {}", version.lines().next().unwrap_or("").trim());
        }
        Ok(out) => bail!("deps: `{KUBECTL} version --client` failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => bail!(
            "deps: {KUBECTL} not found ({e}); the end-to-end tests drive the real kubectl (1.32) and \
             this project does not install it: put a kubectl binary at {KUBECTL}"
        ),
    }
    Ok(())
}

/// What the agent's build script needs to compile the eBPF programs
/// (`ebpf/programs`, built for `bpfel-unknown-none`): the nightly
/// toolchain with `rust-src` (for `-Z build-std=core`) and `bpf-linker`.
/// Each step is skipped when already done.
fn bpf_toolchain() -> Result<()> {
    let rustup = |args: &[&str]| {
        Command::new("rustup").args(args).output().context("deps: running rustup (the project builds with rustup's toolchains)")
    };
    let toolchains = rustup(&["toolchain", "list"])?;
    if !String::from_utf8_lossy(&toolchains.stdout).lines().any(|l| l.starts_with("nightly")) {
        run(
            "deps: rustup toolchain install nightly",
            Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]),
        )?;
    }
    let components = rustup(&["component", "list", "--installed", "--toolchain", "nightly"])?;
    if !String::from_utf8_lossy(&components.stdout).lines().any(|l| l.starts_with("rust-src")) {
        run(
            "deps: rustup component add rust-src",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        )?;
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    match linker {
        Ok(out) if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION) => {
            println!("deps: {}", String::from_utf8_lossy(&out.stdout).trim());
        }
        _ => run(
            "deps: cargo install bpf-linker",
            // Against Debian's LLVM (its build script reads LLVM_PREFIX);
            // without it, bpf-linker would want to download an LLVM.
            Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args([
                    "install",
                    "bpf-linker",
                    "--locked",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )?,
    }
    Ok(())
}

fn up() -> Result<()> {
    // The agent needs iptables (pod egress) like the tests do.
    deps()?;
    println!("xtask up: building hawser (a debug build: quick to compile, fine for trying it out)");
    run("build hawser", cargo().args(["build", "-p", "hawser"]))?;
    let target = target_dir()?;
    let data_dir = target.join("hawser");
    let mut child = Command::new(target.join("debug").join("hawser"))
        .arg("up")
        .arg("--data-dir")
        .arg(&data_dir)
        .spawn()
        .context("starting hawser up")?;
    // Ctrl-C reaches hawser directly (same process group). Catch SIGINT here
    // rather than dying from it, so we wait for hawser's clean shutdown and
    // pass on its exit code. A handler (unlike SIG_IGN) is reset to the
    // default in hawser on exec, so it does not leak into the child.
    extern "C" fn ignore(_: libc::c_int) {}
    // SAFETY: installs an async-signal-safe no-op handler.
    unsafe { libc::signal(libc::SIGINT, ignore as *const () as libc::sighandler_t) };
    let status = child.wait().context("waiting for hawser up")?;
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => std::process::exit(code),
        (None, Some(sig)) => std::process::exit(128 + sig),
        _ => bail!("hawser up ended with {status}"),
    }
}

fn test() -> Result<()> {
    println!("==> xtask test: deps");
    deps()?;
    let steps: [(&str, Command); 5] = [
        ("cargo fmt --check", {
            let mut c = cargo();
            c.args(["fmt", "--all", "--", "--check"]);
            c
        }),
        ("clippy", {
            let mut c = cargo();
            c.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
            c
        }),
        // The binaries the end-to-end tests start: cargo builds only the
        // tested package's own binaries for its tests.
        ("build hawser and the test server", {
            let mut c = cargo();
            c.args(["build", "-p", "hawser", "-p", "hawser-test-server"]);
            c
        }),
        // Unit tests first, end-to-end tests last, so the run closes with the
        // end-to-end summary lines rather than an empty doctest summary.
        // --no-fail-fast: one red test binary should not hide the others.
        ("unit tests", {
            let mut c = cargo();
            c.args(["test", "--workspace", "--exclude", "hawser-tests", "--no-fail-fast"]);
            c
        }),
        ("end-to-end tests", {
            let mut c = cargo();
            c.args(["test", "-p", "hawser-tests", "--no-fail-fast"]);
            c
        }),
    ];
    for (name, mut cmd) in steps {
        println!("==> xtask test: {name}");
        run(name, &mut cmd)?;
    }
    Ok(())
}

/// A server process that is stopped (SIGTERM, then SIGKILL) however the
/// benchmark ends.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("xtask: hawser server ignored SIGTERM for 10 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A release `hawser server` on a free loopback port with a temp data dir,
/// stopped and removed when dropped.
struct BenchServer {
    server: Server,
    port: u16,
    data: PathBuf,
    log_path: PathBuf,
    token: String,
    _dir: tempfile::TempDir,
}

fn start_bench_server(extra_args: &[&str]) -> Result<BenchServer> {
    println!("==> building hawser and the benchmark drivers (release)");
    run("release build", cargo().args(["build", "--release", "-p", "hawser", "-p", "hawser-tests", "--bins"]))?;
    let release = target_dir()?.join("release");
    let dir = tempfile::Builder::new().prefix("hawser-bench-").tempdir().context("creating a temp data dir")?;
    let data = dir.path().join("data");
    let log_path = dir.path().join("server.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).context("finding a free port")?.port();
    let log = fs::File::create(&log_path).context("creating the server log")?;

    println!("==> starting hawser server on 127.0.0.1:{port} {}, data dir {}", extra_args.join(" "), data.display());
    let mut server = Server {
        child: Command::new(release.join("hawser"))
            .arg("server")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting hawser server")?,
    };
    let token = wait_for_token(&mut server, &data.join("kubeconfig.yaml"), &log_path)?;
    Ok(BenchServer { server, port, data, log_path, token, _dir: dir })
}

fn bench_api(creates: usize, clients: usize) -> Result<()> {
    // The API server alone: a scheduler would add a binding and an Event per pod.
    let bench = start_bench_server(&["--disable-scheduler", "--disable-controller-manager"])?;
    println!("==> running the driver: {creates} creates, {clients} clients");
    let result = run(
        "api_bench",
        Command::new(target_dir()?.join("release").join("api_bench"))
            .arg("--server")
            .arg(format!("https://127.0.0.1:{}", bench.port))
            .arg("--ca")
            .arg(bench.data.join("pki").join("ca.crt"))
            .arg("--creates")
            .arg(creates.to_string())
            .arg("--clients")
            .arg(clients.to_string())
            .env("HAWSER_TOKEN", &bench.token),
    );
    if result.is_err() {
        eprintln!("server log tail:\n{}", tail(&bench.log_path, 30));
    }
    drop(bench.server);
    result
}

/// `cargo xtask bench scheduler|controllers`: the control-plane driver
/// against a full server. Simulated nodes renew no Lease during the run, so
/// the grace period is set past its length.
fn bench_control_plane(bench_name: &str, driver_args: &[String]) -> Result<()> {
    let bench = start_bench_server(&["--node-monitor-grace-period", "1h"])?;
    let result = run(
        "control_plane_bench",
        Command::new(target_dir()?.join("release").join("control_plane_bench"))
            .arg("--kubeconfig")
            .arg(bench.data.join("kubeconfig.yaml"))
            .arg(bench_name)
            .args(driver_args),
    );
    if result.is_err() {
        eprintln!("server log tail:\n{}", tail(&bench.log_path, 30));
    }
    drop(bench.server);
    result
}

/// `cargo xtask bench pods`: the driver builds its own one-node netns
/// cluster from the release binaries.
fn bench_pods(driver_args: &[String]) -> Result<()> {
    deps()?;
    run("cargo build --release", cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    run("pods_bench", Command::new(target_dir()?.join("release").join("pods_bench")).args(driver_args))
}

/// `cargo xtask bench proxy`: the driver builds its own two-node netns
/// cluster from the release binaries and writes its tables, CSV files and
/// plots under `<target>/bench/proxy/`. Ctrl-C reaches the driver too
/// (same process group), which tears its cluster down before exiting: we
/// wait for it rather than die first.
fn bench_proxy(driver_args: &[String]) -> Result<()> {
    deps()?;
    run("cargo build --release", cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    let out = target_dir()?.join("bench").join("proxy");
    extern "C" fn ignore(_: libc::c_int) {}
    // SAFETY: installs an async-signal-safe no-op handler (reset to the
    // default in the driver on exec).
    unsafe { libc::signal(libc::SIGINT, ignore as *const () as libc::sighandler_t) };
    let mut driver = Command::new(target_dir()?.join("release").join("proxy_bench"));
    if !driver_args.iter().any(|a| a == "--out" || a.starts_with("--out=")) {
        driver.arg("--out").arg(&out);
    }
    run("proxy_bench", driver.args(driver_args))
}

/// `cargo xtask bench dns`: the driver builds its own one-node netns
/// cluster from the release binaries.
fn bench_dns(driver_args: &[String]) -> Result<()> {
    deps()?;
    run("cargo build --release", cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    let mut driver = Command::new(target_dir()?.join("release").join("dns_bench"));
    if !driver_args.iter().any(|a| a == "--out" || a.starts_with("--out=")) {
        driver.arg("--out").arg(target_dir()?.join("bench").join("dns"));
    }
    run("dns_bench", driver.args(driver_args))
}

/// Where the development cluster's `serve` process keeps its files.
fn cluster_state() -> Result<PathBuf> {
    Ok(target_dir()?.join("hawser-cluster"))
}

/// `cargo xtask cluster up`: builds, then starts `netns_cluster serve` in
/// the background (its own session, so it outlives this command) and waits
/// until it reports the cluster ready.
fn cluster_up(nodes: usize, runtime: &str) -> Result<()> {
    let state = cluster_state()?;
    if let Ok(pid) = fs::read_to_string(state.join("serve.pid"))
        && Path::new(&format!("/proc/{}", pid.trim())).exists()
    {
        bail!("a development cluster is already up (pid {}); `cargo xtask cluster down` first", pid.trim());
    }
    deps()?;
    run("cargo build", cargo().args(["build", "--workspace", "--bins"]))?;
    fs::create_dir_all(&state)?;
    let _ = fs::remove_file(state.join("kubeconfig.yaml"));
    let log_path = state.join("serve.log");
    let log = fs::File::create(&log_path)?;
    let mut serve = Command::new(target_dir()?.join("debug").join("netns_cluster"));
    serve.args(["serve", "--nodes", &nodes.to_string(), "--state"]).arg(&state);
    serve.arg(format!("--agent-arg=--runtime={runtime}"));
    if runtime == "docker" {
        // The engine (`--docker-socket`, default /var/run/docker.sock) may
        // lack the pause image: the agents build it from this binary.
        serve.arg(format!("--agent-arg=--pause-binary={}", static_pause()?.display()));
    }
    {
        use std::os::unix::process::CommandExt;
        serve.process_group(0);
    }
    let mut child = serve.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn().context("starting netns_cluster serve")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !state.join("serve.pid").exists() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the cluster did not come up ({}):
{}",
                describe(status),
                tail(&log_path, 40)
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!(
                "the cluster was not up within 2 minutes:
{}",
                tail(&log_path, 40)
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{}",
        fs::read_to_string(&log_path)?
            .lines()
            .filter(|l| l.starts_with("cluster up") || l.starts_with("  n"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("export KUBECONFIG={}", state.join("kubeconfig.yaml").display());
    println!("(`cargo xtask cluster down` removes it; its log is {})", log_path.display());
    Ok(())
}

/// `hawser-pause` linked statically (it goes alone into a `FROM scratch`
/// image), built in a target dir of its own so the workspace's ordinary
/// build of it is left alone.
fn static_pause() -> Result<PathBuf> {
    let target = target_dir()?.join("static-pause");
    run(
        "build the static pause binary",
        cargo().args(["rustc", "-p", "hawser-pause", "--bin", "hawser-pause", "--target-dir"]).arg(&target).args([
            "--",
            "-C",
            "target-feature=+crt-static",
        ]),
    )?;
    Ok(target.join("debug").join("hawser-pause"))
}

/// `cargo xtask cluster down`: SIGTERM to `serve`, which tears the cluster
/// down; whatever a dead `serve` left is removed from its resource list.
fn cluster_down() -> Result<()> {
    let state = cluster_state()?;
    if let Ok(pid) = fs::read_to_string(state.join("serve.pid")) {
        let pid = pid.trim().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(200));
        }
    }
    run("netns_cluster cleanup", Command::new(target_dir()?.join("debug").join("netns_cluster")).args(["cleanup", "--state"]).arg(&state))?;
    println!("development cluster down");
    Ok(())
}

/// Waits (30 s at most) for the server to write its kubeconfig and returns
/// the admin token from it.
fn wait_for_token(server: &mut Server, kubeconfig: &Path, log: &Path) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!("hawser server exited at startup ({}):\n{}", describe(status), tail(log, 30));
        }
        if let Some(token) = fs::read_to_string(kubeconfig)
            .ok()
            .and_then(|text| serde_yaml::from_str::<serde_yaml::Value>(&text).ok())
            .and_then(|doc| doc["users"][0]["user"]["token"].as_str().map(str::to_owned))
        {
            return Ok(token);
        }
        if Instant::now() >= deadline {
            bail!("no token in {} after 30 s:\n{}", kubeconfig.display(), tail(log, 30));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

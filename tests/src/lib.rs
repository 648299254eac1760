//! End-to-end test harness: a real `hawser server` process on a private data
//! dir and port, the real `/usr/bin/kubectl` pointed at it, and HTTP clients
//! that trust its CA.
//!
//! Every [`TestCluster`] owns its process and its temp dir; dropping it (also
//! while a test panics) kills the server and removes the dir, and a panicking
//! test gets the tail of the server log printed so the failure explains itself.

pub mod dnsmasq;
pub mod docker;
pub mod kwok;
pub mod netns;
pub mod nodes;
pub mod pods;
pub mod stats;

/// `#[test]` wrappers running each function named for every proxy mode
/// (module `iptables` and module `ebpf`, each test calling the function
/// with its mode): a new backend joins by adding its mode here.
#[macro_export]
macro_rules! on_every_proxy_mode {
    ($($test:ident),* $(,)?) => {
        mod iptables {
            $(#[test]
            fn $test() {
                super::$test("iptables")
            })*
        }
        mod ebpf {
            $(#[test]
            fn $test() {
                super::$test("ebpf")
            })*
        }
    };
}

/// The manifests under `tests/manifests/`, shared by the test files.
pub mod manifests {
    /// Pod `web` (labels app=web, tier=frontend), one container with a named port and an env var.
    pub const POD: &str = include_str!("../manifests/pod.yaml");
    /// Service `web`, type NodePort, port 80, nodePort left to the allocator.
    pub const SERVICE_NODEPORT: &str = include_str!("../manifests/service-nodeport.yaml");
    /// ReplicationController `web`, 1 replica, selector app=web.
    pub const RC: &str = include_str!("../manifests/rc.yaml");
    /// apps/v1 Deployment `api`, 2 replicas, selector app=api.
    pub const DEPLOYMENT: &str = include_str!("../manifests/deployment.yaml");

    /// A Namespace called `name`.
    pub fn namespace(name: &str) -> String {
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
    }

    /// A ConfigMap called `name` with `data: {k: v}` (namespace from kubectl's `-n`).
    pub fn configmap(name: &str) -> String {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n")
    }
}

use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tempfile::TempDir;

/// How long a server may take to answer `/readyz` after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for one kubectl invocation; a hung kubectl means a hung server
/// response (a watch that never ends, a request never answered).
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);
/// The real kubectl these tests speak for.
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// The `hawser` binary built by `cargo build -p hawser`, found next to the
/// running test binary (`<target>/debug/deps/<test>` → `<target>/debug/hawser`)
/// so a custom `CARGO_TARGET_DIR` works too.
pub fn hawser_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join("hawser"));
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("debug").join("hawser"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("no hawser binary at any of {candidates:?}: run `cargo build -p hawser` first"))
}

/// A free TCP port on 127.0.0.1 (the kernel picks it; we release it for the
/// server to bind, a tiny race we accept for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0 to find a free port").port()
}

/// Runs a future to completion on a fresh runtime in its own thread, so
/// blocking harness code can use async clients from sync tests and from inside
/// `#[tokio::test]` alike.
pub fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    thread::scope(|s| {
        s.spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("build a tokio runtime").block_on(f))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Polls `check` until it returns `Some`, at most `timeout`; panics with
/// `what` (which should say what probably went wrong) otherwise.
pub fn poll_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?}: {what}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Splits a kubectl table line into cells: kubectl pads columns with at least
/// three spaces, while a header such as `NOMINATED NODE` has single spaces.
pub fn table_cells(line: &str) -> Vec<String> {
    line.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
}

/// Runs a command with captured output, killing it if it outlives `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {shown}: {e}"));
    // Drain both pipes on their own threads so a chatty child cannot block
    // on a full pipe while we wait for it.
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
            let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
            panic!(
                "{shown} did not finish within {timeout:?} (a request the server never answered?)\n\
                 stdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// What the harness reads from `<data-dir>/kubeconfig.yaml`.
#[derive(Debug, Clone, PartialEq)]
struct Credentials {
    server: String,
    ca_pem: String,
    token: String,
}

fn read_kubeconfig(path: &Path) -> Result<Credentials, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))?;
    let field = |v: &serde_yaml::Value, key: &str| -> Result<String, String> {
        v.get(key).and_then(|x| x.as_str()).map(str::to_owned).ok_or_else(|| format!("{} has no {key}", path.display()))
    };
    let cluster = doc
        .get("clusters")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("cluster"))
        .ok_or_else(|| format!("{} has no clusters[0].cluster", path.display()))?;
    let user = doc
        .get("users")
        .and_then(|u| u.get(0))
        .and_then(|u| u.get("user"))
        .ok_or_else(|| format!("{} has no users[0].user", path.display()))?;
    let ca_b64 = field(cluster, "certificate-authority-data")?;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca_b64.trim())
        .map_err(|e| format!("certificate-authority-data is not base64: {e}"))?;
    Ok(Credentials {
        server: field(cluster, "server")?,
        ca_pem: String::from_utf8(ca).map_err(|e| format!("CA is not PEM text: {e}"))?,
        token: field(user, "token")?,
    })
}

/// One `GET /readyz` with the CA from the kubeconfig and no token.
fn probe_ready(url: &str, ca_pem: &str) -> Result<(), String> {
    let url = format!("{url}/readyz");
    let client = https_client(ca_pem, None);
    block_on(async move {
        let resp = client.get(&url).send().await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() { Ok(()) } else { Err(format!("/readyz answered {status}: {body}")) }
    })
}

/// An HTTP client that trusts only `ca_pem`, with an optional bearer token on
/// every request. HTTP/1.1 keep-alive; no proxies (traffic stays on loopback).
pub fn https_client(ca_pem: &str, token: Option<&str>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("the cluster CA parses as PEM");
    let mut builder =
        reqwest::Client::builder().add_root_certificate(ca).tls_built_in_root_certs(false).no_proxy().timeout(Duration::from_secs(30));
    if let Some(token) = token {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("token is a valid header value");
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    builder.build().expect("build an HTTPS client")
}

/// A running `hawser server` (or `hawser up`) with its own data dir: on
/// 127.0.0.1, or inside a network namespace reached through a forwarder.
pub struct TestCluster {
    child: Option<Child>,
    /// `server` or `up`.
    command: &'static str,
    /// Where it runs when not in this process's namespace: the namespace's
    /// name and the address it listens on there.
    inside: Option<(String, std::net::SocketAddr)>,
    /// Keeps the loopback port that leads inside open.
    _forwarder: Option<netns::Forwarder>,
    /// Holds `data/` (the server's data dir), `server.log`, `manifests/` and
    /// kubectl's cache; removed when the cluster drops, after the kill.
    dir: TempDir,
    port: u16,
    creds: Credentials,
    /// Extra `hawser server` flags, kept for restarts.
    args: Vec<String>,
}

impl TestCluster {
    /// Starts a fresh server and waits until `/readyz` answers over HTTPS.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a fresh server with extra `hawser server` flags.
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("hawser-e2e-").tempdir().expect("create a temp data dir");
        fs::create_dir_all(dir.path().join("manifests")).expect("create manifests dir");
        let mut cluster = TestCluster {
            child: None,
            command: "server",
            inside: None,
            _forwarder: None,
            dir,
            port: free_port(),
            creds: Credentials { server: String::new(), ca_pem: String::new(), token: String::new() },
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        cluster.spawn_and_wait();
        cluster
    }

    /// Starts `hawser <command>` (`server` or `up`) inside network namespace
    /// `ns`, listening on `listen` there, with extra flags; this process
    /// reaches it on a loopback port forwarded into the namespace.
    pub fn start_in(ns: &netns::Netns, command: &'static str, listen: std::net::SocketAddr, args: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("hawser-e2e-").tempdir().expect("create a temp data dir");
        fs::create_dir_all(dir.path().join("manifests")).expect("create manifests dir");
        let target = if listen.ip().is_unspecified() { std::net::SocketAddr::from(([127, 0, 0, 1], listen.port())) } else { listen };
        let forwarder = netns::Forwarder::start(ns, target);
        let mut cluster = TestCluster {
            child: None,
            command,
            inside: Some((ns.name.clone(), listen)),
            port: forwarder.port,
            _forwarder: Some(forwarder),
            dir,
            creds: Credentials { server: String::new(), ca_pem: String::new(), token: String::new() },
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        cluster.spawn_and_wait();
        cluster
    }

    /// The directory every file of this cluster lives under (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's own kubeconfig (naming the server as it sees itself).
    pub fn server_kubeconfig_path(&self) -> PathBuf {
        self.data_dir().join("kubeconfig.yaml")
    }

    /// The kubeconfig this process uses (through the forwarder when the
    /// server runs in a namespace).
    pub fn kubeconfig_path(&self) -> PathBuf {
        match self.inside {
            Some(_) => self.dir.path().join("client-kubeconfig.yaml"),
            None => self.server_kubeconfig_path(),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn token(&self) -> &str {
        &self.creds.token
    }

    pub fn ca_pem(&self) -> &str {
        &self.creds.ca_pem
    }

    /// `https://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs (for tests that signal it from
    /// another thread at a precise moment).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// A client with the admin token.
    pub fn client(&self) -> reqwest::Client {
        https_client(self.ca_pem(), Some(self.token()))
    }

    /// A kube-rs client from the cluster's kubeconfig, as a Rust user would make one.
    pub async fn kube_client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig_path()).expect("kube-rs reads kubeconfig.yaml");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kube-rs accepts kubeconfig.yaml");
        kube::Client::try_from(config).expect("kube-rs builds a client from it")
    }

    /// A client that trusts the CA but sends no token.
    pub fn anonymous_client(&self) -> reqwest::Client {
        https_client(self.ca_pem(), None)
    }

    fn spawn_and_wait(&mut self) {
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open server log");
        let (mut command, listen) = match &self.inside {
            Some((ns, listen)) => (netns::command_in(ns, hawser_binary()), listen.to_string()),
            None => (Command::new(hawser_binary()), format!("127.0.0.1:{}", self.port)),
        };
        let child = command
            .arg(self.command)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(listen)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn hawser server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!("hawser server exited during startup ({status}); log tail:\n{}", self.log_tail(40));
            }
            // A read error may just mean the file is not (fully) written yet.
            let last = match read_kubeconfig(&self.server_kubeconfig_path()) {
                Ok(creds) => match probe_ready(&self.url(), &creds.ca_pem) {
                    Ok(()) => {
                        if self.inside.is_some() {
                            // The same credentials, reached through the forwarder.
                            let text = fs::read_to_string(self.server_kubeconfig_path()).expect("read kubeconfig");
                            fs::write(self.kubeconfig_path(), text.replace(&creds.server, &self.url()))
                                .expect("write the client kubeconfig");
                        } else {
                            assert_eq!(creds.server, self.url(), "kubeconfig.yaml names a different server than the one we started");
                        }
                        self.creds = creds;
                        return;
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!("hawser server not ready within {READY_TIMEOUT:?} (last: {last}); log tail:\n{}", self.log_tail(40));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `n` lines of the server's log (stdout and stderr).
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILL, as a crash would: nothing gets flushed on the way out.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the server to exit on its own.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: plain kill(2) on our own child, which is not yet reaped, so
        // the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("hawser server ignored SIGTERM for {timeout:?}; log tail:\n{}", self.log_tail(40));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data dir and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn_and_wait();
    }

    /// Writes `contents` to `manifests/<name>` in the cluster's temp dir.
    pub fn write_manifest(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join("manifests").join(name);
        fs::write(&path, contents).expect("write manifest");
        path
    }

    /// `kubectl apply -f` of `manifest` (written to `manifests/<file>`), plus
    /// `extra` arguments; panics unless it succeeds, returns kubectl's stdout.
    pub fn apply(&self, file: &str, manifest: &str, extra: &[&str]) -> String {
        let path = self.write_manifest(file, manifest);
        let path = path.to_str().expect("temp paths are UTF-8");
        let mut args = vec!["apply", "-f", path];
        args.extend_from_slice(extra);
        self.kubectl_ok(&args)
    }

    /// A kubectl command aimed at this cluster, with a private discovery
    /// cache (a warm cache would hide discovery bugs) and HOME, so nothing
    /// from the invoking user's `~/.kube` is read or written.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KUBECTL);
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG");
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        run_bounded(self.kubectl_command(args), KUBECTL_TIMEOUT)
    }

    fn explain(&self, args: &[&str], out: &Output) -> String {
        format!(
            "kubectl {}\nexit: {}\nstdout:\n{}\nstderr:\n{}\nserver log tail:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(30)
        )
    }

    /// Runs kubectl, panics unless it succeeds, returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        if !out.status.success() {
            panic!("kubectl failed:\n{}", self.explain(args, &out));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl, panics if it succeeds, returns its stderr.
    pub fn kubectl_fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        if out.status.success() {
            panic!("kubectl succeeded but should have failed:\n{}", self.explain(args, &out));
        }
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `kubectl ... -o json`, parsed.
    pub fn kubectl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.kubectl_ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl {} printed invalid JSON ({e}):\n{text}", all.join(" ")))
    }

    /// Registers simulated nodes (see [`kwok`]) with this cluster.
    pub fn simulated_nodes(&self, shapes: impl IntoIterator<Item = kwok::NodeShape>) -> Vec<kwok::SimulatedNode> {
        shapes.into_iter().map(|shape| kwok::SimulatedNode::start(&self.kubeconfig_path(), shape)).collect()
    }

    /// The pods matching `selector` in `default` that are not being deleted.
    pub fn live_pods(&self, selector: &str) -> Vec<serde_json::Value> {
        let list = self.kubectl_json(&["get", "pods", "-l", selector]);
        list["items"].as_array().cloned().unwrap_or_default().into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect()
    }

    /// `metadata.resourceVersion` of one object.
    pub fn resource_version(&self, kind: &str, name: &str, namespace: &str) -> String {
        let obj = self.kubectl_json(&["get", kind, name, "-n", namespace]);
        obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind}/{name} has no metadata.resourceVersion: {obj}"))
            .to_owned()
    }

    /// Starts a long-running kubectl (e.g. `get pods -w`) whose stdout lines
    /// can be awaited one by one.
    pub fn kubectl_stream(&self, args: &[&str]) -> KubectlStream {
        let mut child =
            self.kubectl_command(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn kubectl");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        KubectlStream { child, lines, seen: Vec::new(), stderr: Some(stderr), args: args.join(" ") }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- hawser server log tail ({}) ---\n{}\n--- end of log ---", self.log_path().display(), self.log_tail(60));
        }
        self.kill9();
        // `dir` (a TempDir) removes itself when the struct's fields drop.
    }
}

/// A running kubectl whose output is read line by line; killed on drop.
pub struct KubectlStream {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<thread::JoinHandle<String>>,
    args: String,
}

impl KubectlStream {
    /// Waits for a stdout line matching `pred`; panics after `timeout`
    /// naming `what` and showing every line seen so far.
    pub fn expect_line(&mut self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => {
                    let ended = matches!(e, mpsc::RecvTimeoutError::Disconnected);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
                    panic!(
                        "kubectl {}: {} waiting for {what}\nlines so far:\n{}\nstderr:\n{stderr}",
                        self.args,
                        if ended { "output ended (the server closed the watch?)" } else { "timed out" },
                        self.seen.join("\n")
                    );
                }
            }
        }
    }
}

impl Drop for KubectlStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_keeps_multi_word_headers_together() {
        let line = "NAME   READY   STATUS    RESTARTS   AGE   IP       NODE     NOMINATED NODE   READINESS GATES";
        assert_eq!(table_cells(line), ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]);
    }

    #[test]
    fn kubeconfig_credentials_are_read_and_ca_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig.yaml");
        let ca = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
        fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: hawser\n  cluster:\n    server: https://127.0.0.1:1234\n    certificate-authority-data: {b64}\nusers:\n- name: admin\n  user:\n    token: secret\ncontexts: []\n"
            ),
        )
        .unwrap();
        let creds = read_kubeconfig(&path).unwrap();
        assert_eq!(creds.server, "https://127.0.0.1:1234");
        assert_eq!(creds.ca_pem, ca);
        assert_eq!(creds.token, "secret");
    }

    #[test]
    fn kubeconfig_without_token_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig.yaml");
        fs::write(&path, "clusters:\n- cluster:\n    server: https://x\n    certificate-authority-data: QQ==\nusers:\n- user: {}\n")
            .unwrap();
        let err = read_kubeconfig(&path).unwrap_err();
        assert!(err.contains("token"), "{err}");
    }

    #[test]
    fn run_bounded_captures_output_and_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let out = run_bounded(cmd, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    #[should_panic(expected = "did not finish")]
    fn run_bounded_kills_a_hung_command() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        run_bounded(cmd, Duration::from_millis(200));
    }
}

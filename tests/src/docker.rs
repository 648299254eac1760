//! Docker for the tests: a dockerd of a test's own, and the static binaries
//! that go into `FROM scratch` images. Shared by the docker runtime's own
//! tests (`tests/tests/docker_runtime.rs`) and the end-to-end pod tests run
//! against `hawser agent --runtime docker` ([`crate::nodes`]).
//!
//! Needs root and Debian's `docker.io` (`cargo xtask deps` installs it). A
//! test that cannot start its dockerd fails, saying why: skipping would
//! hide that the runtime went untested. Each [`Dockerd`] has its own data
//! root, exec root, pid file and socket under a directory of its own in
//! `/tmp`, no bridge and no iptables rules (the runtime never uses
//! Docker's networking), overlay2 or, where that does not work, vfs; it
//! runs in the machine's own network namespace, and agents in namespace
//! hosts reach it over its unix socket. Dropping it stops it, kills
//! whatever it left running, unmounts what it left mounted and removes the
//! directory, also when the test fails.
//!
//! The images are built here from binaries compiled by `rustc` straight
//! from one std-only source file and statically linked, once per test
//! process (and again only when the source changed):
//! `hawser-test-server` ([`static_test_server`], the pods' image) and
//! `hawser-pause` ([`static_pause`], the sandboxes' image, which agents
//! build themselves from `--pause-binary`).

use crate::netns;
use hawser_agent::runtime::docker::{DockerRuntime, ensure_image_from_binary};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The test server's image: `FROM scratch`, the static binary at
/// [`TEST_SERVER_PATH`] as its entrypoint.
pub const TEST_SERVER_IMAGE: &str = "hawser-test-server:test";
/// Where the test server is in [`TEST_SERVER_IMAGE`].
pub const TEST_SERVER_PATH: &str = "/hawser-test-server";
/// The pause image the tests' runtimes and agents use.
pub const PAUSE_IMAGE: &str = "hawser-pause:test";
/// How long a dockerd may take to answer after its start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `hawser-test-server`, statically linked.
pub fn static_test_server() -> PathBuf {
    static_binary("hawser-test-server", "test-server/src/main.rs")
}

/// `hawser-pause`, statically linked.
pub fn static_pause() -> PathBuf {
    static_binary("hawser-pause", "pause/src/main.rs")
}

/// Compiles the one-file, std-only crate at `source` (relative to the
/// workspace root) into `<target>/debug/static/<name>`, statically linked,
/// unless a binary newer than the source is there. Panics saying why it
/// could not.
fn static_binary(name: &'static str, source: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<&'static str, Result<PathBuf, String>>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built
        .get_or_insert_with(HashMap::new)
        .entry(name)
        .or_insert_with(|| compile_static(name, &Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(source)))
        .clone()
        .unwrap_or_else(|e| panic!("building the static {name}: {e}"))
}

fn compile_static(name: &str, source: &Path) -> Result<PathBuf, String> {
    // `<target>/debug/deps/<test binary>` → `<target>/debug/static`.
    let exe = std::env::current_exe().map_err(|e| format!("locating the test binary: {e}"))?;
    let dir = exe.ancestors().nth(2).ok_or("the test binary is not inside a target dir")?.join("static");
    let binary = dir.join(name);
    let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    if modified(&binary).is_some() && modified(&binary) >= modified(source) {
        return Ok(binary);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // Another test process may build the same binary: each writes its own
    // file and renames it into place.
    let partial = dir.join(format!("{name}.{}", std::process::id()));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--edition", "2024", "--crate-type", "bin", "--crate-name", &name.replace('-', "_")])
        .args(["-C", "opt-level=2", "-C", "target-feature=+crt-static", "-C", "strip=symbols", "-o"])
        .arg(&partial)
        .arg(source)
        .output()
        .map_err(|e| format!("running {rustc:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("compiling {} statically: {}", source.display(), String::from_utf8_lossy(&out.stderr)));
    }
    fs::rename(&partial, &binary).map_err(|e| format!("renaming {}: {e}", partial.display()))?;
    Ok(binary)
}

fn dockerd_binary() -> PathBuf {
    let found = ["/usr/sbin/dockerd", "/usr/bin/dockerd"].into_iter().map(PathBuf::from).find(|p| p.exists());
    found.unwrap_or_else(|| panic!("no dockerd in /usr/sbin or /usr/bin: install Debian's docker.io (`cargo xtask deps`, as root)"))
}

/// A dockerd of one test's (or one test cluster's) own.
pub struct Dockerd {
    child: Child,
    socket: PathBuf,
    dir: TempDir,
}

impl Dockerd {
    /// Starts a dockerd and waits until it answers; panics (naming `test`
    /// and showing the end of its log) if it cannot.
    pub fn start(test: &str) -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        assert!(unsafe { libc::geteuid() } == 0, "{test}: the docker tests need root (they start a dockerd); run them as root");
        let dockerd = dockerd_binary();
        let dir = tempfile::Builder::new()
            .prefix(&format!("hawser-dockerd-{}-", netns::run_id()))
            .tempdir_in("/tmp")
            .expect("creating a dockerd directory");
        let mut failures = Vec::new();
        for driver in ["overlay2", "vfs"] {
            let root = dir.path().join(driver);
            fs::create_dir_all(&root).unwrap();
            // Not the host's /etc/docker/daemon.json: nothing of the host's setup.
            fs::write(root.join("daemon.json"), "{}").unwrap();
            let socket = root.join("docker.sock");
            let log_path = root.join("dockerd.log");
            let log = fs::File::create(&log_path).unwrap();
            let mut child = Command::new(&dockerd)
                .arg("--config-file")
                .arg(root.join("daemon.json"))
                .arg("--data-root")
                .arg(root.join("data"))
                .arg("--exec-root")
                .arg(root.join("exec"))
                .arg("--pidfile")
                .arg(root.join("docker.pid"))
                .arg("-H")
                .arg(format!("unix://{}", socket.display()))
                .args(["--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--userland-proxy=false"])
                .args(["--storage-driver", driver, "--shutdown-timeout", "2"])
                .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{test}: starting {}: {e}", dockerd.display()));
            match wait_ready(&mut child, &socket) {
                Ok(()) => return Dockerd { child, socket, dir },
                Err(why) => {
                    stop(&mut child, dir.path());
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                    failures.push(format!("with --storage-driver {driver}: {why}; its log ends:\n{tail}"));
                }
            }
        }
        panic!("{test}: dockerd ({}) could not start:\n{}", dockerd.display(), failures.join("\n\n"));
    }

    /// The engine's unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A docker runtime over this engine keeping its files in `state`,
    /// with [`PAUSE_IMAGE`] for sandboxes; a second one over the same
    /// `state` is a restarted agent.
    pub async fn runtime(&self, state: &Path) -> DockerRuntime {
        DockerRuntime::connect(&self.socket, PAUSE_IMAGE.into(), state.to_path_buf()).await.expect("connecting the docker runtime")
    }

    /// Builds image `tag` `FROM scratch` around `binary` (its entrypoint)
    /// unless the engine has it.
    pub async fn build_image(&self, tag: &str, binary: &Path) {
        let runtime = self.runtime(&self.dir.path().join("images")).await;
        ensure_image_from_binary(runtime.docker(), tag, binary, &[]).await.unwrap_or_else(|e| panic!("building image {tag}: {e}"));
    }

    /// `hawser agent` flags that run pods on this engine, the agent
    /// building [`PAUSE_IMAGE`] from the static pause binary.
    pub fn agent_args(&self) -> Vec<String> {
        let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
        [
            "--runtime",
            "docker",
            "--docker-socket",
            &path(&self.socket),
            "--pause-image",
            PAUSE_IMAGE,
            "--pause-binary",
            &path(&static_pause()),
        ]
        .map(String::from)
        .to_vec()
    }

    /// `GET path` of the Engine API: the JSON answer; panics on an error
    /// status.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = request(&self.socket, "GET", path).unwrap_or_else(|e| panic!("GET {path} from dockerd: {e}"));
        assert!((200..300).contains(&status), "GET {path} from dockerd: {status} {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} from dockerd: {e}: {body}"))
    }

    /// The containers (running or not) labelled `key=value`, as the
    /// Engine API lists them.
    pub fn containers_labelled(&self, key: &str, value: &str) -> Vec<serde_json::Value> {
        let filters = serde_json::json!({ "label": [format!("{key}={value}")] }).to_string();
        match self.get_json(&format!(
            "/containers/json?all=1&filters={}",
            form_urlencoded::byte_serialize(filters.as_bytes()).collect::<String>()
        )) {
            serde_json::Value::Array(containers) => containers,
            other => panic!("listing containers: not a list: {other}"),
        }
    }

    /// Force-removes every container (SIGKILL to those running), giving up
    /// at the first failure: stopping dockerd ends whatever is left.
    fn remove_all_containers(&self) {
        let Ok((200, body)) = request(&self.socket, "GET", "/containers/json?all=1") else { return };
        let containers: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
        for id in containers.iter().filter_map(|c| c["Id"].as_str()) {
            if !request(&self.socket, "DELETE", &format!("/containers/{id}?force=1&v=1"))
                .is_ok_and(|(status, _)| status < 300 || status == 404)
            {
                return;
            }
        }
    }

    /// The containers of pod `uid` (the runtime labels every one).
    pub fn pod_containers(&self, uid: &str) -> Vec<serde_json::Value> {
        self.containers_labelled("io.hawser.pod-uid", uid)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // A stopping dockerd gives each running container its own stop
        // timeout (10 s unless set) after SIGTERM, which the test server,
        // PID 1 of its container, ignores: removing them first is faster.
        if self.child.try_wait().ok().flatten().is_none() {
            self.remove_all_containers();
        }
        stop(&mut self.child, self.dir.path());
        if let Err(e) = fs::remove_dir_all(self.dir.path()) {
            eprintln!("removing {}: {e}", self.dir.path().display());
        }
    }
}

/// One bodiless HTTP/1.0 request over the engine's socket: (status, body).
fn request(socket: &Path, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no header end in the answer")?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status in the answer")?;
    Ok((status, body.to_string()))
}

fn wait_ready(child: &mut Child, socket: &Path) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status})"));
        }
        if socket.exists() && request(socket, "GET", "/_ping").is_ok_and(|(status, _)| status == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("it did not answer on {} within {START_TIMEOUT:?}", socket.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops a dockerd (which stops its containers and its containerd), then
/// kills whatever still names its directory on its command line
/// (containerd and shims of a dockerd that died) and unmounts what is
/// mounted below that directory.
fn stop(child: &mut Child, dir: &Path) {
    if child.try_wait().ok().flatten().is_none() {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if child.try_wait().ok().flatten().is_none() {
            eprintln!("dockerd {} ignored SIGTERM for 30s; killing it", child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    let needle = dir.as_os_str().as_encoded_bytes();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_naming(needle);
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in left {
            // SAFETY: kill(2) with a pid read from /proc.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for mount in mounts_below(dir) {
        let Ok(path) = CString::new(mount.as_os_str().as_encoded_bytes()) else { continue };
        // SAFETY: umount2(2) with a NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!("unmounting {}: {}", mount.display(), std::io::Error::last_os_error());
        }
    }
}

/// Pids of the processes whose command line contains `needle`.
fn processes_naming(needle: &[u8]) -> Vec<i32> {
    let own = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    mounts.dedup();
    mounts
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        match rest.get(at + 1..at + 4).and_then(|o| u8::from_str_radix(o, 8).ok()) {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b\134c"), r"/tmp/a b\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}

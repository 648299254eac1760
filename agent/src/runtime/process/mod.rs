//! The embedded process runtime: pods as Linux namespaces, containers as
//! processes from the host filesystem, nothing to install.
//!
//! A sandbox is a per-pod *supervisor* process ([`supervisor`]) holding the
//! pod's network, UTS, IPC and mount namespaces (its mount namespace shows
//! the pod's own `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`); it
//! runs in a session of its own, outside the agent's process group and
//! cgroup, so killing or restarting the agent neither kills nor loses a pod.
//! Every container run is a child of it, in a cgroup of its own below the
//! pod's ([`cgroup`]: `cpu.max` and `memory.max` from the limits; on hybrid
//! v1/v2 hosts the v1 equivalents), its stdout and stderr in CRI-format log
//! files with rotation ([`logs`]).
//!
//! Images: a container's `image` is recorded (it is in the state file and
//! reported back), never pulled or unpacked. `argv[0]` is looked up on the
//! host along the container's `PATH` (or the usual default), so
//! `image: busybox, command: [sh, -c, ...]` runs the host's `sh`. Volume
//! mounts are bind mounts in a mount namespace of the container's own; a
//! mount point that does not exist on the host is created there.
//!
//! The agent ([`ProcessRuntime`]) keeps no state in memory: everything is in
//! the state directory, so a new `ProcessRuntime` over the same directory
//! (an agent restart) sees the same sandboxes and containers:
//!
//! ```text
//! <state>/pods/<uid>/
//!     sandbox.json            what the supervisor sets up (the agent writes it)
//!     supervisor.pid          the supervisor's pid, once it serves
//!     supervisor.log          its stdout and stderr
//!     control.sock            its requests (protocol.rs)
//!     etc/{resolv.conf,hosts,hostname}
//!     containers/<name>.json  the latest run of each container, written by the supervisor
//!     logs/<name>/<attempt>.log[.1]
//! ```
//!
//! Callers run the methods of one pod one at a time (the pod worker does):
//! two concurrent `run_sandbox` calls for one pod would race.
//!
//! # Layout
//! - this file: [`ProcessRuntime`], the agent's side.
//! - [`supervisor`]: the supervisor process.
//! - [`protocol`]: what they say to each other and the files they share.
//! - [`cgroup`]: pod and container cgroups.
//! - [`logs`]: container log files.
//! - `exec`: commands run inside a running container (`kubectl exec`).

pub mod cgroup;
mod exec;
pub mod logs;
pub mod protocol;
pub mod supervisor;

pub use cgroup::{Cgroup, Placement};
pub use supervisor::{SupervisorArgs, run_supervisor};

use super::{ContainerSpec, ContainerState, ExecSession, Runtime, RuntimeError, Sandbox, SandboxSpec, create_or_clean_up};
use cgroup::Role;
use protocol::{ContainerRecord, Request, Response, SandboxConfig, StartRequest};
use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const SOCKET: &str = "control.sock";
const PID_FILE: &str = "supervisor.pid";
const SANDBOX_FILE: &str = "sandbox.json";
const SUPERVISOR_LOG: &str = "supervisor.log";
const CONTAINERS_DIR: &str = "containers";
const ETC_DIR: &str = "etc";
const LOGS_DIR: &str = "logs";
/// The supervisor's leaf in the pod cgroup; container names cannot start
/// with `_`, so it never collides with one.
const SUPERVISOR_CGROUP: &str = "_supervisor";
/// `sockaddr_un.sun_path` is 108 bytes, NUL included.
const MAX_SOCKET_PATH: usize = 107;

/// How long a new supervisor may take to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests that do not wait for a process to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Beyond the grace period, what a stop may take (SIGKILL and the drain).
const STOP_MARGIN: Duration = Duration::from_secs(30);
/// Grace of the SIGTERM `remove_sandbox` sends before SIGKILL.
const REMOVE_GRACE: Duration = Duration::from_secs(2);
/// How long a SIGKILLed pod cgroup may take to empty.
const KILL_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// The process runtime, as the agent uses it.
#[derive(Clone, Debug)]
pub struct ProcessRuntime {
    state_dir: PathBuf,
    cgroup: Cgroup,
    supervisor_exe: PathBuf,
}

impl ProcessRuntime {
    /// A runtime keeping its state under `state_dir`, its cgroups under
    /// `cgroup` (e.g. `Cgroup::detect("hawser", Placement::Top)`), and
    /// running `supervisor_exe pod-supervisor --dir <pod dir>` as the
    /// supervisor of each pod (the `hawser` binary itself, usually).
    pub fn new(state_dir: PathBuf, cgroup: Cgroup, supervisor_exe: PathBuf) -> Self {
        // The supervisor runs in `/` and is recognised by its `--dir`.
        let state_dir = std::path::absolute(&state_dir).unwrap_or(state_dir);
        Self { state_dir, cgroup, supervisor_exe }
    }

    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.state_dir.join("pods").join(pod_uid)
    }

    pub fn pod_cgroup(&self, pod_uid: &str) -> Cgroup {
        self.cgroup.child(&format!("pod{pod_uid}"))
    }

    pub fn container_cgroup(&self, pod_uid: &str, name: &str) -> Cgroup {
        self.pod_cgroup(pod_uid).child(name)
    }

    /// The pid of the pod's supervisor if it is alive: the pid in
    /// `supervisor.pid` names a process whose command line has `--dir <the
    /// pod dir>` (so neither a reused pid nor a zombie counts).
    pub fn supervisor_pid(&self, pod_uid: &str) -> Option<u32> {
        let dir = self.pod_dir(pod_uid);
        let pid: u32 = fs::read_to_string(dir.join(PID_FILE)).ok()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        args.windows(2).any(|pair| pair[0] == b"--dir" && pair[1] == dir.as_os_str().as_bytes()).then_some(pid)
    }

    fn sandbox(&self, pod_uid: &str, pid: u32) -> Sandbox {
        Sandbox { pod_uid: pod_uid.to_string(), netns: PathBuf::from(format!("/proc/{pid}/ns/net")) }
    }

    /// One request to the pod's supervisor. A supervisor that is not there
    /// (no socket, nobody listening) is [`RuntimeError::NoSandbox`].
    async fn request(&self, pod_uid: &str, request: &Request, timeout: Duration) -> Result<Response, RuntimeError> {
        let socket = self.pod_dir(pod_uid).join(SOCKET);
        let exchange = async {
            let mut stream = UnixStream::connect(&socket).await?;
            let mut line = serde_json::to_vec(request)?;
            line.push(b'\n');
            stream.write_all(&line).await?;
            let mut answer = String::new();
            BufReader::new(stream.take(protocol::MAX_LINE)).read_line(&mut answer).await?;
            if answer.is_empty() {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "the supervisor closed the connection without answering"));
            }
            serde_json::from_str::<Response>(&answer)
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("bad answer {answer:?}: {e}")))
        };
        let what = || format!("asking the supervisor of pod {pod_uid} ({}) for {request:?}", socket.display());
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(RuntimeError::Other(format!("{}: no answer within {timeout:?}", what()))),
            Ok(Err(e)) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                Err(RuntimeError::NoSandbox { pod_uid: pod_uid.to_string() })
            }
            Ok(Err(source)) => Err(RuntimeError::Io { what: what(), source }),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// A request whose only good answer is [`Response::Ok`].
    async fn expect_ok(&self, pod_uid: &str, request: &Request, timeout: Duration, what: impl Fn() -> String) -> Result<(), RuntimeError> {
        match self.request(pod_uid, request, timeout).await? {
            Response::Ok => Ok(()),
            Response::Error { message } => Err(RuntimeError::Other(format!("{}: {message}", what()))),
            other => Err(RuntimeError::Other(format!("{}: unexpected answer {other:?}", what()))),
        }
    }

    async fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        let uid = &spec.pod_uid;
        let dir = self.pod_dir(uid);
        let socket = dir.join(SOCKET);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(RuntimeError::Other(format!("pod {uid}: socket path {} is too long for a unix socket", socket.display())));
        }
        let config = SandboxConfig {
            pod_uid: uid.clone(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            hostname: spec.hostname.clone(),
            cgroup: self.pod_cgroup(uid),
        };
        let (root, limits) = (self.cgroup.clone(), spec.limits);
        let (resolv_conf, hosts) = (spec.resolv_conf.clone(), spec.hosts.clone());
        let prepared = dir.clone();
        blocking(move || -> Result<(), RuntimeError> {
            let dir = &prepared;
            let uid = &config.pod_uid;
            for sub in [ETC_DIR, CONTAINERS_DIR, LOGS_DIR] {
                fs::create_dir_all(dir.join(sub)).map_err(io_error(|| format!("creating {} for pod {uid}", dir.join(sub).display())))?;
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_error(|| format!("restricting {}", dir.display())))?;
            let etc = dir.join(ETC_DIR);
            for (file, content) in [("resolv.conf", resolv_conf), ("hosts", hosts), ("hostname", format!("{}\n", config.hostname))] {
                let path = etc.join(file);
                fs::write(&path, content).map_err(io_error(|| format!("writing {} for pod {uid}", path.display())))?;
            }
            let file = dir.join(SANDBOX_FILE);
            protocol::write_json_atomic(&file, &config).map_err(io_error(|| format!("writing {}", file.display())))?;
            let what = || format!("creating the cgroups of pod {uid}");
            root.create_root().map_err(io_error(what))?;
            config.cgroup.create(&limits, Role::Pod).map_err(io_error(what))?;
            config.cgroup.child(SUPERVISOR_CGROUP).create(&Default::default(), Role::Supervisor).map_err(io_error(what))
        })
        .await?;

        let log_path = dir.join(SUPERVISOR_LOG);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error(|| format!("opening {}", log_path.display())))?;
        let stdout = log.try_clone().map_err(io_error(|| format!("duplicating {}", log_path.display())))?;
        let mut command = tokio::process::Command::new(&self.supervisor_exe);
        command
            .args(SupervisorArgs { dir: dir.clone() }.command_line())
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log);
        // SAFETY: runs in the forked child before exec; setsid is a single
        // async-signal-safe syscall. A session of its own keeps the
        // supervisor out of the agent's process group and terminal (no
        // Ctrl-C, no SIGHUP), so it outlives the agent.
        unsafe {
            command.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
        }
        // Not awaited: tokio reaps it if it ends while the agent runs, init
        // adopts it when the agent ends first.
        let mut child =
            command.spawn().map_err(io_error(|| format!("starting the supervisor {} for pod {uid}", self.supervisor_exe.display())))?;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(RuntimeError::Other(format!(
                    "the supervisor of pod {uid} exited ({status}) before serving: {}",
                    log_tail(&log_path)
                )));
            }
            match self.request(uid, &Request::Status, READY_TIMEOUT).await {
                Ok(Response::Status { pid }) => return Ok(self.sandbox(uid, pid)),
                Ok(other) => {
                    return Err(RuntimeError::Other(format!("the supervisor of pod {uid} answered {other:?} to a status request")));
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(RuntimeError::Other(format!(
                        "the supervisor of pod {uid} did not serve within {READY_TIMEOUT:?} ({e}): {}",
                        log_tail(&log_path)
                    )));
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Ends every process of the pod (SIGKILL to its cgroup, and to a
    /// supervisor that is somehow outside it), removes its cgroups and its
    /// directory. Idempotent.
    async fn destroy(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        let cgroup = self.pod_cgroup(pod_uid);
        let what = || format!("ending the processes of pod {pod_uid}");
        cgroup.kill().map_err(io_error(what))?;
        let deadline = Instant::now() + KILL_WAIT;
        while cgroup.populated().map_err(io_error(what))? {
            if Instant::now() > deadline {
                return Err(RuntimeError::Other(format!("{}: processes survived SIGKILL for {KILL_WAIT:?}", what())));
            }
            tokio::time::sleep(POLL).await;
        }
        if let Some(pid) = self.supervisor_pid(pod_uid).and_then(|pid| rustix::process::Pid::from_raw(pid as i32)) {
            tracing::warn!(pod_uid, pid = pid.as_raw_nonzero().get(), "the supervisor is outside the pod cgroup; killing it");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            while self.supervisor_pid(pod_uid).is_some() && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
        }
        let dir = self.pod_dir(pod_uid);
        let uid = pod_uid.to_string();
        blocking(move || {
            cgroup.remove().map_err(io_error(|| format!("removing the cgroups of pod {uid}")))?;
            match fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    Err(RuntimeError::Io { what: format!("removing {}", dir.display()), source: e })
                }
                _ => Ok(()),
            }
        })
        .await
    }
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn version(&self) -> String {
        format!("process://{}", env!("CARGO_PKG_VERSION"))
    }

    async fn run_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        let uid = &spec.pod_uid;
        check_name("pod UID", uid)?;
        if spec.hostname.is_empty() || spec.hostname.len() > 64 || spec.hostname.contains('\0') {
            return Err(RuntimeError::Other(format!("pod {uid}: {:?} is not a valid hostname", spec.hostname)));
        }
        if let Some(pid) = self.supervisor_pid(uid) {
            return match self.request(uid, &Request::Status, REQUEST_TIMEOUT).await? {
                Response::Status { pid: answered } if answered == pid => Ok(self.sandbox(uid, pid)),
                other => {
                    Err(RuntimeError::Other(format!("the supervisor of pod {uid} (pid {pid}) answered {other:?} to a status request")))
                }
            };
        }
        if self.pod_dir(uid).exists() || self.pod_cgroup(uid).exists() {
            tracing::info!(pod_uid = %uid, "removing the remains of a sandbox whose supervisor is gone");
            self.destroy(uid).await?;
        }
        create_or_clean_up(uid, self.create_sandbox(spec), async || self.destroy(uid).await).await
    }

    async fn start_container(&self, pod_uid: &str, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        check_name("pod UID", pod_uid)?;
        check_name("container name", &spec.name)?;
        let request = Request::Start(StartRequest { spec: spec.clone(), log_path: self.log_path(pod_uid, &spec.name, spec.attempt) });
        // The supervisor's message names the pod, container and attempt.
        self.expect_ok(pod_uid, &request, REQUEST_TIMEOUT, || "starting a container".to_string()).await
    }

    async fn container_state(&self, pod_uid: &str, name: &str) -> Result<(u32, ContainerState), RuntimeError> {
        check_name("pod UID", pod_uid)?;
        check_name("container name", name)?;
        let dir = self.pod_dir(pod_uid);
        let file = dir.join(CONTAINERS_DIR).join(format!("{name}.json"));
        let record: ContainerRecord = match protocol::read_json(&file) {
            Ok(record) => record,
            Err(e) if e.kind() == ErrorKind::NotFound && self.supervisor_pid(pod_uid).is_some() => {
                return Err(RuntimeError::NoContainer { pod_uid: pod_uid.to_string(), container: name.to_string() });
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(RuntimeError::NoSandbox { pod_uid: pod_uid.to_string() }),
            Err(source) => return Err(RuntimeError::Io { what: format!("reading {}", file.display()), source }),
        };
        let state = record.state().map_err(|e| RuntimeError::Other(format!("{}: {e}", file.display())))?;
        // A run nobody watches any more will never be seen to end.
        if record.is_running() && self.supervisor_pid(pod_uid).is_none() {
            return Err(RuntimeError::NoSandbox { pod_uid: pod_uid.to_string() });
        }
        Ok((record.attempt, state))
    }

    async fn stop_container(&self, pod_uid: &str, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        check_name("pod UID", pod_uid)?;
        check_name("container name", name)?;
        if !self.pod_dir(pod_uid).exists() {
            return Ok(()); // No sandbox, nothing runs.
        }
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        let request = Request::Stop { name: name.to_string(), grace_ms };
        self.expect_ok(pod_uid, &request, grace.saturating_add(STOP_MARGIN), || format!("stopping container {name} of pod {pod_uid}")).await
    }

    async fn remove_sandbox(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        check_name("pod UID", pod_uid)?;
        if let Some(pid) = self.supervisor_pid(pod_uid) {
            // Containers get a short SIGTERM grace; the supervisor then exits.
            let request = Request::Shutdown { grace_ms: REMOVE_GRACE.as_millis() as u64 };
            let timeout = REMOVE_GRACE + STOP_MARGIN;
            if let Err(e) = self.expect_ok(pod_uid, &request, timeout, || format!("shutting down pod {pod_uid}")).await {
                tracing::warn!(pod_uid, pid, error = %e, "the supervisor did not shut down cleanly; killing the pod");
            }
            let deadline = Instant::now() + REMOVE_GRACE;
            while self.supervisor_pid(pod_uid).is_some() && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
        }
        self.destroy(pod_uid).await
    }

    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, RuntimeError> {
        let pods = self.state_dir.join("pods");
        let entries = match fs::read_dir(&pods) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(RuntimeError::Io { what: format!("listing {}", pods.display()), source }),
        };
        let mut sandboxes = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(|| format!("listing {}", pods.display())))?;
            let Some(uid) = entry.file_name().to_str().map(str::to_string) else { continue };
            if let Some(pid) = self.supervisor_pid(&uid) {
                sandboxes.push(self.sandbox(&uid, pid));
            }
        }
        sandboxes.sort_by(|a, b| a.pod_uid.cmp(&b.pod_uid));
        Ok(sandboxes)
    }

    fn log_path(&self, pod_uid: &str, name: &str, attempt: u32) -> PathBuf {
        self.pod_dir(pod_uid).join(LOGS_DIR).join(name).join(format!("{attempt}.log"))
    }

    async fn exec(&self, pod_uid: &str, name: &str, argv: &[String], stdin: bool) -> Result<ExecSession, RuntimeError> {
        exec::exec(self, pod_uid, name, argv, stdin).await
    }
}

/// Pod UIDs and container names become path components and cgroup names:
/// letters, digits, `-`, `.` and `_`, not starting with `.` or `_`.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), RuntimeError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['.', '_'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if valid { Ok(()) } else { Err(RuntimeError::Other(format!("{kind} {name:?} is not a valid name"))) }
}

fn io_error(what: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> RuntimeError {
    move |source| RuntimeError::Io { what: what(), source }
}

/// Runs file and cgroup work off the async threads; its panics stay panics.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static) -> Result<T, RuntimeError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(RuntimeError::Other(format!("a blocking task was cancelled: {e}"))),
    }
}

/// The end of a supervisor's log, for errors about it.
fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
            if tail.is_empty() { format!("{} is empty", path.display()) } else { format!("{}: {tail}", path.display()) }
        }
        Err(e) => format!("{}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_safe_path_components() {
        for good in ["web", "0f6e4b1c-9a7e-4d55-8a47-6c2f0b0e2a11", "a.b_c-d"] {
            assert!(check_name("x", good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "_supervisor", "a/b", "a b", "é"] {
            assert!(check_name("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layout_of_a_pod() {
        let rt = ProcessRuntime::new("/state".into(), Cgroup { unified: "/cg/hawser".into(), v1: None }, "/bin/hawser".into());
        assert_eq!(rt.log_path("u1", "app", 2), PathBuf::from("/state/pods/u1/logs/app/2.log"));
        assert_eq!(rt.container_cgroup("u1", "app").unified, PathBuf::from("/cg/hawser/podu1/app"));
        assert!(rt.version().starts_with("process://"));
    }
}

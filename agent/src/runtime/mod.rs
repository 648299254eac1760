//! Container runtimes: what the pod workers ask of whatever runs processes.
//!
//! The contract is CRI's, cut to what the pod workers need: a *sandbox*
//! holds a pod's namespaces (its network namespace is wired by the agent,
//! never by the runtime), containers run inside it, and every state the
//! workers read can be read again after an agent restart, because the
//! runtime keeps it outside the agent process.
//!
//! # Layout
//! - this file: the [`Runtime`] trait and the types it speaks.
//! - [`process`]: the embedded runtime: Linux namespaces, processes from
//!   the host filesystem, a per-pod supervisor, cgroup v2 limits.
//! - [`docker`]: Docker through bollard: a pause container holding the
//!   namespaces, containers joining it, images from the local engine.

pub mod docker;
pub mod process;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// What a pod's sandbox is made from.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxSpec {
    pub pod_uid: String,
    pub namespace: String,
    pub name: String,
    /// The pod's hostname (its name, or `spec.hostname`).
    pub hostname: String,
    /// Contents of the pod's `/etc/resolv.conf` and `/etc/hosts`.
    pub resolv_conf: String,
    pub hosts: String,
    /// Pod-level limits (the sum of its containers'), for the pod cgroup.
    pub limits: Limits,
}

/// A running sandbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Sandbox {
    pub pod_uid: String,
    /// A path the agent can open to enter the pod's network namespace.
    pub netns: PathBuf,
}

/// cgroup v2 limits; None means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `cpu.max` quota in millicores.
    pub cpu_millis: Option<u64>,
    /// `memory.max` in bytes.
    pub memory_bytes: Option<u64>,
}

/// One run of one container (also what the process runtime's supervisor is
/// sent, so it is serializable).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    /// Which run this is (0 first, +1 per restart), so logs of the previous
    /// run stay readable (`kubectl logs --previous`).
    pub attempt: u32,
    /// `command` + `args`, resolved as Kubernetes does (`$(VAR)` expanded).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    /// Recorded as given; the process runtime runs from the host filesystem.
    pub image: String,
    pub limits: Limits,
    /// Host paths mounted into the container's view (volumes).
    pub mounts: Vec<Mount>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub read_only: bool,
}

/// A container run as the runtime last saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerState {
    Running { pid: u32, started_at: SystemTime },
    Exited { exit_code: i32, signal: Option<i32>, reason: ExitReason, started_at: SystemTime, finished_at: SystemTime },
}

/// Why a container ended, in the words `containerStatuses` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    Completed,
    Error,
    OOMKilled,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::OOMKilled => "OOMKilled",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("pod {pod_uid} has no sandbox")]
    NoSandbox { pod_uid: String },
    #[error("container {container} of pod {pod_uid} has never run")]
    NoContainer { pod_uid: String, container: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

/// What the pod workers need from a container runtime. Every method is
/// idempotent where retrying is natural: running an existing sandbox returns
/// it, stopping a stopped container succeeds, removing a missing sandbox
/// succeeds.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// A name and version for `nodeInfo.containerRuntimeVersion`.
    fn version(&self) -> String;
    async fn run_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError>;
    /// Starts run `spec.attempt` of a container in the sandbox.
    async fn start_container(&self, pod_uid: &str, spec: &ContainerSpec) -> Result<(), RuntimeError>;
    /// The latest run of container `name`, with its attempt number.
    async fn container_state(&self, pod_uid: &str, name: &str) -> Result<(u32, ContainerState), RuntimeError>;
    /// SIGTERM, then SIGKILL after `grace` if still running.
    async fn stop_container(&self, pod_uid: &str, name: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Ends every process of the pod and removes its sandbox, cgroups and state.
    async fn remove_sandbox(&self, pod_uid: &str) -> Result<(), RuntimeError>;
    /// Pods with a sandbox, e.g. after an agent restart.
    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, RuntimeError>;
    /// The log file of run `attempt` of a container.
    fn log_path(&self, pod_uid: &str, name: &str, attempt: u32) -> PathBuf;
    /// Runs `argv` inside running container `name` (its namespaces, cgroup,
    /// environment and working directory), as `kubectl exec` asks.
    async fn exec(&self, pod_uid: &str, name: &str, argv: &[String], stdin: bool) -> Result<ExecSession, RuntimeError>;
}

/// The sandbox `create` made, or `create`'s error once `destroy` has
/// removed what a failed start left half made (its own failure is only
/// logged: the start's error is the one that explains).
pub(crate) async fn create_or_clean_up(
    pod_uid: &str,
    create: impl Future<Output = Result<Sandbox, RuntimeError>>,
    destroy: impl AsyncFnOnce() -> Result<(), RuntimeError>,
) -> Result<Sandbox, RuntimeError> {
    let error = match create.await {
        Ok(sandbox) => return Ok(sandbox),
        Err(e) => e,
    };
    if let Err(cleanup) = destroy().await {
        tracing::warn!(pod_uid, error = %cleanup, "cleaning up after a failed sandbox start");
    }
    Err(error)
}

/// A command started by [`Runtime::exec`]: its standard streams and its end.
pub struct ExecSession {
    /// Present when stdin was asked for; dropping it closes the command's stdin.
    pub stdin: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
    pub stdout: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    pub stderr: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    /// Resolves to the exit code once the command has ended.
    pub exit: futures::future::BoxFuture<'static, Result<i32, RuntimeError>>,
}

//! The docker runtime: pods as a *pause* container holding the namespaces,
//! containers as Docker containers joining them, images from the local
//! Docker engine (Engine API over its unix socket, through bollard).
//!
//! A sandbox is a pause container created with `network_mode: none`: the
//! agent wires the pod network into its namespace (`/proc/<pid>/ns/net`)
//! itself, as for the process runtime, so Docker's networking (bridges,
//! iptables, its own resolv.conf and hosts) never competes with the agent's.
//! Its IPC namespace is `shareable` and its hostname the pod's. Every
//! container run joins its network and IPC namespaces
//! (`container:<pause id>`; Docker gives a container joining another's
//! network namespace that container's hostname), keeps a PID namespace of
//! its own, and gets the pod's `/etc/resolv.conf`, `/etc/hosts` and
//! `/etc/hostname` bind-mounted from the state directory, so every
//! container of a pod reads the same files the agent wrote. The pause
//! container is what a sandbox's liveness means: one that is not running is
//! a dead sandbox, removed with everything of its pod by the next
//! `run_sandbox`.
//!
//! Images are never pulled (these nodes may have no registry to pull from):
//! a container's image must be in the local engine, or its start fails
//! saying so. The pause image is whatever the agent names;
//! [`ensure_image_from_binary`] builds such images `FROM scratch` around one
//! static binary (the agent's pause binary, the tests' server).
//!
//! Docker is the state: every container carries labels naming its pod,
//! role, container name and attempt, and the runtime's state directory
//! (`io.hawser.state-dir`), so several agents sharing one engine (several
//! nodes on one machine, parallel tests) see only their own pods, and a new
//! [`DockerRuntime`] (an agent restart) sees everything the old one made.
//! The state directory holds only what is bind-mounted into containers and
//! the logs:
//!
//! ```text
//! <state>/pods/<uid>/
//!     etc/{resolv.conf,hosts,hostname}
//!     logs/<name>/<attempt>.log[.1]
//! ```
//!
//! Logs: the agent reads CRI-format files for every runtime, so while a run
//! lives a task of this runtime follows its Docker logs (json-file, capped
//! at 2 × 10 MiB per run) into the CRI file at [`Runtime::log_path`],
//! through the process runtime's writer (rotation included). Those tasks
//! die with the agent; the next agent resumes a run's file at its first
//! status read of that run, from the time of the file's last entry, so
//! lines from the very moment of the restart may be missing or doubled.
//! Once a run reads as exited its file is complete, unless following its
//! logs failed (reported as a warning).
//!
//! Limits are per container (`Memory` = `MemorySwap`, `NanoCpus`); the pod
//! has no cgroup of its own, so [`SandboxSpec::limits`] is not enforced
//! beyond the sum of its containers'.
//!
//! Callers run the methods of one pod one at a time (the pod worker does).

use super::process::check_name;
use super::process::logs::{self, LogFile, Stream};
use super::{ContainerSpec, ContainerState, ExecSession, ExitReason, Runtime, RuntimeError, Sandbox, SandboxSpec, create_or_clean_up};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    self, ContainerCreateBody, ContainerStateStatusEnum, ContainerSummary, ExecConfig, HostConfig, HostConfigLogConfig, MountType,
};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

const LABEL_OWNER: &str = "io.hawser.state-dir";
const LABEL_POD_UID: &str = "io.hawser.pod-uid";
const LABEL_POD_NAME: &str = "io.hawser.pod-name";
const LABEL_POD_NAMESPACE: &str = "io.hawser.pod-namespace";
const LABEL_ROLE: &str = "io.hawser.role";
const LABEL_CONTAINER: &str = "io.hawser.container-name";
const LABEL_ATTEMPT: &str = "io.hawser.attempt";
const ROLE_SANDBOX: &str = "sandbox";
const ROLE_CONTAINER: &str = "container";

const ETC_DIR: &str = "etc";
const LOGS_DIR: &str = "logs";
/// The pod files bind-mounted into every container, at `/etc/<name>`.
const ETC_FILES: [&str; 3] = ["resolv.conf", "hosts", "hostname"];

/// Beyond the grace period, what a stop may take (SIGKILL, the engine's
/// own bookkeeping).
const STOP_MARGIN: Duration = Duration::from_secs(30);
/// How long a status read of an exited run waits for its log file to be
/// complete.
const LOG_DRAIN: Duration = Duration::from_secs(2);
/// How long an exec's exit code may take to show after its output ended.
const EXEC_EXIT_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// Buffer of the pipes an exec's streams are read from.
const EXEC_PIPE: usize = 64 * 1024;
/// Docker refuses CPU limits below 0.01 CPU.
const MIN_CPU_MILLIS: u64 = 10;

/// The docker runtime, as the agent uses it.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
    pause_image: String,
    state_dir: PathBuf,
    engine_version: String,
    pumps: Arc<Pumps>,
}

impl DockerRuntime {
    /// A runtime using the engine at `socket` (e.g. `/var/run/docker.sock`),
    /// `pause_image` (already in that engine) for sandboxes, and keeping pod
    /// files under `state_dir`. Negotiates the API version down to the
    /// engine's, so any engine since API 1.41 (Docker 20.10) works.
    pub async fn connect(socket: &Path, pause_image: String, state_dir: PathBuf) -> Result<Self, RuntimeError> {
        let what = || format!("connecting to the Docker engine at {}", socket.display());
        let address = socket.to_str().ok_or_else(|| RuntimeError::Other(format!("{}: the path is not UTF-8", what())))?;
        let docker = Docker::connect_with_unix(address, 120, bollard::API_DEFAULT_VERSION)
            .map_err(docker_error(what))?
            .negotiate_version()
            .await
            .map_err(docker_error(what))?;
        let version = docker.version().await.map_err(docker_error(what))?;
        // The owner label must not depend on the directory the agent started in.
        let state_dir = std::path::absolute(&state_dir).unwrap_or(state_dir);
        Ok(Self {
            docker,
            pause_image,
            state_dir,
            engine_version: version.version.unwrap_or_else(|| "unknown".into()),
            pumps: Arc::default(),
        })
    }

    /// The engine client, for what the trait does not cover (building images).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.state_dir.join("pods").join(pod_uid)
    }

    fn owner(&self) -> String {
        self.state_dir.display().to_string()
    }

    /// This runtime's containers with all of `labels`, stopped ones too
    /// unless `running_only`.
    async fn list(&self, labels: &[(&str, &str)], running_only: bool) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut wanted = vec![format!("{LABEL_OWNER}={}", self.owner())];
        wanted.extend(labels.iter().map(|(key, value)| format!("{key}={value}")));
        let mut filters = HashMap::from([("label".to_string(), wanted)]);
        if running_only {
            filters.insert("status".into(), vec!["running".into()]);
        }
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        self.docker.list_containers(Some(options)).await.map_err(docker_error(|| format!("listing containers with labels {labels:?}")))
    }

    /// The pod's pause container, if it is running.
    async fn running_sandbox(&self, pod_uid: &str) -> Result<Option<ContainerSummary>, RuntimeError> {
        Ok(self.list(&[(LABEL_POD_UID, pod_uid), (LABEL_ROLE, ROLE_SANDBOX)], true).await?.into_iter().next())
    }

    /// Every run of container `name` of the pod, with its attempt, latest first.
    async fn runs(&self, pod_uid: &str, name: &str) -> Result<Vec<(u32, ContainerSummary)>, RuntimeError> {
        let containers = self.list(&[(LABEL_POD_UID, pod_uid), (LABEL_ROLE, ROLE_CONTAINER), (LABEL_CONTAINER, name)], false).await?;
        let mut runs: Vec<(u32, ContainerSummary)> =
            containers.into_iter().filter_map(|c| label(&c, LABEL_ATTEMPT).and_then(|a| a.parse().ok()).map(|a| (a, c))).collect();
        runs.sort_by_key(|(attempt, _)| std::cmp::Reverse(*attempt));
        Ok(runs)
    }

    /// Why container `name` cannot be found: its pod has no sandbox, or it
    /// has never run.
    async fn missing(&self, pod_uid: &str, name: &str) -> RuntimeError {
        match self.running_sandbox(pod_uid).await {
            Ok(Some(_)) => RuntimeError::NoContainer { pod_uid: pod_uid.to_string(), container: name.to_string() },
            Ok(None) => RuntimeError::NoSandbox { pod_uid: pod_uid.to_string() },
            Err(e) => e,
        }
    }

    async fn inspect(&self, id: &str) -> Result<models::ContainerInspectResponse, RuntimeError> {
        self.docker.inspect_container(id, None).await.map_err(docker_error(|| format!("inspecting container {id}")))
    }

    /// Fails clearly when `image` is not in the engine, which would
    /// otherwise try to pull it.
    async fn require_image(&self, image: &str, what: &str) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(RuntimeError::Other(format!(
                "{what} {image} is not in the local Docker engine (the docker runtime never pulls images)"
            ))),
            Err(e) => Err(RuntimeError::Other(format!("looking up {what} {image}: {e}"))),
        }
    }

    fn sandbox(pod_uid: &str, pid: u32) -> Sandbox {
        Sandbox { pod_uid: pod_uid.to_string(), netns: PathBuf::from(format!("/proc/{pid}/ns/net")) }
    }

    /// The pid of a running container (as the host sees it).
    async fn running_pid(&self, id: &str) -> Result<Option<u32>, RuntimeError> {
        let state = self.inspect(id).await?.state.unwrap_or_default();
        let running = matches!(state.status, Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED));
        Ok(state.pid.and_then(|pid| u32::try_from(pid).ok()).filter(|&pid| running && pid > 0))
    }

    async fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        let uid = &spec.pod_uid;
        let dir = self.pod_dir(uid);
        let etc = dir.join(ETC_DIR);
        tokio::fs::create_dir_all(&etc).await.map_err(io_error(|| format!("creating {} for pod {uid}", etc.display())))?;
        tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .await
            .map_err(io_error(|| format!("restricting {}", dir.display())))?;
        let hostname = format!("{}\n", spec.hostname);
        for (file, content) in ETC_FILES.iter().zip([&spec.resolv_conf, &spec.hosts, &hostname]) {
            let path = etc.join(file);
            tokio::fs::write(&path, content).await.map_err(io_error(|| format!("writing {} for pod {uid}", path.display())))?;
        }
        self.require_image(&self.pause_image, "the pause image").await?;

        let owner = self.owner();
        let labels = [
            (LABEL_OWNER, owner.as_str()),
            (LABEL_POD_UID, uid),
            (LABEL_POD_NAME, &spec.name),
            (LABEL_POD_NAMESPACE, &spec.namespace),
            (LABEL_ROLE, ROLE_SANDBOX),
        ];
        let body = ContainerCreateBody {
            image: Some(self.pause_image.clone()),
            hostname: Some(spec.hostname.clone()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ipc_mode: Some("shareable".into()),
                // What the pause binary prints is of no use to anyone.
                log_config: Some(HostConfigLogConfig { typ: Some("none".into()), config: None }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = docker_name(&[&spec.name, &spec.namespace, "POD", uid]);
        let what = || format!("creating the pause container of pod {uid} from {}", self.pause_image);
        let options = CreateContainerOptions { name: Some(name), ..Default::default() };
        let id = self.docker.create_container(Some(options), body).await.map_err(docker_error(what))?.id;
        self.docker.start_container(&id, None).await.map_err(docker_error(|| format!("starting the pause container of pod {uid}")))?;
        match self.running_pid(&id).await? {
            Some(pid) => Ok(Self::sandbox(uid, pid)),
            None => Err(RuntimeError::Other(format!(
                "the pause container of pod {uid} ({}) is not running right after its start: {}",
                self.pause_image,
                describe_state(&self.inspect(&id).await?)
            ))),
        }
    }

    /// Removes every container of the pod and its directory. Idempotent.
    async fn destroy(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        let mut containers = self.list(&[(LABEL_POD_UID, pod_uid)], false).await?;
        // Containers first, then the pause container whose namespaces they use.
        containers.sort_by_key(|c| label(c, LABEL_ROLE) == Some(ROLE_SANDBOX));
        let ids: Vec<String> = containers.into_iter().filter_map(|c| c.id).collect();
        for id in &ids {
            self.remove_container(id).await.map_err(|e| RuntimeError::Other(format!("removing pod {pod_uid}: {e}")))?;
        }
        self.pumps.forget(&ids);
        let dir = self.pod_dir(pod_uid);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(RuntimeError::Io { what: format!("removing {}", dir.display()), source: e }),
            _ => Ok(()),
        }
    }

    /// Force-removes a container (SIGKILL if it runs); a missing one is fine.
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(id, Some(options)).await {
            Err(e) if !is_not_found(&e) => Err(RuntimeError::Other(format!("removing container {id}: {e}"))),
            _ => Ok(()),
        }
    }

    /// Creates and starts run `spec.attempt`, the pod's sandbox being `sandbox`.
    async fn create_container(&self, pod_uid: &str, sandbox: &ContainerSummary, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let pause_id = sandbox.id.clone().unwrap_or_default();
        let etc = self.pod_dir(pod_uid).join(ETC_DIR);
        let bind = |source: &Path, target: &Path, read_only: bool| models::Mount {
            source: Some(source.display().to_string()),
            target: Some(target.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(read_only),
            ..Default::default()
        };
        // A volume the pod mounts over one of the pod files wins (Docker
        // refuses two mounts at one path).
        let mut mounts: Vec<models::Mount> = ETC_FILES
            .iter()
            .map(|file| (etc.join(file), Path::new("/etc").join(file)))
            .filter(|(_, target)| !spec.mounts.iter().any(|m| &m.container_path == target))
            .map(|(source, target)| bind(&source, &target, false))
            .collect();
        mounts.extend(spec.mounts.iter().map(|m| bind(&m.host_path, &m.container_path, m.read_only)));

        let owner = self.owner();
        let attempt = spec.attempt.to_string();
        let mut labels: HashMap<String, String> = [
            (LABEL_OWNER, owner.as_str()),
            (LABEL_POD_UID, pod_uid),
            (LABEL_ROLE, ROLE_CONTAINER),
            (LABEL_CONTAINER, &spec.name),
            (LABEL_ATTEMPT, &attempt),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for key in [LABEL_POD_NAME, LABEL_POD_NAMESPACE] {
            if let Some(value) = label(sandbox, key) {
                labels.insert(key.into(), value.into());
            }
        }
        let bytes = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
        let memory = spec.limits.memory_bytes.map(bytes);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            // Empty: the image's own entrypoint and command.
            entrypoint: (!spec.argv.is_empty()).then(|| spec.argv.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: spec.working_dir.as_ref().map(|d| d.display().to_string()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{pause_id}")),
                ipc_mode: Some(format!("container:{pause_id}")),
                memory,
                // No swap beyond the limit, as the kubelet sets it.
                memory_swap: memory,
                nano_cpus: spec.limits.cpu_millis.map(|m| bytes(m.max(MIN_CPU_MILLIS).saturating_mul(1_000_000))),
                mounts: Some(mounts),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([("max-size".into(), "10m".into()), ("max-file".into(), "2".into())])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod_name = label(sandbox, LABEL_POD_NAME).unwrap_or("pod");
        let namespace = label(sandbox, LABEL_POD_NAMESPACE).unwrap_or("default");
        let name = docker_name(&[pod_name, namespace, &spec.name, pod_uid, &attempt]);
        let what = || format!("creating container {} (attempt {}) of pod {pod_uid} from image {}", spec.name, spec.attempt, spec.image);
        let options = CreateContainerOptions { name: Some(name), ..Default::default() };
        let id = self.docker.create_container(Some(options), body).await.map_err(docker_error(what))?.id;
        self.start_created(pod_uid, spec, &id).await?;
        Ok(id)
    }

    /// Starts a created container and follows its logs. A failed start
    /// leaves the container, which then reads as exited with an error.
    async fn start_created(&self, pod_uid: &str, spec: &ContainerSpec, id: &str) -> Result<(), RuntimeError> {
        let started = self.docker.start_container(id, None).await;
        // Only now: following a container that has not started ends at once.
        // Docker keeps what a run that ended already wrote.
        self.pumps.ensure(&self.docker, id, self.log_path(pod_uid, &spec.name, spec.attempt));
        started.map_err(docker_error(|| format!("starting container {} (attempt {}) of pod {pod_uid}", spec.name, spec.attempt)))
    }

    /// Removes the runs of a container older than the one before `attempt`:
    /// their logs are in their files, and the one before stays for whoever
    /// wants to look at it in Docker.
    async fn collect_old_runs(&self, pod_uid: &str, name: &str, attempt: u32) -> Result<(), RuntimeError> {
        let old: Vec<String> = self
            .runs(pod_uid, name)
            .await?
            .into_iter()
            .filter(|(a, c)| a.saturating_add(1) < attempt && !is_running(c))
            .filter_map(|(_, c)| c.id)
            .collect();
        for id in &old {
            self.pumps.wait(id, LOG_DRAIN).await;
            self.remove_container(id).await?;
        }
        self.pumps.forget(&old);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn version(&self) -> String {
        format!("docker://{}", self.engine_version)
    }

    async fn run_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        let uid = &spec.pod_uid;
        check_name("pod UID", uid)?;
        if spec.hostname.is_empty() || spec.hostname.len() > 64 || spec.hostname.contains('\0') {
            return Err(RuntimeError::Other(format!("pod {uid}: {:?} is not a valid hostname", spec.hostname)));
        }
        if let Some(pause) = self.running_sandbox(uid).await?
            && let Some(pid) = self.running_pid(pause.id.as_deref().unwrap_or_default()).await?
        {
            return Ok(Self::sandbox(uid, pid));
        }
        // A pause container that ended, containers without one, files: the
        // remains of a dead sandbox (or of a failed start).
        self.destroy(uid).await?;
        create_or_clean_up(uid, self.create_sandbox(spec), async || self.destroy(uid).await).await
    }

    /// A retry of the latest attempt starts nothing (a success if that
    /// attempt did start), as in the process runtime.
    async fn start_container(&self, pod_uid: &str, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        check_name("pod UID", pod_uid)?;
        check_name("container name", &spec.name)?;
        let what = format!("container {} (attempt {}) of pod {pod_uid}", spec.name, spec.attempt);
        let Some(sandbox) = self.running_sandbox(pod_uid).await? else {
            return Err(RuntimeError::NoSandbox { pod_uid: pod_uid.to_string() });
        };
        if let Some((latest, container)) = self.runs(pod_uid, &spec.name).await?.into_iter().next() {
            let id = container.id.clone().unwrap_or_default();
            if latest == spec.attempt {
                let state = self.inspect(&id).await?.state.unwrap_or_default();
                return match (&state.status, docker_time(state.started_at.as_deref())) {
                    // Created, never started: the agent stopped in between.
                    (Some(ContainerStateStatusEnum::CREATED), None) if state.error.as_deref().unwrap_or("").is_empty() => {
                        self.start_created(pod_uid, spec, &id).await
                    }
                    (_, None) => Err(RuntimeError::Other(format!("{what}: it failed to start; the next attempt may"))),
                    _ => {
                        self.pumps.ensure(&self.docker, &id, self.log_path(pod_uid, &spec.name, latest));
                        Ok(())
                    }
                };
            }
            if is_running(&container) {
                return Err(RuntimeError::Other(format!("{what}: attempt {latest} is still running")));
            }
            if latest > spec.attempt {
                return Err(RuntimeError::Other(format!("{what}: attempt {latest} has already run")));
            }
        }
        self.require_image(&spec.image, &format!("{what}: image")).await?;
        self.create_container(pod_uid, &sandbox, spec).await?;
        if let Err(e) = self.collect_old_runs(pod_uid, &spec.name, spec.attempt).await {
            tracing::warn!(pod_uid, container = %spec.name, error = %e, "removing old runs");
        }
        Ok(())
    }

    async fn container_state(&self, pod_uid: &str, name: &str) -> Result<(u32, ContainerState), RuntimeError> {
        check_name("pod UID", pod_uid)?;
        check_name("container name", name)?;
        let Some((attempt, container)) = self.runs(pod_uid, name).await?.into_iter().next() else {
            return Err(self.missing(pod_uid, name).await);
        };
        let id = container.id.clone().unwrap_or_default();
        let inspected = match self.docker.inspect_container(&id, None).await {
            Err(e) if is_not_found(&e) => return Err(self.missing(pod_uid, name).await), // Removed meanwhile.
            result => result.map_err(docker_error(|| format!("inspecting container {name} of pod {pod_uid} ({id})")))?,
        };
        let created = container
            .created
            .and_then(|s| u64::try_from(s).ok())
            .map_or(SystemTime::UNIX_EPOCH, |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let state = map_state(&inspected.state.unwrap_or_default(), created);
        // After an agent restart, this is where a run's log file resumes.
        let pump = self.pumps.ensure(&self.docker, &id, self.log_path(pod_uid, name, attempt));
        if matches!(state, ContainerState::Exited { .. }) {
            wait_pump(pump, LOG_DRAIN).await;
        }
        Ok((attempt, state))
    }

    async fn stop_container(&self, pod_uid: &str, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        check_name("pod UID", pod_uid)?;
        check_name("container name", name)?;
        let Some((attempt, container)) = self.runs(pod_uid, name).await?.into_iter().next() else {
            return Ok(()); // Never ran, nothing runs.
        };
        if !is_running(&container) {
            return Ok(());
        }
        let id = container.id.unwrap_or_default();
        // Whole seconds, rounded up: SIGKILL never comes before the grace ends.
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptions { t: Some(i32::try_from(seconds).unwrap_or(i32::MAX)), signal: None };
        // The engine answers once the container is gone, which may take
        // longer than the client's default timeout.
        let docker = self.docker.clone().with_timeout(grace.saturating_add(STOP_MARGIN));
        match docker.stop_container(&id, Some(options)).await {
            Err(e) if !is_not_found(&e) => {
                Err(RuntimeError::Other(format!("stopping container {name} (attempt {attempt}) of pod {pod_uid}: {e}")))
            }
            _ => Ok(()),
        }
    }

    async fn remove_sandbox(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        check_name("pod UID", pod_uid)?;
        self.destroy(pod_uid).await
    }

    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>, RuntimeError> {
        let mut sandboxes = Vec::new();
        for pause in self.list(&[(LABEL_ROLE, ROLE_SANDBOX)], true).await? {
            let (Some(uid), Some(id)) = (label(&pause, LABEL_POD_UID), pause.id.as_deref()) else { continue };
            match self.docker.inspect_container(id, None).await {
                Err(e) if is_not_found(&e) => continue, // Removed meanwhile.
                result => {
                    let state = result.map_err(docker_error(|| format!("inspecting the pause container of pod {uid}")))?.state;
                    let pid = state.and_then(|s| s.pid).and_then(|pid| u32::try_from(pid).ok()).filter(|&pid| pid > 0);
                    if let Some(pid) = pid {
                        sandboxes.push(Self::sandbox(uid, pid));
                    }
                }
            }
        }
        sandboxes.sort_by(|a, b| a.pod_uid.cmp(&b.pod_uid));
        Ok(sandboxes)
    }

    fn log_path(&self, pod_uid: &str, name: &str, attempt: u32) -> PathBuf {
        self.pod_dir(pod_uid).join(LOGS_DIR).join(name).join(format!("{attempt}.log"))
    }

    /// `docker exec` of the latest run, without a TTY: its environment,
    /// working directory and namespaces are the container's.
    async fn exec(&self, pod_uid: &str, name: &str, argv: &[String], stdin: bool) -> Result<ExecSession, RuntimeError> {
        check_name("pod UID", pod_uid)?;
        check_name("container name", name)?;
        if argv.is_empty() {
            return Err(RuntimeError::Other(format!("exec in container {name} of pod {pod_uid}: no command")));
        }
        let Some((_, container)) = self.runs(pod_uid, name).await?.into_iter().next() else {
            return Err(self.missing(pod_uid, name).await);
        };
        let id = container.id.unwrap_or_default();
        let what = || format!("exec {argv:?} in container {name} of pod {pod_uid}");
        let config = ExecConfig {
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            cmd: Some(argv.to_vec()),
            ..Default::default()
        };
        let exec_id = self.docker.create_exec(&id, config).await.map_err(docker_error(what))?.id;
        let options = StartExecOptions { detach: false, tty: false, output_capacity: None };
        let StartExecResults::Attached { mut output, input } =
            self.docker.start_exec(&exec_id, Some(options)).await.map_err(docker_error(what))?
        else {
            return Err(RuntimeError::Other(format!("{}: the engine did not attach", what())));
        };

        let stdin = if stdin {
            // A pipe of our own, so that dropping the session's end closes
            // the command's stdin (the engine sees the connection half-closed).
            let (writer, mut reader) = tokio::io::duplex(EXEC_PIPE);
            tokio::spawn(async move {
                let mut input = input;
                let _ = tokio::io::copy(&mut reader, &mut input).await;
                let _ = input.shutdown().await;
            });
            Some(Box::pin(writer) as std::pin::Pin<Box<dyn AsyncWrite + Send>>)
        } else {
            None
        };
        let (stdout_writer, stdout) = tokio::io::duplex(EXEC_PIPE);
        let (stderr_writer, stderr) = tokio::io::duplex(EXEC_PIPE);
        let (done, exit) = oneshot::channel();
        let (docker, description) = (self.docker.clone(), what());
        tokio::spawn(async move {
            let (mut stdout, mut stderr) = (Some(stdout_writer), Some(stderr_writer));
            let mut failure = None;
            while let Some(frame) = output.next().await {
                match frame {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => write_or_drop(&mut stdout, &message).await,
                    Ok(LogOutput::StdErr { message }) => write_or_drop(&mut stderr, &message).await,
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(e) => {
                        failure = Some(RuntimeError::Other(format!("{description}: reading its output: {e}")));
                        break;
                    }
                }
            }
            // End of file for the readers before the exit code is known.
            drop((stdout, stderr));
            let result = match failure {
                Some(e) => Err(e),
                None => exec_exit_code(&docker, &exec_id, &description).await,
            };
            let _ = done.send(result);
        });
        let description = what();
        Ok(ExecSession {
            stdin,
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            exit: async move {
                exit.await.unwrap_or_else(|_| Err(RuntimeError::Other(format!("{description}: its output task ended without a result"))))
            }
            .boxed(),
        })
    }
}

/// Builds image `tag` (unless the engine has it) `FROM scratch` with only
/// `binary` in it, at `/<file name>`, as its entrypoint: `argv` in exec form
/// (argv[0] being that path), or the binary alone if `argv` is empty. The
/// binary must be statically linked: the image has no loader and no
/// libraries. An image of that tag is taken as is, so a tag must name one
/// binary (callers put a version or digest in it).
///
/// This is how the pause image comes to be on a node that cannot pull
/// (built from the agent's static pause binary), and how the tests get
/// their images.
pub async fn ensure_image_from_binary(docker: &Docker, tag: &str, binary: &Path, argv: &[String]) -> Result<(), RuntimeError> {
    match docker.inspect_image(tag).await {
        Ok(_) => return Ok(()),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(RuntimeError::Other(format!("looking up image {tag}: {e}"))),
    }
    let file_name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) && !n.starts_with('.'))
        .ok_or_else(|| RuntimeError::Other(format!("image {tag}: {} needs a plain file name", binary.display())))?;
    let content = tokio::fs::read(binary).await.map_err(io_error(|| format!("reading {}", binary.display())))?;
    if has_interpreter(&content) {
        return Err(RuntimeError::Other(format!(
            "image {tag}: {} is dynamically linked; a FROM scratch image has no loader, so it must be static",
            binary.display()
        )));
    }
    let entrypoint = if argv.is_empty() { vec![format!("/{file_name}")] } else { argv.to_vec() };
    let entrypoint = serde_json::to_string(&entrypoint).map_err(|e| RuntimeError::Other(format!("image {tag}: {e}")))?;
    let dockerfile = format!("FROM scratch\nCOPY bin/{file_name} /{file_name}\nENTRYPOINT {entrypoint}\n");
    let context = build_context(&dockerfile, file_name, &content).map_err(io_error(|| format!("packing the build context of {tag}")))?;

    let options = BuildImageOptions { t: Some(tag.to_string()), rm: true, forcerm: true, ..Default::default() };
    let mut build = std::pin::pin!(docker.build_image(options, None, Some(bollard::body_full(context.into()))));
    let mut output = String::new();
    while let Some(item) = build.next().await {
        let info = item.map_err(|e| RuntimeError::Other(format!("building image {tag}: {e}; its output: {}", output.trim())))?;
        if let Some(detail) = info.error_detail {
            let message = detail.message.unwrap_or_default();
            return Err(RuntimeError::Other(format!("building image {tag}: {message}; its output: {}", output.trim())));
        }
        output.push_str(info.stream.as_deref().unwrap_or_default());
    }
    docker
        .inspect_image(tag)
        .await
        .map(drop)
        .map_err(|e| RuntimeError::Other(format!("image {tag} is missing after its build ({e}); its output: {}", output.trim())))
}

/// A build context of two files: the Dockerfile and `bin/<name>`.
fn build_context(dockerfile: &str, name: &str, binary: &[u8]) -> io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    for (path, mode, data) in [("Dockerfile".to_string(), 0o644, dockerfile.as_bytes()), (format!("bin/{name}"), 0o755, binary)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        archive.append_data(&mut header, path, data)?;
    }
    archive.into_inner()
}

/// Whether an ELF file names a program interpreter (`PT_INTERP`), i.e. is
/// dynamically linked. Only 64-bit little-endian files are checked; others
/// are given the benefit of the doubt.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (entry_size, entries) = (u16_at(0x36), u16_at(0x38));
    (0..entries).any(|i| {
        let at = phoff.saturating_add(i * entry_size);
        elf.get(at..at + 4).is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) == PT_INTERP)
    })
}

/// The runtime's view of a container's Docker state. A run that never
/// started (its start failed, or the agent stopped between creating and
/// starting it) reads as exited with an error, at its creation time, so the
/// worker moves on to the next attempt.
fn map_state(state: &models::ContainerState, created: SystemTime) -> ContainerState {
    let started_at = docker_time(state.started_at.as_deref());
    let live = matches!(
        state.status,
        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED | ContainerStateStatusEnum::RESTARTING)
    );
    let pid = state.pid.and_then(|pid| u32::try_from(pid).ok()).filter(|&pid| pid > 0);
    if let (true, Some(pid)) = (live, pid) {
        return ContainerState::Running { pid, started_at: started_at.unwrap_or(created) };
    }
    let exit_code = state.exit_code.and_then(|c| i32::try_from(c).ok()).unwrap_or(0);
    let Some(started_at) = started_at else {
        // Docker's own code for "could not run" when it recorded none.
        let exit_code = if exit_code == 0 { 128 } else { exit_code };
        return ContainerState::Exited { exit_code, signal: None, reason: ExitReason::Error, started_at: created, finished_at: created };
    };
    let reason = if state.oom_killed == Some(true) {
        ExitReason::OOMKilled
    } else if exit_code == 0 {
        ExitReason::Completed
    } else {
        ExitReason::Error
    };
    let finished_at = docker_time(state.finished_at.as_deref()).filter(|&f| f >= started_at).unwrap_or(started_at);
    ContainerState::Exited { exit_code, signal: None, reason, started_at, finished_at }
}

/// A Docker timestamp; Docker's zero time (`0001-01-01T00:00:00Z`) and
/// anything before 1970 mean unset.
fn docker_time(text: Option<&str>) -> Option<SystemTime> {
    let time: Timestamp = text?.parse().ok()?;
    (time.as_second() > 0).then(|| SystemTime::from(time))
}

fn describe_state(inspected: &models::ContainerInspectResponse) -> String {
    let state = inspected.state.clone().unwrap_or_default();
    let status = state.status.map_or_else(|| "unknown".to_string(), |s| s.to_string());
    let error = state.error.filter(|e| !e.is_empty()).map(|e| format!(", error {e:?}")).unwrap_or_default();
    format!("status {status}, exit code {}{error}", state.exit_code.unwrap_or_default())
}

fn is_running(container: &ContainerSummary) -> bool {
    use models::ContainerSummaryStateEnum as S;
    matches!(container.state, Some(S::RUNNING | S::PAUSED | S::RESTARTING))
}

fn label<'a>(container: &'a ContainerSummary, key: &str) -> Option<&'a str> {
    container.labels.as_ref()?.get(key).map(String::as_str)
}

/// `hawser_<parts joined by _>`, with what Docker refuses in names replaced.
fn docker_name(parts: &[&str]) -> String {
    let joined = parts.join("_");
    let safe: String = joined.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect();
    format!("hawser_{safe}")
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

fn docker_error(what: impl FnOnce() -> String) -> impl FnOnce(DockerError) -> RuntimeError {
    move |e| RuntimeError::Other(format!("{}: {e}", what()))
}

fn io_error(what: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> RuntimeError {
    move |source| RuntimeError::Io { what: what(), source }
}

/// Writes to a pipe whose reader may be gone; then the rest is dropped, so
/// the command is never blocked by a reader that left.
async fn write_or_drop(pipe: &mut Option<tokio::io::DuplexStream>, data: &[u8]) {
    if let Some(writer) = pipe
        && writer.write_all(data).await.is_err()
    {
        *pipe = None;
    }
}

/// The exit code of an exec whose output has ended (the engine may take a
/// moment to record it).
async fn exec_exit_code(docker: &Docker, exec_id: &str, what: &str) -> Result<i32, RuntimeError> {
    let deadline = Instant::now() + EXEC_EXIT_WAIT;
    loop {
        let inspected =
            docker.inspect_exec(exec_id).await.map_err(|e| RuntimeError::Other(format!("{what}: inspecting exec {exec_id}: {e}")))?;
        if inspected.running != Some(true)
            && let Some(code) = inspected.exit_code
        {
            return Ok(i32::try_from(code).unwrap_or(i32::MAX));
        }
        if Instant::now() > deadline {
            return Err(RuntimeError::Other(format!("{what}: its output ended but no exit code showed within {EXEC_EXIT_WAIT:?}")));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The tasks following runs' logs into their files, by container id. They
/// end with their runs; dropping the last runtime clone ends them too, as
/// an agent restart would.
#[derive(Debug, Default)]
struct Pumps {
    running: Mutex<HashMap<String, Pump>>,
}

#[derive(Debug)]
struct Pump {
    /// Turns true once the run's output is all in its file.
    done: watch::Receiver<bool>,
    task: AbortHandle,
}

impl Pumps {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pump>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows container `id`'s logs into `path` unless that is being (or
    /// has been) done.
    fn ensure(&self, docker: &Docker, id: &str, path: PathBuf) -> watch::Receiver<bool> {
        let mut running = self.lock();
        if let Some(pump) = running.get(id) {
            return pump.done.clone();
        }
        let (done, receiver) = watch::channel(false);
        let task = tokio::spawn(pump_logs(docker.clone(), id.to_string(), path, done));
        running.insert(id.to_string(), Pump { done: receiver.clone(), task: task.abort_handle() });
        receiver
    }

    async fn wait(&self, id: &str, limit: Duration) {
        let done = self.lock().get(id).map(|pump| pump.done.clone());
        if let Some(done) = done {
            wait_pump(done, limit).await;
        }
    }

    fn forget(&self, ids: &[String]) {
        let mut running = self.lock();
        for id in ids {
            if let Some(pump) = running.remove(id) {
                pump.task.abort();
            }
        }
    }
}

impl Drop for Pumps {
    fn drop(&mut self) {
        for pump in self.lock().values() {
            pump.task.abort();
        }
    }
}

async fn wait_pump(mut done: watch::Receiver<bool>, limit: Duration) {
    // A pump that is gone (aborted) has nothing more to write either.
    let _ = tokio::time::timeout(limit, done.wait_for(|&d| d)).await;
}

/// Follows a container's Docker logs (with Docker's timestamps) into its
/// CRI file, skipping what the file already has from an earlier agent.
///
/// File writes are small appends done in place, as the supervisor of the
/// process runtime does them; they do not wait on anything but the disk.
async fn pump_logs(docker: Docker, id: String, path: PathBuf, done: watch::Sender<bool>) {
    let after = last_entry_time(&path);
    let mut sink = match LogFile::open(&path, logs::MAX_FILE) {
        Ok(file) => LogSink { file, path, failed: false },
        Err(e) => {
            tracing::warn!(container = %id, path = %path.display(), error = %e, "opening a container log; its output is not kept");
            let _ = done.send(true);
            return;
        }
    };
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        timestamps: true,
        // Whole seconds; what is not after `after` is skipped below.
        since: after.map_or(0, |t| i32::try_from(t.as_second()).unwrap_or(0)),
        ..Default::default()
    };
    let mut frames = std::pin::pin!(docker.logs(&id, Some(options)));
    let mut lines = [Lines::new(Stream::Stdout), Lines::new(Stream::Stderr)];
    while let Some(frame) = frames.next().await {
        let (index, message) = match frame {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => (0, message),
            Ok(LogOutput::StdErr { message }) => (1, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => {
                // A removed container ends its logs this way too.
                tracing::debug!(container = %id, error = %e, "following container logs ended");
                break;
            }
        };
        // `<RFC 3339 time> <text>`, one frame per line Docker logged.
        let (time, text) = match message.iter().position(|&b| b == b' ') {
            Some(space) => (std::str::from_utf8(&message[..space]).ok().and_then(|t| t.parse::<Timestamp>().ok()), &message[space + 1..]),
            None => (None, &message[..]),
        };
        if let (Some(after), Some(time)) = (after, time)
            && time <= after
        {
            continue;
        }
        lines[index].push(text, &mut sink);
    }
    for stream in &mut lines {
        stream.finish(&mut sink);
    }
    let _ = done.send(true);
}

/// One stream's bytes cut into CRI entries, as `logs::forward` cuts a pipe's.
struct Lines {
    stream: Stream,
    pending: Vec<u8>,
}

impl Lines {
    fn new(stream: Stream) -> Self {
        Self { stream, pending: Vec::new() }
    }

    fn push(&mut self, data: &[u8], sink: &mut LogSink) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            sink.write(self.stream, false, &self.pending[start..start + end]);
            start += end + 1;
        }
        while self.pending.len() - start >= logs::MAX_LINE {
            sink.write(self.stream, true, &self.pending[start..start + logs::MAX_LINE]);
            start += logs::MAX_LINE;
        }
        self.pending.drain(..start);
    }

    fn finish(&mut self, sink: &mut LogSink) {
        if !self.pending.is_empty() {
            sink.write(self.stream, false, &std::mem::take(&mut self.pending));
        }
    }
}

/// A log file whose write errors are reported once, not per line: a full
/// disk must not flood the agent's log.
struct LogSink {
    file: LogFile,
    path: PathBuf,
    failed: bool,
}

impl LogSink {
    fn write(&mut self, stream: Stream, partial: bool, text: &[u8]) {
        match self.file.write_entry(stream, partial, text) {
            Ok(()) => self.failed = false,
            Err(e) if !self.failed => {
                self.failed = true;
                tracing::warn!(path = %self.path.display(), error = %e, "writing a container log");
            }
            Err(_) => {}
        }
    }
}

/// The time of the last entry of a log file (or of its rotated older file
/// when the current one has none), where following resumes.
fn last_entry_time(path: &Path) -> Option<Timestamp> {
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    [path.to_path_buf(), PathBuf::from(rotated)].iter().find_map(|file| {
        // Entries are at most MAX_LINE bytes of text and a short prefix.
        let tail = read_tail(file, 4 * logs::MAX_LINE as u64).ok()?;
        let text = String::from_utf8_lossy(&tail);
        text.lines().rev().find_map(|line| line.split(' ').next()?.parse().ok())
    })
}

fn read_tail(path: &Path, bytes: u64) -> io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(bytes)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: ContainerStateStatusEnum, pid: i64, exit_code: i64, started: &str, finished: &str) -> models::ContainerState {
        models::ContainerState {
            status: Some(status),
            pid: Some(pid),
            exit_code: Some(exit_code),
            started_at: Some(started.into()),
            finished_at: Some(finished.into()),
            ..Default::default()
        }
    }

    const ZERO: &str = "0001-01-01T00:00:00Z";
    const T1: &str = "2026-01-02T03:04:05.123456789Z";
    const T2: &str = "2026-01-02T03:04:07Z";

    #[test]
    fn docker_states_map_to_runtime_states() {
        let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let t1 = docker_time(Some(T1)).unwrap();
        let t2 = docker_time(Some(T2)).unwrap();
        use ContainerStateStatusEnum as S;
        assert_eq!(map_state(&state(S::RUNNING, 42, 0, T1, ZERO), created), ContainerState::Running { pid: 42, started_at: t1 });
        let exited = |exit_code, reason| ContainerState::Exited { exit_code, signal: None, reason, started_at: t1, finished_at: t2 };
        assert_eq!(map_state(&state(S::EXITED, 0, 0, T1, T2), created), exited(0, ExitReason::Completed));
        assert_eq!(map_state(&state(S::EXITED, 0, 137, T1, T2), created), exited(137, ExitReason::Error));
        let oom = models::ContainerState { oom_killed: Some(true), ..state(S::EXITED, 0, 137, T1, T2) };
        assert_eq!(map_state(&oom, created), exited(137, ExitReason::OOMKilled));
        let never =
            ContainerState::Exited { exit_code: 127, signal: None, reason: ExitReason::Error, started_at: created, finished_at: created };
        assert_eq!(map_state(&state(S::CREATED, 0, 127, ZERO, ZERO), created), never);
        assert!(matches!(map_state(&state(S::CREATED, 0, 0, ZERO, ZERO), created), ContainerState::Exited { exit_code: 128, .. }));
    }

    #[test]
    fn names_are_what_docker_accepts() {
        assert_eq!(docker_name(&["web-0", "default", "POD", "u-1"]), "hawser_web-0_default_POD_u-1");
        assert_eq!(docker_name(&["a b", "ns/x"]), "hawser_a-b_ns-x");
    }

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // The test binary is linked as usual: dynamically, with a loader.
        assert!(has_interpreter(&own));
        assert!(!has_interpreter(b"#!/bin/sh\necho not an ELF file at all, and long enough to be looked at\n"));
    }

    #[test]
    fn build_contexts_hold_the_dockerfile_and_the_binary() {
        let context = build_context("FROM scratch\n", "server", b"\x7fELF...").unwrap();
        let mut archive = tar::Archive::new(&context[..]);
        let entries: Vec<(String, u32, usize)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().mode().unwrap(), e.header().size().unwrap() as usize)
            })
            .collect();
        assert_eq!(entries, [("Dockerfile".to_string(), 0o644, 13), ("bin/server".to_string(), 0o755, 7)]);
    }

    #[test]
    fn resuming_starts_after_the_last_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        assert_eq!(last_entry_time(&path), None);
        std::fs::write(&path, format!("{T1} stdout F one\n{T2} stderr F two\n")).unwrap();
        assert_eq!(last_entry_time(&path), Some(T2.parse().unwrap()));
        // Rotated away just before a crash: the older file still tells.
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        std::fs::rename(&path, &rotated).unwrap();
        assert_eq!(last_entry_time(&path), Some(T2.parse().unwrap()));
    }

    #[test]
    fn lines_are_cut_as_forward_cuts_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut sink = LogSink { file: LogFile::open(&path, logs::MAX_FILE).unwrap(), path: path.clone(), failed: false };
        let mut out = Lines::new(Stream::Stdout);
        out.push(b"one\ntw", &mut sink);
        out.push(b"o\n", &mut sink);
        out.push(&vec![b'x'; logs::MAX_LINE + 3], &mut sink);
        out.finish(&mut sink);
        let entries: Vec<(String, usize)> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| {
                let parts: Vec<&str> = l.splitn(4, ' ').collect();
                (format!("{} {}", parts[1], parts[2]), parts[3].len())
            })
            .collect();
        let expect = [("stdout F", 3), ("stdout F", 3), ("stdout P", logs::MAX_LINE), ("stdout F", 3)];
        assert_eq!(entries, expect.map(|(a, b)| (a.to_string(), b)));
    }
}

//! One pod's worker: drives the pod to its spec and reports what it sees.
//!
//! Each sync (on a pod change, a probe result, or at the latest every
//! [`POLL`]) goes: sandbox and network → container states from the runtime
//! → init containers in order → app containers (start, restart with
//! back-off per `restartPolicy`) → the pod's status, written when it
//! changed. On deletion the containers get SIGTERM and, after the grace
//! period, SIGKILL; then the sandbox, the pod's address and its volumes go,
//! and the pod object is removed.
//!
//! The worker keeps nothing the runtime cannot tell it again: a restarted
//! agent's worker finds the sandbox and each container's latest run, and
//! takes over (restart counts are run numbers; back-off and probe counters
//! start afresh).

use super::probes::{self, ProbeKind, ProbeResult, Timing};
use super::spec::{self, DnsSettings, PodFacts, Referenced, SpecError};
use super::status::{ContainerView, PodView, pod_status};
use super::volumes;
use crate::network::NodeNetwork;
use crate::runtime::{ContainerState, Runtime, RuntimeError};
use hawser_runtime::backoff::Backoff;
use hawser_runtime::events::{EventType, Recorder};
use hawser_runtime::objects::object_reference;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// How often a running pod's containers are looked at (the kubelet's PLEG
/// relists every second too).
pub const POLL: Duration = Duration::from_secs(1);
/// Kubernetes' container restart back-off: 10 s doubling to 5 min.
pub const RESTART_BACKOFF: Backoff = Backoff { initial: Duration::from_secs(10), max: Duration::from_secs(300), factor: 2.0 };
/// A run this long resets the back-off (the kubelet's 2 × max back-off).
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often ConfigMap and Secret volumes are refreshed.
const VOLUME_REFRESH: Duration = Duration::from_secs(60);
/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: i64 = 30;

/// What every worker of this agent shares.
pub struct Context {
    pub client: kube::Client,
    pub runtime: Arc<dyn Runtime>,
    pub network: Arc<NodeNetwork>,
    pub recorder: Recorder,
    pub node_name: String,
    pub node_ip: String,
    pub dns: DnsSettings,
    /// Where pod volumes live (`<root>/<uid>/volumes/<name>`).
    pub volumes_root: PathBuf,
}

/// What is known about one container of the pod.
#[derive(Default)]
struct Track {
    /// The latest run the runtime knows of.
    attempt: Option<u32>,
    state: Option<ContainerState>,
    /// The run before it, for `lastState`.
    previous: Option<ContainerState>,
    /// Restarts since the last long run, for the back-off.
    restarts: u32,
    /// No (re)start before this (back-off after a crash or a failed start).
    not_before: Option<Instant>,
    waiting: Option<(String, String)>,
    started: bool,
    ready: bool,
    /// (consecutive successes, consecutive failures) per probe.
    counts: HashMap<ProbeKind, (u32, u32)>,
    probes: Vec<AbortHandle>,
}

impl Track {
    fn stop_probes(&mut self) {
        for probe in self.probes.drain(..) {
            probe.abort();
        }
        self.counts.clear();
    }

    fn running(&self) -> bool {
        matches!(self.state, Some(ContainerState::Running { .. }))
    }
}

pub struct Worker {
    ctx: Arc<Context>,
    /// The pod as last seen; None once it is gone from the API.
    pod: Arc<Pod>,
    gone: bool,
    uid: String,
    sandbox_ready: bool,
    sandbox_failures: u32,
    sandbox_not_before: Option<Instant>,
    sandbox_error: Option<(String, String)>,
    pod_ip: Option<Ipv4Addr>,
    start_time: Option<SystemTime>,
    containers: HashMap<String, Track>,
    refs: Referenced,
    volumes: HashMap<String, PathBuf>,
    volumes_refreshed: Option<Instant>,
    written: Option<Value>,
    /// The pod's resourceVersion when `written` was sent: while the pod
    /// still shows it, the informer has not caught up with the write.
    written_over: Option<String>,
    probe_tx: mpsc::UnboundedSender<ProbeResult>,
    probe_rx: mpsc::UnboundedReceiver<ProbeResult>,
}

/// Runs the worker of `pod` until the pod is gone and cleaned up.
/// `updates` carries newer versions of it, and None when it was deleted
/// from the API.
pub async fn run(ctx: Arc<Context>, pod: Arc<Pod>, mut updates: watch::Receiver<Option<Arc<Pod>>>) {
    let mut worker = Worker::new(ctx, pod);
    loop {
        let Some(wait) = worker.sync().await else { return };
        tokio::select! {
            changed = updates.changed() => match changed.ok().and_then(|_| updates.borrow_and_update().clone()) {
                Some(pod) => worker.pod = pod,
                None => worker.gone = true,
            },
            Some(result) = worker.probe_rx.recv() => worker.on_probe(result).await,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.into_iter().flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
}

impl Worker {
    fn new(ctx: Arc<Context>, pod: Arc<Pod>) -> Self {
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| SystemTime::from(t.0));
        Self {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            ctx,
            pod,
            gone: false,
            sandbox_ready: false,
            sandbox_failures: 0,
            sandbox_not_before: None,
            sandbox_error: None,
            pod_ip: None,
            start_time,
            containers: HashMap::new(),
            refs: Referenced::default(),
            volumes: HashMap::new(),
            volumes_refreshed: None,
            written: None,
            written_over: None,
            probe_tx,
            probe_rx,
        }
    }

    fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    fn namespace(&self) -> String {
        self.pod.metadata.namespace.clone().unwrap_or_default()
    }

    fn event(&self, type_: EventType, reason: &str, message: &str) {
        self.ctx.recorder.publish(&object_reference(&*self.pod), type_, reason, message);
    }

    fn restart_policy(&self) -> String {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into())
    }

    fn phase_reported(&self) -> Option<&str> {
        self.pod.status.as_ref().and_then(|s| s.phase.as_deref())
    }

    /// One pass; the time until the next, or None when the worker is done.
    async fn sync(&mut self) -> Option<Duration> {
        if self.gone || self.pod.metadata.deletion_timestamp.is_some() {
            return self.terminate().await;
        }
        // A pod that already finished stays finished: nothing runs again.
        if matches!(self.phase_reported(), Some("Succeeded" | "Failed")) && self.written.is_none() {
            self.release_sandbox().await;
            return Some(Duration::from_secs(3600));
        }
        let mut wait = POLL;
        match self.ensure_sandbox().await {
            Ok(()) => {
                self.refresh_states().await;
                if let Some(next) = self.drive_containers().await {
                    wait = wait.min(next);
                }
            }
            Err(retry) => wait = retry,
        }
        self.write_status().await;
        if self.gone {
            return self.terminate().await;
        }
        // Once finished for good, the processes are gone; free the sandbox
        // and the address (the status keeps the pod IP, as Kubernetes does).
        if matches!(self.written.as_ref().and_then(|s| s["phase"].as_str()), Some("Succeeded" | "Failed")) {
            self.release_sandbox().await;
            return Some(Duration::from_secs(3600));
        }
        Some(wait)
    }

    /// Fetches the ConfigMaps and Secrets the pod refers to.
    async fn fetch_references(&mut self) {
        let (config_maps, secrets) = spec::references(&self.pod);
        let ns = self.namespace();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &ns);
        let secret_api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &ns);
        let mut refs = Referenced::default();
        for name in config_maps {
            if let Ok(Some(cm)) = cm_api.get_opt(&name).await {
                refs.config_maps.insert(name, cm);
            }
        }
        for name in secrets {
            if let Ok(Some(secret)) = secret_api.get_opt(&name).await {
                refs.secrets.insert(name, secret);
            }
        }
        self.refs = refs;
    }

    async fn refresh_volumes(&mut self) -> Result<(), SpecError> {
        if self.volumes_refreshed.is_some_and(|t| t.elapsed() < VOLUME_REFRESH) {
            return Ok(());
        }
        self.fetch_references().await;
        let (root, pod, refs) = (self.ctx.volumes_root.clone(), self.pod.clone(), self.refs.clone());
        let volumes = tokio::task::spawn_blocking(move || volumes::materialize(&root, &pod, &refs))
            .await
            .map_err(|e| SpecError::Invalid(format!("preparing volumes: {e}")))??;
        self.volumes = volumes;
        self.volumes_refreshed = Some(Instant::now());
        Ok(())
    }

    /// Makes the sandbox and its network exist; on failure, the delay
    /// before the next try.
    async fn ensure_sandbox(&mut self) -> Result<(), Duration> {
        if let Err(e) = self.refresh_volumes().await {
            self.event(EventType::Warning, "FailedMount", &format!("MountVolume.SetUp failed: {e}"));
            return Err(self.sandbox_failed("ContainerCreating", &e.to_string()));
        }
        if self.sandbox_ready {
            return Ok(());
        }
        if self.sandbox_not_before.is_some_and(|t| Instant::now() < t) {
            return Err(self.sandbox_not_before.unwrap().saturating_duration_since(Instant::now()));
        }
        if self.pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            let message = "hostNetwork pods are not supported by this agent yet";
            self.event(EventType::Warning, "FailedCreatePodSandBox", message);
            return Err(self.sandbox_failed("ContainerCreating", message));
        }
        match self.create_sandbox().await {
            Ok(ip) => {
                self.pod_ip = Some(ip);
                self.sandbox_ready = true;
                self.sandbox_failures = 0;
                self.sandbox_error = None;
                self.start_time.get_or_insert_with(SystemTime::now);
                Ok(())
            }
            Err(e) => {
                let message = format!("Failed to create pod sandbox: {e}");
                tracing::warn!(pod = self.name(), namespace = self.namespace(), error = %e, "creating the sandbox failed");
                self.event(EventType::Warning, "FailedCreatePodSandBox", &message);
                Err(self.sandbox_failed("ContainerCreating", &message))
            }
        }
    }

    fn sandbox_failed(&mut self, reason: &str, message: &str) -> Duration {
        self.sandbox_failures += 1;
        let delay = Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(60), factor: 2.0 }.delay(self.sandbox_failures);
        self.sandbox_not_before = Some(Instant::now() + delay);
        self.sandbox_error = Some((reason.to_string(), message.to_string()));
        delay
    }

    async fn create_sandbox(&self) -> anyhow::Result<Ipv4Addr> {
        let ip = self.ctx.network.reserve_address(&self.uid).await?;
        let spec = spec::sandbox_spec(&self.pod, ip, &self.ctx.dns);
        let sandbox = self.ctx.runtime.run_sandbox(&spec).await?;
        let iface = self.ctx.network.attach_pod(&self.uid, &sandbox.netns).await?;
        Ok(iface.ip)
    }

    /// Reads each container's latest run from the runtime.
    async fn refresh_states(&mut self) {
        let names: Vec<String> = all_containers(&self.pod).map(|c| c.name.clone()).collect();
        for name in names {
            let found = match self.ctx.runtime.container_state(&self.uid, &name).await {
                Ok(found) => Some(found),
                Err(RuntimeError::NoContainer { .. }) => None,
                Err(e) => {
                    tracing::warn!(pod = self.name(), container = name, error = %e, "reading a container's state");
                    continue;
                }
            };
            let adopt = {
                let track = self.containers.entry(name.clone()).or_default();
                match found {
                    None => {
                        track.state = None;
                        false
                    }
                    Some((attempt, state)) => {
                        let running_now = matches!(state, ContainerState::Running { .. });
                        if track.attempt != Some(attempt) {
                            if track.attempt.is_some() {
                                track.previous = track.state.take();
                            }
                            track.attempt = Some(attempt);
                            track.state = Some(state);
                            // A run this worker did not start (an agent restart): probe it.
                            track.probes.is_empty() && running_now
                        } else {
                            if track.running() && !running_now {
                                track.stop_probes();
                                track.ready = false;
                            }
                            track.state = Some(state);
                            false
                        }
                    }
                }
            };
            if adopt {
                self.start_probes(&name);
            }
        }
    }

    /// Starts, restarts or waits for containers; the time until a back-off
    /// ends, if one is pending.
    async fn drive_containers(&mut self) -> Option<Duration> {
        let policy = self.restart_policy();
        let spec = self.pod.spec.clone()?;
        for c in spec.init_containers.iter().flatten() {
            let state = self.containers.get(&c.name).and_then(|t| t.state.clone());
            match state {
                Some(ContainerState::Exited { exit_code: 0, .. }) => continue,
                Some(ContainerState::Running { .. }) => return None,
                None => return self.start(c, 0).await,
                Some(ContainerState::Exited { .. }) if policy == "Never" => return None,
                Some(ContainerState::Exited { .. }) => return self.restart(c).await,
            }
        }
        let mut next: Option<Duration> = None;
        for c in &spec.containers {
            let state = self.containers.get(&c.name).and_then(|t| t.state.clone());
            let wait = match state {
                None => self.start(c, 0).await,
                Some(ContainerState::Running { .. }) => None,
                Some(ContainerState::Exited { exit_code, .. }) => {
                    let again = match policy.as_str() {
                        "Always" => true,
                        "OnFailure" => exit_code != 0,
                        _ => false,
                    };
                    if again { self.restart(c).await } else { None }
                }
            };
            next = match (next, wait) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        next
    }

    /// Restarts an exited container, unless it is in back-off.
    async fn restart(&mut self, c: &Container) -> Option<Duration> {
        let (name, pod, ns, uid) = (c.name.clone(), self.name(), self.namespace(), self.uid.clone());
        let track = self.containers.entry(name.clone()).or_default();
        let now = Instant::now();
        if let Some(until) = track.not_before.filter(|t| now < *t) {
            let left = until - now;
            let message = format!(
                "back-off {}s restarting failed container={name} pod={pod}_{ns}({uid})",
                RESTART_BACKOFF.delay(track.restarts).as_secs()
            );
            if track.waiting.as_ref().map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                track.waiting = Some(("CrashLoopBackOff".into(), message));
                self.event(EventType::Warning, "BackOff", &format!("Back-off restarting failed container {name} in pod {pod}_{ns}({uid})"));
            }
            return Some(left);
        }
        // A long run earns a fresh back-off.
        if let Some(ContainerState::Exited { started_at, finished_at, .. }) = &track.state
            && finished_at.duration_since(*started_at).unwrap_or_default() >= BACKOFF_RESET
        {
            track.restarts = 0;
        }
        let attempt = track.attempt.map(|a| a + 1).unwrap_or(0);
        let failed = self.start(c, attempt).await;
        if failed.is_none() {
            let track = self.containers.entry(name).or_default();
            track.restarts += 1;
            track.not_before = Some(Instant::now() + RESTART_BACKOFF.delay(track.restarts));
        }
        failed
    }

    /// Starts run `attempt` of a container; on failure the container waits
    /// with the reason, and the time until it is tried again is returned.
    async fn start(&mut self, c: &Container, attempt: u32) -> Option<Duration> {
        let facts = PodFacts {
            node_name: self.ctx.node_name.clone(),
            host_ip: self.ctx.node_ip.clone(),
            pod_ip: self.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        };
        if self.containers.get(&c.name).and_then(|t| t.not_before).is_some_and(|t| Instant::now() < t) && attempt == 0 {
            return self.containers[&c.name].not_before.map(|t| t.saturating_duration_since(Instant::now()));
        }
        let spec = match spec::container_spec(&self.pod, c, attempt, &self.refs, &facts, &self.volumes) {
            Ok(spec) => spec,
            Err(e) => {
                // The referenced objects may appear: fetch them again next time.
                self.volumes_refreshed = None;
                return self.start_failed(c, "CreateContainerConfigError", &e.to_string());
            }
        };
        if let Err(e) = self.ctx.runtime.start_container(&self.uid, &spec).await {
            return self.start_failed(c, "RunContainerError", &e.to_string());
        }
        self.event(EventType::Normal, "Created", &format!("Created container {}", c.name));
        self.event(EventType::Normal, "Started", &format!("Started container {}", c.name));
        let track = self.containers.entry(c.name.clone()).or_default();
        track.waiting = None;
        if track.attempt.is_some() && track.attempt != Some(attempt) {
            track.previous = track.state.take();
        }
        track.attempt = Some(attempt);
        track.state = match self.ctx.runtime.container_state(&self.uid, &c.name).await {
            Ok((_, state)) => Some(state),
            Err(_) => Some(ContainerState::Running { pid: 0, started_at: SystemTime::now() }),
        };
        self.start_probes(&c.name);
        None
    }

    fn start_failed(&mut self, c: &Container, reason: &str, message: &str) -> Option<Duration> {
        self.event(EventType::Warning, "Failed", &format!("Error: {message}"));
        let track = self.containers.entry(c.name.clone()).or_default();
        track.waiting = Some((reason.to_string(), message.to_string()));
        track.restarts += 1;
        let delay = RESTART_BACKOFF.delay(track.restarts);
        track.not_before = Some(Instant::now() + delay);
        Some(delay)
    }

    /// Starts the probes of a container's current run: the startup probe
    /// alone first, if there is one.
    fn start_probes(&mut self, name: &str) {
        let Some(container) = all_containers(&self.pod).find(|c| c.name == name).cloned() else { return };
        let Some(pod_ip) = self.pod_ip else { return };
        let runtime = self.ctx.runtime.clone();
        let uid = self.uid.clone();
        let tx = self.probe_tx.clone();
        let track = self.containers.entry(name.to_string()).or_default();
        track.stop_probes();
        let target = probes::Target {
            runtime,
            pod_uid: uid,
            pod_ip: IpAddr::V4(pod_ip),
            container: container.clone(),
            attempt: track.attempt.unwrap_or(0),
        };
        track.started = container.startup_probe.is_none();
        let kinds: &[ProbeKind] = if track.started { &[ProbeKind::Liveness, ProbeKind::Readiness] } else { &[ProbeKind::Startup] };
        track.ready = track.started && container.readiness_probe.is_none();
        for kind in kinds {
            track.probes.extend(probes::spawn(*kind, target.clone(), tx.clone()));
        }
    }

    async fn on_probe(&mut self, result: ProbeResult) {
        let Some(container) = all_containers(&self.pod).find(|c| c.name == result.container).cloned() else { return };
        let Some(probe) = result.kind.of(&container) else { return };
        let timing = Timing::of(probe);
        let Some(track) = self.containers.get_mut(&result.container) else { return };
        if track.attempt != Some(result.attempt) || !track.running() {
            return;
        }
        let counts = track.counts.entry(result.kind).or_default();
        match &result.failure {
            None => *counts = (counts.0 + 1, 0),
            Some(_) => *counts = (0, counts.1 + 1),
        }
        let (successes, failures) = *counts;
        if let Some(why) = &result.failure {
            self.event(EventType::Warning, "Unhealthy", &format!("{} probe failed: {why}", result.kind.label()));
        }
        let track = self.containers.get_mut(&result.container).expect("looked up above");
        match result.kind {
            ProbeKind::Readiness if successes >= timing.success_threshold => track.ready = true,
            ProbeKind::Readiness if failures >= timing.failure_threshold => track.ready = false,
            ProbeKind::Startup if successes >= timing.success_threshold => {
                track.stop_probes();
                let target = probes::Target {
                    runtime: self.ctx.runtime.clone(),
                    pod_uid: self.uid.clone(),
                    pod_ip: IpAddr::V4(self.pod_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)),
                    container: container.clone(),
                    attempt: result.attempt,
                };
                track.started = true;
                track.ready = container.readiness_probe.is_none();
                for kind in [ProbeKind::Liveness, ProbeKind::Readiness] {
                    track.probes.extend(probes::spawn(kind, target.clone(), self.probe_tx.clone()));
                }
            }
            ProbeKind::Liveness | ProbeKind::Startup if failures >= timing.failure_threshold => {
                track.stop_probes();
                track.ready = false;
                let message =
                    format!("Container {} failed {} probe, will be restarted", container.name, result.kind.label().to_lowercase());
                self.event(EventType::Normal, "Killing", &message);
                let grace = self.grace_period();
                if let Err(e) = self.ctx.runtime.stop_container(&self.uid, &container.name, grace).await {
                    tracing::warn!(pod = self.name(), container = container.name, error = %e, "stopping a container that failed its probe");
                }
            }
            _ => {}
        }
    }

    fn grace_period(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(DEFAULT_GRACE);
        Duration::from_secs(seconds.max(0) as u64)
    }

    fn view(&self) -> PodView {
        let view_of = |c: &Container| {
            let track = self.containers.get(&c.name);
            let waiting = track
                .and_then(|t| t.waiting.clone())
                .or_else(|| track.is_none_or(|t| t.state.is_none()).then(|| self.sandbox_error.clone()).flatten());
            ContainerView {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                container_id: track.and_then(|t| t.attempt).map(|a| format!("{}://{}/{}/{a}", self.runtime_scheme(), self.uid, c.name)),
                restart_count: track.and_then(|t| t.attempt).unwrap_or(0),
                state: track.and_then(|t| t.state.clone()),
                previous: track.and_then(|t| t.previous.clone()),
                ready: track.is_some_and(|t| t.ready),
                started: track.is_some_and(|t| t.started),
                waiting,
            }
        };
        let spec = self.pod.spec.as_ref();
        PodView {
            restart_policy: self.restart_policy(),
            init_containers: spec.into_iter().flat_map(|s| s.init_containers.iter().flatten()).map(view_of).collect(),
            containers: spec.into_iter().flat_map(|s| &s.containers).map(view_of).collect(),
            sandbox_ready: self.sandbox_ready,
            pod_ip: self.pod_ip.map(|ip| ip.to_string()),
            host_ip: self.ctx.node_ip.clone(),
            start_time: self.start_time,
        }
    }

    fn runtime_scheme(&self) -> String {
        self.ctx.runtime.version().split("://").next().unwrap_or("hawser").to_string()
    }

    /// Writes the pod's status if it differs from what was last written, or
    /// from what the API shows once it has caught up (someone else, such as
    /// the node lifecycle controller marking the pod not ready while this
    /// agent was away, wrote over it).
    async fn write_status(&mut self) {
        let previous = self.pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        let mut status = pod_status(&self.view(), previous.as_ref());
        status["qosClass"] = json!(spec::qos_class(&self.pod));
        let caught_up = self.written_over != self.pod.metadata.resource_version;
        let overwritten = caught_up && previous.as_ref().is_some_and(|api| !same_status(api, &status));
        if self.written.as_ref() == Some(&status) && !overwritten {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace());
        match api.patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await {
            Ok(_) => {
                self.written = Some(status);
                self.written_over = self.pod.metadata.resource_version.clone();
            }
            Err(kube::Error::Api(s)) if s.code == 404 => self.gone = true,
            Err(e) => {
                tracing::warn!(pod = self.name(), namespace = self.namespace(), error = %e, "writing pod status; retrying at the next sync")
            }
        }
    }

    /// Removes the sandbox and frees the pod's address (the containers are
    /// ended by the runtime).
    async fn release_sandbox(&mut self) {
        for track in self.containers.values_mut() {
            track.stop_probes();
        }
        if let Err(e) = self.ctx.runtime.remove_sandbox(&self.uid).await {
            tracing::warn!(pod = self.name(), error = %e, "removing the sandbox");
        }
        if let Err(e) = self.ctx.network.detach_pod(&self.uid).await {
            tracing::warn!(pod = self.name(), error = %e, "releasing the pod's network");
        }
        self.sandbox_ready = false;
    }

    /// Stops the pod gracefully, cleans up after it, and removes the pod
    /// object. None when done; a retry delay when the API delete failed.
    async fn terminate(&mut self) -> Option<Duration> {
        let grace = self.grace_period();
        let running: Vec<String> = self.containers.iter().filter(|(_, t)| t.running()).map(|(n, _)| n.clone()).collect();
        for name in &running {
            self.event(EventType::Normal, "Killing", &format!("Stopping container {name}"));
        }
        for track in self.containers.values_mut() {
            track.stop_probes();
        }
        let (runtime, uid) = (self.ctx.runtime.clone(), self.uid.clone());
        let stops = running.iter().map(|name| {
            let (runtime, uid) = (runtime.clone(), uid.clone());
            async move { (name, runtime.stop_container(&uid, name, grace).await) }
        });
        for (name, result) in futures::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!(pod = self.name(), container = name, error = %e, "stopping a container");
            }
        }
        self.release_sandbox().await;
        let (root, uid) = (self.ctx.volumes_root.clone(), self.uid.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || volumes::remove(&root, &uid)).await.unwrap_or(Ok(())) {
            tracing::warn!(pod = self.name(), error = %e, "removing the pod's volumes");
        }
        if self.gone {
            return None;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&self.name(), &params).await {
            Ok(_) => None,
            // Gone already, or a new pod of the same name (another UID).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => None,
            Err(e) => {
                tracing::warn!(pod = self.name(), error = %e, "removing the pod object; retrying");
                Some(Duration::from_secs(2))
            }
        }
    }
}

/// Whether the API's status says what `ours` says about what others read:
/// phase, addresses, each condition's status, each container's state,
/// readiness and restart count.
fn same_status(api: &Value, ours: &Value) -> bool {
    let conditions = |s: &Value| -> Vec<(String, String)> {
        let mut c: Vec<(String, String)> = s["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["type"] != "PodScheduled")
            .map(|c| (c["type"].to_string(), c["status"].to_string()))
            .collect();
        c.sort();
        c
    };
    let containers = |s: &Value| -> Vec<(String, String, String, String)> {
        ["initContainerStatuses", "containerStatuses"]
            .iter()
            .flat_map(|k| s[*k].as_array().cloned().unwrap_or_default())
            .map(|c| {
                let state = c["state"].as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_default();
                (c["name"].to_string(), state, c["ready"].to_string(), c["restartCount"].to_string())
            })
            .collect()
    };
    api["phase"] == ours["phase"]
        && api["podIP"] == ours["podIP"]
        && conditions(api) == conditions(ours)
        && containers(api) == containers(ours)
}

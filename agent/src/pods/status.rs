//! A pod's status as Kubernetes reports it, computed from what the pod
//! worker knows about each container: phase, conditions and
//! `containerStatuses` (state, lastState, ready, started, restartCount).
//!
//! Pure functions over plain data, so the rules (Kubernetes' `getPhase`
//! and the kubelet's condition generators) are tested without a runtime.

use crate::runtime::ContainerState;
use jiff::Timestamp;
use serde_json::{Value, json};
use std::time::SystemTime;

/// What the worker knows about one container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// `runtime://pod/container/attempt` of the current run, when one exists.
    pub container_id: Option<String>,
    pub restart_count: u32,
    /// The current run (None before the first start).
    pub state: Option<ContainerState>,
    /// The run before it (`lastState`).
    pub previous: Option<ContainerState>,
    /// The readiness probe's verdict (true when there is no probe and it runs).
    pub ready: bool,
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// Why it is not running when it is waiting: e.g. (`CrashLoopBackOff`,
    /// `back-off 20s restarting failed container=app pod=web_default(uid)`).
    pub waiting: Option<(String, String)>,
}

/// What the pod's status is computed from.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    /// `spec.restartPolicy`: Always, OnFailure or Never.
    pub restart_policy: String,
    pub init_containers: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    /// The sandbox exists and its network is wired.
    pub sandbox_ready: bool,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Option<SystemTime>,
}

fn time(t: SystemTime) -> Value {
    let ts = Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH);
    json!(Timestamp::from_second(ts.as_second()).unwrap_or(ts).to_string())
}

fn exited_ok(state: &Option<ContainerState>) -> bool {
    matches!(state, Some(ContainerState::Exited { exit_code: 0, .. }))
}

fn exited(state: &Option<ContainerState>) -> bool {
    matches!(state, Some(ContainerState::Exited { .. }))
}

/// Will this exited container be started again under `restart_policy`?
fn will_restart(state: &Option<ContainerState>, restart_policy: &str) -> bool {
    match state {
        Some(ContainerState::Exited { exit_code, .. }) => match restart_policy {
            "Always" => true,
            "OnFailure" => *exit_code != 0,
            _ => false,
        },
        _ => false,
    }
}

/// Kubernetes' pod phase.
pub fn phase(view: &PodView) -> &'static str {
    let init_done = view.init_containers.iter().all(|c| exited_ok(&c.state));
    if !init_done {
        let init_failed = view.init_containers.iter().any(|c| exited(&c.state) && !exited_ok(&c.state));
        return if init_failed && view.restart_policy == "Never" { "Failed" } else { "Pending" };
    }
    let (mut waiting, mut running, mut succeeded, mut failed) = (0, 0, 0, 0);
    for c in &view.containers {
        match &c.state {
            None => waiting += 1,
            Some(ContainerState::Running { .. }) => running += 1,
            Some(ContainerState::Exited { exit_code, .. }) => {
                if will_restart(&c.state, &view.restart_policy) {
                    // Restarting: counts as running, as Kubernetes does once it has run.
                    running += 1
                } else if *exit_code == 0 {
                    succeeded += 1
                } else {
                    failed += 1
                }
            }
        }
    }
    match () {
        _ if waiting > 0 => "Pending",
        _ if running > 0 => "Running",
        _ if failed > 0 => "Failed",
        _ if succeeded > 0 => "Succeeded",
        _ => "Pending",
    }
}

/// One entry of `containerStatuses` / `initContainerStatuses`.
pub fn container_status(c: &ContainerView) -> Value {
    let state = |s: &Option<ContainerState>, waiting: Option<&(String, String)>| match s {
        Some(ContainerState::Running { started_at, .. }) => json!({"running": {"startedAt": time(*started_at)}}),
        Some(ContainerState::Exited { exit_code, signal, reason, started_at, finished_at }) => {
            let mut t = json!({"exitCode": exit_code, "reason": reason.as_str(),
                               "startedAt": time(*started_at), "finishedAt": time(*finished_at)});
            if let Some(sig) = signal {
                t["signal"] = json!(sig);
            }
            if let Some(id) = &c.container_id {
                t["containerID"] = json!(id);
            }
            json!({"terminated": t})
        }
        None => match waiting {
            Some((reason, message)) => json!({"waiting": {"reason": reason, "message": message}}),
            None => json!({"waiting": {"reason": "ContainerCreating"}}),
        },
    };
    // A container waiting to be restarted shows `waiting`, its last run in lastState.
    let (current, last) = match (&c.waiting, &c.state) {
        (Some(w), Some(ContainerState::Exited { .. })) => (state(&None, Some(w)), state(&c.state, None)),
        _ => (state(&c.state, c.waiting.as_ref()), c.previous.as_ref().map(|p| state(&Some(p.clone()), None)).unwrap_or(json!({}))),
    };
    let running = matches!(c.state, Some(ContainerState::Running { .. })) && c.waiting.is_none();
    let mut status = json!({
        "name": c.name,
        "image": c.image,
        "imageID": "",
        "state": current,
        "lastState": last,
        "ready": running && c.ready,
        "started": running && c.started,
        "restartCount": c.restart_count,
    });
    if let Some(id) = &c.container_id {
        status["containerID"] = json!(id);
    }
    status
}

/// The pod's conditions the kubelet owns: (type, holds, reason when not).
pub fn conditions(view: &PodView) -> Vec<(&'static str, bool, Option<&'static str>)> {
    let initialized = view.init_containers.iter().all(|c| exited_ok(&c.state));
    let containers_ready = initialized
        && !view.containers.is_empty()
        && view.containers.iter().all(|c| matches!(c.state, Some(ContainerState::Running { .. })) && c.waiting.is_none() && c.ready);
    let not_ready_reason = if containers_ready { None } else { Some("ContainersNotReady") };
    vec![
        ("PodReadyToStartContainers", view.sandbox_ready, None),
        ("Initialized", initialized, if initialized { None } else { Some("ContainersNotInitialized") }),
        ("ContainersReady", containers_ready, not_ready_reason),
        ("Ready", containers_ready, not_ready_reason),
    ]
}

/// The `status` object for a status patch. `previous` is the pod's current
/// status, to keep each condition's lastTransitionTime while it holds.
pub fn pod_status(view: &PodView, previous: Option<&Value>) -> Value {
    let now = time(SystemTime::now());
    let prior = |type_: &str| -> Option<Value> { previous?.get("conditions")?.as_array()?.iter().find(|c| c["type"] == type_).cloned() };
    let mut written: Vec<Value> = prior("PodScheduled").into_iter().collect();
    for (type_, ok, reason) in conditions(view) {
        let status = if ok { "True" } else { "False" };
        let since = prior(type_).filter(|c| c["status"] == status).map(|c| c["lastTransitionTime"].clone()).unwrap_or(now.clone());
        let mut condition = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
        if let Some(reason) = reason {
            condition["reason"] = json!(reason);
        }
        written.push(condition);
    }
    let mut status = json!({
        "phase": phase(view),
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "conditions": written,
        "initContainerStatuses": view.init_containers.iter().map(container_status).collect::<Vec<_>>(),
        "containerStatuses": view.containers.iter().map(container_status).collect::<Vec<_>>(),
        "qosClass": previous.and_then(|p| p.get("qosClass")).cloned().unwrap_or(json!("BestEffort")),
    });
    if let Some(ip) = &view.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(t) = view.start_time {
        status["startTime"] = time(t);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ExitReason;
    use std::time::Duration;

    fn running() -> Option<ContainerState> {
        Some(ContainerState::Running { pid: 42, started_at: SystemTime::now() })
    }

    fn exited_with(code: i32, reason: ExitReason) -> Option<ContainerState> {
        let t = SystemTime::now();
        Some(ContainerState::Exited { exit_code: code, signal: None, reason, started_at: t - Duration::from_secs(1), finished_at: t })
    }

    fn container(state: Option<ContainerState>) -> ContainerView {
        ContainerView {
            name: "app".into(),
            image: "registry.example/app:1".into(),
            container_id: state.as_ref().map(|_| "hawser-process://uid/app/0".into()),
            restart_count: 0,
            state,
            previous: None,
            ready: true,
            started: true,
            waiting: None,
        }
    }

    fn pod(policy: &str, init: Vec<ContainerView>, containers: Vec<ContainerView>) -> PodView {
        PodView {
            restart_policy: policy.into(),
            init_containers: init,
            containers,
            sandbox_ready: true,
            pod_ip: Some("10.244.0.2".into()),
            host_ip: "198.51.100.2".into(),
            start_time: Some(SystemTime::now()),
        }
    }

    #[test]
    fn phase_follows_kubernetes_rules() {
        assert_eq!(phase(&pod("Always", vec![], vec![container(None)])), "Pending");
        assert_eq!(phase(&pod("Always", vec![], vec![container(running())])), "Running");
        assert_eq!(phase(&pod("Always", vec![container(running())], vec![container(None)])), "Pending", "init containers first");
        assert_eq!(phase(&pod("Never", vec![], vec![container(exited_with(0, ExitReason::Completed))])), "Succeeded");
        assert_eq!(phase(&pod("Never", vec![], vec![container(exited_with(1, ExitReason::Error))])), "Failed");
        assert_eq!(phase(&pod("OnFailure", vec![], vec![container(exited_with(1, ExitReason::Error))])), "Running", "restarting");
        assert_eq!(phase(&pod("OnFailure", vec![], vec![container(exited_with(0, ExitReason::Completed))])), "Succeeded");
        assert_eq!(phase(&pod("Always", vec![], vec![container(exited_with(0, ExitReason::Completed))])), "Running", "Always restarts");
        assert_eq!(phase(&pod("Never", vec![container(exited_with(2, ExitReason::Error))], vec![container(None)])), "Failed");
    }

    #[test]
    fn ready_needs_every_container_running_and_ready() {
        let mut unready = container(running());
        unready.ready = false;
        let ready_of = |v: &PodView| conditions(v).into_iter().find(|(t, _, _)| *t == "Ready").unwrap().1;
        assert!(ready_of(&pod("Always", vec![], vec![container(running())])));
        assert!(!ready_of(&pod("Always", vec![], vec![container(running()), unready])));
        assert!(!ready_of(&pod("Always", vec![], vec![container(None)])));
    }

    #[test]
    fn a_crash_looping_container_waits_with_its_last_run_in_last_state() {
        let mut c = container(exited_with(137, ExitReason::OOMKilled));
        c.restart_count = 3;
        c.waiting = Some(("CrashLoopBackOff".into(), "back-off 40s restarting failed container=app".into()));
        let s = container_status(&c);
        assert_eq!(s["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(s["lastState"]["terminated"]["reason"], "OOMKilled");
        assert_eq!(s["lastState"]["terminated"]["exitCode"], 137);
        assert_eq!(s["restartCount"], 3);
        assert_eq!(s["ready"], false);
    }

    #[test]
    fn status_keeps_transition_times_of_unchanged_conditions_and_decodes_as_a_pod_status() {
        let view = pod("Always", vec![], vec![container(running())]);
        let previous = json!({"conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"},
            {"type": "Initialized", "status": "False", "lastTransitionTime": "2026-01-01T00:00:01Z"}
        ]});
        let status = pod_status(&view, Some(&previous));
        let cond = |t: &str| status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == t).unwrap().clone();
        assert_eq!(cond("PodScheduled")["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(cond("Ready")["lastTransitionTime"], "2026-01-01T00:00:05Z", "unchanged: kept");
        assert_ne!(cond("Initialized")["lastTransitionTime"], "2026-01-01T00:00:01Z", "changed: now");
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.244.0.2");
        let _: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(status).unwrap();
    }
}

//! The process runtime against the real kernel: real supervisors, real
//! namespaces, real cgroups, real processes.
//!
//! Needs root (tests fail with the reason otherwise). Every test has its
//! own state directory and cgroup root (`common::Scratch`), cleaned up also
//! when the test fails.
//!
//! The supervisor is the crate's `hawser-pod-supervisor` binary, which cargo
//! builds fresh for these tests; `HAWSER_TEST_SUPERVISOR=target/debug/hawser`
//! runs them against the hidden `hawser pod-supervisor` instead.

use hawser_agent::runtime::process::{Cgroup, ProcessRuntime};
use hawser_agent::runtime::{ContainerState, ExitReason, Limits, Mount, Runtime, RuntimeError};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{HOSTS, MIB, RESOLV_CONF, Scratch, container, sandbox_spec, supervisor_exe};

async fn wait_exited(rt: &ProcessRuntime, uid: &str, name: &str) -> (u32, ContainerState) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (attempt, state) = rt.container_state(uid, name).await.unwrap_or_else(|e| panic!("state of {name}: {e}"));
        if matches!(state, ContainerState::Exited { .. }) {
            return (attempt, state);
        }
        assert!(Instant::now() < deadline, "container {name} still runs: {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn running_pid(state: &ContainerState) -> u32 {
    match state {
        ContainerState::Running { pid, .. } => *pid,
        other => panic!("not running: {other:?}"),
    }
}

/// (exit code, signal, reason) of an exited container.
fn exit(state: &ContainerState) -> (i32, Option<i32>, ExitReason) {
    match state {
        ContainerState::Exited { exit_code, signal, reason, started_at, finished_at } => {
            assert!(finished_at >= started_at, "{state:?}");
            (*exit_code, *signal, *reason)
        }
        other => panic!("not exited: {other:?}"),
    }
}

/// (stream, text) of every entry of a CRI-format log, checking the format.
fn log_entries(path: &Path) -> Vec<(String, String)> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (ts, stream, tag, text) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
            ts.parse::<jiff::Timestamp>().unwrap_or_else(|e| panic!("{ts:?} in {line:?} is not RFC 3339: {e}"));
            assert!(matches!(stream, "stdout" | "stderr") && tag == "F", "{line:?}");
            (stream.to_string(), text.to_string())
        })
        .collect()
}

fn stdout(path: &Path) -> Vec<String> {
    log_entries(path).into_iter().filter(|(s, _)| s == "stdout").map(|(_, t)| t).collect()
}

async fn wait_for_log(rt: &ProcessRuntime, uid: &str, name: &str, needle: &str) {
    let path = rt.log_path(uid, name, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&path).unwrap_or_default().contains(needle) {
        assert!(Instant::now() < deadline, "{needle:?} never showed in {}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with(['Z', 'X'])))
        .unwrap_or(false)
}

fn ns_link(pid: &str, ns: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap_or_else(|e| panic!("reading /proc/{pid}/ns/{ns}: {e}"))
}

/// Every pid in a cgroup2 directory and its children.
fn pids_in(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> =
        fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(pids_in(&entry.path()));
        }
    }
    pids
}

#[tokio::test]
async fn a_sandbox_has_its_own_namespaces_hostname_and_etc_files() {
    let fixture = Scratch::new();
    let rt = fixture.runtime();
    let host_resolv_conf = fs::read_to_string("/etc/resolv.conf").unwrap();

    let sandbox = rt.run_sandbox(&sandbox_spec("pod-ns")).await.unwrap();
    let supervisor = rt.supervisor_pid("pod-ns").expect("a live supervisor");
    assert_eq!(sandbox.netns, PathBuf::from(format!("/proc/{supervisor}/ns/net")));
    for ns in ["net", "uts", "ipc", "mnt"] {
        assert_ne!(ns_link(&supervisor.to_string(), ns), ns_link("self", ns), "the sandbox shares the {ns} namespace");
    }
    assert_eq!(rt.run_sandbox(&sandbox_spec("pod-ns")).await.unwrap(), sandbox, "running a sandbox again returns it");
    assert_eq!(rt.list_sandboxes().await.unwrap(), std::slice::from_ref(&sandbox));

    let script = "cat /etc/resolv.conf /etc/hosts; hostname; readlink /proc/self/ns/net /proc/self/ns/uts; cat /etc/hostname 2>/dev/null";
    let probe = container("probe", &["sh", "-c", script]);
    rt.start_container("pod-ns", &probe).await.unwrap();
    let (attempt, state) = wait_exited(&rt, "pod-ns", "probe").await;
    assert_eq!((attempt, exit(&state)), (0, (0, None, ExitReason::Completed)));
    let mut expected: Vec<String> = RESOLV_CONF.lines().chain(HOSTS.lines()).map(str::to_string).collect();
    expected.push("web-0".into());
    for ns in ["net", "uts"] {
        expected.push(ns_link(&supervisor.to_string(), ns).display().to_string());
    }
    if Path::new("/etc/hostname").exists() {
        expected.push("web-0".into()); // the pod's, bound over the host's
    }
    assert_eq!(stdout(&rt.log_path("pod-ns", "probe", 0)), expected);
    assert_eq!(fs::read_to_string("/etc/resolv.conf").unwrap(), host_resolv_conf, "the host's resolv.conf changed");
}

#[tokio::test]
async fn a_container_runs_its_argv_with_exactly_its_env_and_working_dir() {
    let fixture = Scratch::new();
    let rt = fixture.runtime();
    rt.run_sandbox(&sandbox_spec("pod-run")).await.unwrap();

    let env = [("GREETING", "hello world"), ("EMPTY", ""), ("PATH", "/usr/bin:/bin")];
    let mut printenv = container("env", &["env"]);
    printenv.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    rt.start_container("pod-run", &printenv).await.unwrap();
    let (_, state) = wait_exited(&rt, "pod-run", "env").await;
    assert_eq!(exit(&state), (0, None, ExitReason::Completed));
    let mut printed = stdout(&rt.log_path("pod-run", "env", 0));
    printed.sort();
    let mut expected: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    expected.sort();
    assert_eq!(printed, expected, "the environment is exactly the given one");

    let work = fixture.state.path().join("work dir");
    fs::create_dir(&work).unwrap();
    let mut failing = container("failing", &["sh", "-c", "pwd; echo oops >&2; exit 3"]);
    failing.working_dir = Some(work.clone());
    rt.start_container("pod-run", &failing).await.unwrap();
    let (_, state) = wait_exited(&rt, "pod-run", "failing").await;
    assert_eq!(exit(&state), (3, None, ExitReason::Error));
    let entries = log_entries(&rt.log_path("pod-run", "failing", 0));
    assert!(entries.contains(&("stdout".into(), work.display().to_string())), "{entries:?}");
    assert!(entries.contains(&("stderr".into(), "oops".into())), "{entries:?}");

    // Attempts: a retry of the latest attempt starts nothing; the next one runs again.
    rt.start_container("pod-run", &failing).await.unwrap();
    assert_eq!(wait_exited(&rt, "pod-run", "failing").await, (0, state.clone()));
    failing.attempt = 1;
    failing.argv = vec!["true".into()];
    rt.start_container("pod-run", &failing).await.unwrap();
    let (attempt, state) = wait_exited(&rt, "pod-run", "failing").await;
    assert_eq!((attempt, exit(&state)), (1, (0, None, ExitReason::Completed)));
    assert!(rt.log_path("pod-run", "failing", 1).exists());
    assert_eq!(log_entries(&rt.log_path("pod-run", "failing", 0)).len(), 2, "the previous attempt's log is kept");

    let mut lost = container("lost", &["true"]);
    lost.working_dir = Some(fixture.state.path().join("nowhere"));
    let err = rt.start_container("pod-run", &lost).await.unwrap_err();
    assert!(err.to_string().contains("nowhere does not exist"), "{err}");

    // A command that does not exist fails to start, and says so.
    let err = rt.start_container("pod-run", &container("missing", &["no-such-command-here"])).await.unwrap_err();
    assert!(err.to_string().contains("exec: \"no-such-command-here\": executable file not found in $PATH"), "{err}");
    let (_, state) = rt.container_state("pod-run", "missing").await.unwrap();
    assert_eq!(exit(&state), (128, None, ExitReason::Error));
    assert!(rt.start_container("pod-run", &container("missing", &["no-such-command-here"])).await.is_err(), "a retry fails again");
    assert!(matches!(rt.container_state("pod-run", "never").await, Err(RuntimeError::NoContainer { .. })));
}

#[tokio::test]
async fn stop_sends_sigterm_then_sigkill_after_the_grace_period() {
    let fixture = Scratch::new();
    let rt = fixture.runtime();
    rt.run_sandbox(&sandbox_spec("pod-stop")).await.unwrap();

    rt.start_container("pod-stop", &container("stubborn", &["sh", "-c", "trap '' TERM; echo ready; sleep 100"])).await.unwrap();
    wait_for_log(&rt, "pod-stop", "stubborn", "ready").await;
    let started = Instant::now();
    rt.stop_container("pod-stop", "stubborn", Duration::from_secs(1)).await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(6), "stopping took {took:?}");
    let (_, state) = rt.container_state("pod-stop", "stubborn").await.unwrap();
    assert_eq!(exit(&state), (137, Some(9), ExitReason::Error), "SIGKILLed after the grace period");

    rt.start_container("pod-stop", &container("polite", &["sleep", "100"])).await.unwrap();
    let (_, state) = rt.container_state("pod-stop", "polite").await.unwrap();
    assert!(alive(running_pid(&state)));
    let started = Instant::now();
    rt.stop_container("pod-stop", "polite", Duration::from_secs(30)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "stopping took {:?}", started.elapsed());
    let (_, after) = rt.container_state("pod-stop", "polite").await.unwrap();
    assert_eq!(exit(&after), (143, Some(15), ExitReason::Error), "ended by SIGTERM");
    assert!(!alive(running_pid(&state)));

    rt.stop_container("pod-stop", "polite", Duration::from_secs(1)).await.expect("stopping a stopped container succeeds");
    rt.stop_container("pod-stop", "ghost", Duration::from_secs(1)).await.expect("stopping a container that never ran succeeds");
}

#[tokio::test]
async fn limits_are_written_and_a_container_over_its_memory_limit_is_oom_killed() {
    let fixture = Scratch::new();
    let rt = fixture.runtime();
    let mut spec = sandbox_spec("pod-limits");
    spec.limits = Limits { cpu_millis: Some(1000), memory_bytes: Some(256 * MIB) };
    rt.run_sandbox(&spec).await.unwrap();
    let read = |path: PathBuf| fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())).trim().to_string();
    // (cpu limit, memory limit) as the kernel shows them, v2 or hybrid.
    let limits = |cgroup: &Cgroup| match &cgroup.v1 {
        None => (read(cgroup.unified.join("cpu.max")), read(cgroup.unified.join("memory.max"))),
        Some(v1) => (
            format!("{} {}", read(v1.cpu.join("cpu.cfs_quota_us")), read(v1.cpu.join("cpu.cfs_period_us"))),
            read(v1.memory.join("memory.limit_in_bytes")),
        ),
    };
    assert_eq!(limits(&rt.pod_cgroup("pod-limits")), ("100000 100000".to_string(), (256 * MIB).to_string()));

    let mut capped = container("capped", &["sleep", "100"]);
    capped.limits = Limits { cpu_millis: Some(250), memory_bytes: Some(64 * MIB) };
    rt.start_container("pod-limits", &capped).await.unwrap();
    let pid = running_pid(&rt.container_state("pod-limits", "capped").await.unwrap().1);
    let cgroup = rt.container_cgroup("pod-limits", "capped");
    assert_eq!(limits(&cgroup), ("25000 100000".to_string(), (64 * MIB).to_string()));
    let mut procs = cgroup.procs_files();
    procs.retain(|file| !read(file.clone()).lines().any(|line| line == pid.to_string()));
    assert!(procs.is_empty(), "pid {pid} is not in {procs:?}");
    // The OOM killer should pick a container, never the supervisor.
    let supervisor = rt.supervisor_pid("pod-limits").unwrap();
    // (Some sandboxed kernels refuse negative values; the supervisor logs that and goes on.)
    let refused =
        fs::read_to_string(rt.pod_dir("pod-limits").join("supervisor.log")).unwrap().contains("setting the supervisor's oom_score_adj");
    assert_eq!(read(format!("/proc/{supervisor}/oom_score_adj").into()), if refused { "0" } else { "-998" });
    assert_eq!(read(format!("/proc/{pid}/oom_score_adj").into()), "0");
    rt.stop_container("pod-limits", "capped", Duration::from_secs(5)).await.unwrap();
    assert!(!cgroup.exists(), "an ended container's cgroup is removed");

    let mut hog = container("hog", &["sh", "-c", "echo start; x=$(head -c 300M /dev/zero | tr '\\0' a); echo survived"]);
    hog.limits = Limits { cpu_millis: None, memory_bytes: Some(50 * MIB) };
    rt.start_container("pod-limits", &hog).await.unwrap();
    let (_, state) = wait_exited(&rt, "pod-limits", "hog").await;
    let (code, signal, reason) = exit(&state);
    assert_eq!(reason, ExitReason::OOMKilled, "exit {code}, signal {signal:?}");
    assert_eq!(stdout(&rt.log_path("pod-limits", "hog", 0)), ["start"]);
    assert!(rt.supervisor_pid("pod-limits").is_some(), "the supervisor survived its pod's OOM");
}

#[tokio::test]
async fn a_restarted_agent_finds_its_pods_still_running() {
    let fixture = Scratch::new();
    let rt = fixture.runtime();
    let sandbox = rt.run_sandbox(&sandbox_spec("pod-restart")).await.unwrap();
    rt.start_container("pod-restart", &container("sleeper", &["sleep", "300"])).await.unwrap();
    let before = rt.container_state("pod-restart", "sleeper").await.unwrap();
    let (pid, supervisor) = (running_pid(&before.1), rt.supervisor_pid("pod-restart").unwrap());
    // Its own session: a signal to the agent's process group, or the
    // agent's terminal going away, does not reach it.
    assert_eq!(
        rustix::process::getsid(rustix::process::Pid::from_raw(supervisor as i32)).unwrap().as_raw_nonzero().get() as u32,
        supervisor
    );
    drop(rt);

    let rt = fixture.runtime();
    assert_eq!(rt.list_sandboxes().await.unwrap(), std::slice::from_ref(&sandbox));
    assert_eq!(rt.container_state("pod-restart", "sleeper").await.unwrap(), before, "same attempt, same pid, same start time");
    assert!(alive(pid) && alive(supervisor));
    assert_eq!(rt.run_sandbox(&sandbox_spec("pod-restart")).await.unwrap(), sandbox, "the sandbox is reused, not recreated");
    assert_eq!(rt.supervisor_pid("pod-restart"), Some(supervisor));
    rt.stop_container("pod-restart", "sleeper", Duration::from_secs(5)).await.unwrap();
    let (_, state) = rt.container_state("pod-restart", "sleeper").await.unwrap();
    assert_eq!(exit(&state).1, Some(15));
}

#[tokio::test]
async fn remove_sandbox_leaves_no_process_cgroup_or_file_behind() {
    let fixture = Scratch::new();
    let rt = fixture.runtime();
    rt.run_sandbox(&sandbox_spec("pod-rm")).await.unwrap();
    rt.start_container("pod-rm", &container("a", &["sleep", "300"])).await.unwrap();
    // Ignores SIGTERM and leaves a child of its own running in the background.
    rt.start_container("pod-rm", &container("b", &["sh", "-c", "trap '' TERM; sleep 300 & echo ready; wait"])).await.unwrap();
    wait_for_log(&rt, "pod-rm", "b", "ready").await;
    let pod_cgroup = rt.pod_cgroup("pod-rm");
    let pids = pids_in(&pod_cgroup.unified);
    assert!(pids.len() >= 4, "supervisor, a, b and b's child: {pids:?}");
    assert!(pids.contains(&rt.supervisor_pid("pod-rm").unwrap()));

    let started = Instant::now();
    rt.remove_sandbox("pod-rm").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "removing took {:?}", started.elapsed());
    let survivors: Vec<u32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
    assert!(survivors.is_empty(), "still alive: {survivors:?}");
    assert!(!pod_cgroup.exists(), "cgroup {pod_cgroup:?} is left");
    assert!(!rt.pod_dir("pod-rm").exists(), "the pod dir is left");
    assert_eq!(rt.list_sandboxes().await.unwrap(), []);
    assert!(matches!(rt.container_state("pod-rm", "a").await, Err(RuntimeError::NoSandbox { .. })));
    rt.remove_sandbox("pod-rm").await.expect("removing a missing sandbox succeeds");
    rt.stop_container("pod-rm", "a", Duration::from_secs(1)).await.expect("nothing to stop");
}

#[tokio::test]
async fn volumes_are_bind_mounted_into_the_containers_view_only() {
    let fixture = Scratch::new();
    let rt = fixture.runtime();
    rt.run_sandbox(&sandbox_spec("pod-vol")).await.unwrap();
    let source = fixture.state.path().join("volume");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("greeting"), "hi from the host\n").unwrap();
    let target = fixture.state.path().join("mnt/data");
    let mount = |read_only| Mount { host_path: source.clone(), container_path: target.clone(), read_only };
    let script = "cd \"$0\" && cat greeting && (echo written > new) 2>/dev/null || echo read-only";

    let mut reader = container("reader", &["sh", "-c", script, &target.display().to_string()]);
    reader.mounts = vec![mount(true)];
    rt.start_container("pod-vol", &reader).await.unwrap();
    wait_exited(&rt, "pod-vol", "reader").await;
    assert_eq!(stdout(&rt.log_path("pod-vol", "reader", 0)), ["hi from the host", "read-only"]);
    assert!(!source.join("new").exists());
    assert!(target.is_dir() && fs::read_dir(&target).unwrap().next().is_none(), "the mount is the container's alone");

    let mut writer = container("writer", &["sh", "-c", script, &target.display().to_string()]);
    writer.mounts = vec![mount(false)];
    rt.start_container("pod-vol", &writer).await.unwrap();
    let (_, state) = wait_exited(&rt, "pod-vol", "writer").await;
    assert_eq!(exit(&state), (0, None, ExitReason::Completed));
    assert_eq!(fs::read_to_string(source.join("new")).unwrap(), "written\n");
}

/// The agent that `a_pod_outlives_kill_9_of_its_agent` runs as a process of
/// its own (this test binary again) and then `kill -9`s; does nothing when
/// run any other way.
#[tokio::test]
#[ignore = "a helper process of a_pod_outlives_kill_9_of_its_agent"]
async fn agent_process_to_be_killed() {
    let (Some(state), Some(cgroup)) = (std::env::var_os("HAWSER_TEST_AGENT_STATE"), std::env::var("HAWSER_TEST_AGENT_CGROUP").ok()) else {
        return;
    };
    let rt = ProcessRuntime::new(state.into(), serde_json::from_str(&cgroup).unwrap(), supervisor_exe());
    rt.run_sandbox(&sandbox_spec("pod-kill")).await.unwrap();
    rt.start_container("pod-kill", &container("sleeper", &["sleep", "300"])).await.unwrap();
    println!("AGENT READY");
    tokio::time::sleep(Duration::from_secs(300)).await;
}

#[tokio::test]
async fn a_pod_outlives_kill_9_of_its_agent() {
    use tokio::io::AsyncBufReadExt;
    let fixture = Scratch::new();
    let mut agent = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "agent_process_to_be_killed", "--ignored", "--nocapture"])
        .env("HAWSER_TEST_AGENT_STATE", fixture.state.path())
        .env("HAWSER_TEST_AGENT_CGROUP", serde_json::to_string(&fixture.cgroup).unwrap())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(agent.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "AGENT READY" {
                return true;
            }
        }
        false
    });
    assert!(ready.await.expect("the agent process did not get ready in 30s"), "the agent process ended before it was ready");
    let rt = fixture.runtime();
    let before = rt.container_state("pod-kill", "sleeper").await.unwrap();
    let (pid, supervisor) = (running_pid(&before.1), rt.supervisor_pid("pod-kill").unwrap());

    let agent_pid = agent.id().unwrap();
    agent.kill().await.unwrap(); // SIGKILL, and reaped
    assert!(!alive(agent_pid));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let rt = fixture.runtime();
    assert_eq!(rt.list_sandboxes().await.unwrap().len(), 1);
    assert_eq!(rt.supervisor_pid("pod-kill"), Some(supervisor));
    assert_eq!(rt.container_state("pod-kill", "sleeper").await.unwrap(), before, "same run, same pid");
    assert!(alive(pid) && alive(supervisor));
    rt.remove_sandbox("pod-kill").await.unwrap();
    assert!(!alive(pid) && !alive(supervisor));
}

//! The docker runtime against a real Docker engine: a dockerd of each
//! test's own, images built here, nothing pulled.
//!
//! The engine and the static binaries come from [`hawser_tests::docker`]
//! (shared with the end-to-end pod tests run on the docker runtime): each
//! test starts its own [`Dockerd`] and fails, saying why, when it cannot.
//! The images are `FROM scratch` around one static binary each: the test
//! server, and `hawser-pause` (crate `pause/`) for sandboxes, as the agent
//! builds it from `--pause-binary`.

use hawser_agent::runtime::docker::DockerRuntime;
use hawser_agent::runtime::{ContainerSpec, ContainerState, ExitReason, Limits, Runtime, RuntimeError, Sandbox, SandboxSpec};
use hawser_tests::docker::{Dockerd, PAUSE_IMAGE, TEST_SERVER_IMAGE, TEST_SERVER_PATH, static_pause, static_test_server};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;

const MIB: u64 = 1024 * 1024;
const RESOLV_CONF: &str = "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n10.244.0.7\tweb-0\n";
/// Where the binary is in the test server's image.
const SERVER: &str = TEST_SERVER_PATH;
/// The test server's default address, on the pod's loopback.
const LOCAL: &str = "http://127.0.0.1:8080";
const WAIT: Duration = Duration::from_secs(60);

/// One test's engine, images, state directory and runtime. Field order is
/// drop order: the runtime's log tasks end before dockerd stops.
struct Fixture {
    runtime: DockerRuntime,
    dockerd: Dockerd,
    state: TempDir,
}

impl Fixture {
    async fn new(test: &'static str) -> Self {
        let (dockerd, server, pause) = tokio::task::spawn_blocking(move || {
            let dockerd = Dockerd::start(test);
            (dockerd, static_test_server(), static_pause())
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        dockerd.build_image(TEST_SERVER_IMAGE, &server).await;
        dockerd.build_image(PAUSE_IMAGE, &pause).await;
        let state = tempfile::Builder::new().prefix("hawser-docker-rt-").tempdir().expect("creating a state dir");
        let runtime = dockerd.runtime(state.path()).await;
        Self { runtime, dockerd, state }
    }

    /// Another runtime over the same engine and state: a restarted agent.
    async fn restarted(&self) -> DockerRuntime {
        self.dockerd.runtime(self.state.path()).await
    }
}

fn sandbox_spec(uid: &str) -> SandboxSpec {
    SandboxSpec {
        pod_uid: uid.to_string(),
        namespace: "default".into(),
        name: "web-0".into(),
        hostname: "web-0".into(),
        resolv_conf: RESOLV_CONF.into(),
        hosts: HOSTS.into(),
        limits: Limits::default(),
    }
}

fn container(name: &str, attempt: u32, argv: &[&str]) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        attempt,
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        working_dir: None,
        image: TEST_SERVER_IMAGE.into(),
        limits: Limits::default(),
        mounts: Vec::new(),
    }
}

async fn wait_state(rt: &DockerRuntime, uid: &str, name: &str, done: impl Fn(&ContainerState) -> bool) -> (u32, ContainerState) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (attempt, state) = rt.container_state(uid, name).await.unwrap_or_else(|e| panic!("state of {name}: {e}"));
        if done(&state) {
            return (attempt, state);
        }
        assert!(Instant::now() < deadline, "container {name} of {uid} is still {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_exited(rt: &DockerRuntime, uid: &str, name: &str) -> (u32, ContainerState) {
    wait_state(rt, uid, name, |s| matches!(s, ContainerState::Exited { .. })).await
}

async fn wait_running(rt: &DockerRuntime, uid: &str, name: &str) -> u32 {
    match wait_state(rt, uid, name, |s| matches!(s, ContainerState::Running { .. })).await.1 {
        ContainerState::Running { pid, .. } => pid,
        _ => unreachable!(),
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

async fn wait_for_log(path: &Path, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !fs::read_to_string(path).is_ok_and(|text| text.contains(needle)) {
        assert!(Instant::now() < deadline, "{} never got {needle:?}: {:?}", path.display(), fs::read_to_string(path));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server in container `name` that answers.
async fn start_server(rt: &DockerRuntime, uid: &str, spec: &ContainerSpec) -> u32 {
    rt.start_container(uid, spec).await.unwrap_or_else(|e| panic!("starting {}: {e}", spec.name));
    let pid = wait_running(rt, uid, &spec.name).await;
    wait_for_log(&rt.log_path(uid, &spec.name, spec.attempt), "serving on").await;
    pid
}

/// Runs `argv` in container `name`: (exit code, stdout, stderr).
async fn exec(rt: &DockerRuntime, uid: &str, name: &str, argv: &[&str], stdin: bool) -> (i32, String, String) {
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    let run = async {
        let session = rt.exec(uid, name, &argv, stdin).await.unwrap_or_else(|e| panic!("exec {argv:?}: {e}"));
        assert_eq!(session.stdin.is_some(), stdin);
        drop(session.stdin);
        let (mut stdout, mut stderr) = (session.stdout, session.stderr);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        a.and(b).expect("reading an exec's output");
        let code = session.exit.await.unwrap_or_else(|e| panic!("exit of {argv:?}: {e}"));
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    };
    tokio::time::timeout(WAIT, run).await.unwrap_or_else(|_| panic!("exec {argv:?} did not end within {WAIT:?}"))
}

/// Has the test server in container `name` exit with `code`. The exec's
/// own result is a race: the kernel SIGKILLs it with the rest of the PID
/// namespace when the server (its PID 1) exits, maybe before it printed.
async fn ask_to_exit(rt: &DockerRuntime, uid: &str, name: &str, code: i32) {
    let (exec_code, body, _) = exec(rt, uid, name, &[SERVER, "fetch", &format!("{LOCAL}/exit?code={code}")], false).await;
    assert!(exec_code == 0 || exec_code == 137, "asking {name} to exit: {exec_code} {body:?}");
}

fn ns_inode(path: impl AsRef<Path>) -> u64 {
    let path = path.as_ref();
    fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).ino()
}

fn pause_pid(sandbox: &Sandbox) -> String {
    sandbox.netns.parent().unwrap().parent().unwrap().file_name().unwrap().to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_sandbox_holds_a_fresh_network_namespace_its_containers_join() {
    let f = Fixture::new("netns").await;
    let rt = &f.runtime;
    let uid = "netns-pod";
    assert!(rt.version().starts_with("docker://"), "{}", rt.version());
    let sandbox = rt.run_sandbox(&sandbox_spec(uid)).await.expect("run_sandbox");
    assert!(sandbox.netns.starts_with("/proc") && sandbox.netns.ends_with("ns/net"), "{sandbox:?}");
    let pod_net = ns_inode(&sandbox.netns);
    assert_ne!(pod_net, ns_inode("/proc/self/ns/net"), "the pod must not be in the host's network namespace");
    assert_eq!(rt.run_sandbox(&sandbox_spec(uid)).await.unwrap(), sandbox, "run_sandbox of a running sandbox returns it");

    assert!(matches!(rt.container_state(uid, "web").await, Err(RuntimeError::NoContainer { .. })));
    assert!(matches!(rt.container_state("no-such-pod", "web").await, Err(RuntimeError::NoSandbox { .. })));
    assert!(matches!(rt.start_container("no-such-pod", &container("web", 0, &[SERVER])).await, Err(RuntimeError::NoSandbox { .. })));

    let pid = start_server(rt, uid, &container("web", 0, &[SERVER])).await;
    let pause = pause_pid(&sandbox);
    assert_eq!(ns_inode(format!("/proc/{pid}/ns/net")), pod_net, "the container joins the pod's network namespace");
    assert_eq!(ns_inode(format!("/proc/{pid}/ns/ipc")), ns_inode(format!("/proc/{pause}/ns/ipc")), "and its IPC namespace");
    assert_ne!(ns_inode(format!("/proc/{pid}/ns/pid")), ns_inode(format!("/proc/{pause}/ns/pid")), "but has its own PIDs");
    // The loopback of the pod's namespace is up, with no help from the agent.
    let (code, hostname, _) =
        exec(rt, uid, "web", &[SERVER, "fetch", &format!("{LOCAL}/file?path=/proc/sys/kernel/hostname")], false).await;
    assert_eq!((code, hostname.as_str()), (0, "web-0\n"), "the pod's hostname");
    let (_, etc_hostname, _) = exec(rt, uid, "web", &[SERVER, "fetch", &format!("{LOCAL}/file?path=/etc/hostname")], false).await;
    assert_eq!(etc_hostname, "web-0\n");
    assert_eq!(rt.run_sandbox(&sandbox_spec(uid)).await.unwrap(), sandbox, "still the same sandbox with a container in it");

    let mut missing = container("other", 0, &[SERVER]);
    missing.image = "no-such-image:1".into();
    let err = rt.start_container(uid, &missing).await.expect_err("an image that is not there");
    assert!(err.to_string().contains("no-such-image:1") && err.to_string().contains("never pulls"), "{err}");
    rt.remove_sandbox(uid).await.unwrap();
}

#[tokio::test]
async fn limits_apply_and_a_container_over_its_memory_limit_is_oom_killed() {
    let f = Fixture::new("oom").await;
    let rt = &f.runtime;
    let uid = "oom-pod";
    rt.run_sandbox(&sandbox_spec(uid)).await.unwrap();
    let mut hog = container("hog", 0, &[SERVER, "--alloc-mb", "200"]);
    hog.limits = Limits { cpu_millis: Some(250), memory_bytes: Some(64 * MIB) };
    rt.start_container(uid, &hog).await.unwrap();
    let (attempt, state) = wait_exited(rt, uid, "hog").await;
    assert_eq!(attempt, 0);
    assert_eq!(exit(&state), (137, None, ExitReason::OOMKilled), "{state:?}");

    let containers = f.dockerd.pod_containers(uid);
    let hog = containers.iter().find(|c| c["Labels"]["io.hawser.container-name"] == "hog").expect("the hog container");
    let host = &f.dockerd.get_json(&format!("/containers/{}/json", hog["Id"].as_str().unwrap()))["HostConfig"];
    let limits = (host["Memory"].as_i64(), host["MemorySwap"].as_i64(), host["NanoCpus"].as_i64());
    assert_eq!(limits, (Some(64 << 20), Some(64 << 20), Some(250_000_000)));
    rt.remove_sandbox(uid).await.unwrap();
}

/// The test server has no SIGTERM handler and is PID 1 of its PID
/// namespace, so the kernel drops the SIGTERM: only the SIGKILL after the
/// grace period ends it.
#[tokio::test]
async fn stop_sends_sigkill_only_after_the_grace_period() {
    let f = Fixture::new("stop").await;
    let rt = &f.runtime;
    let uid = "stop-pod";
    rt.run_sandbox(&sandbox_spec(uid)).await.unwrap();
    start_server(rt, uid, &container("web", 0, &[SERVER])).await;
    let started = Instant::now();
    rt.stop_container(uid, "web", Duration::from_millis(1500)).await.expect("stop");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(20), "stop took {took:?}");
    let (_, state) = rt.container_state(uid, "web").await.unwrap();
    assert_eq!(exit(&state), (137, None, ExitReason::Error), "{state:?}");

    let again = Instant::now();
    rt.stop_container(uid, "web", Duration::from_secs(30)).await.expect("stopping a stopped container");
    assert!(again.elapsed() < Duration::from_secs(5));
    rt.stop_container(uid, "never-ran", Duration::from_secs(1)).await.expect("stopping a container that never ran");
    rt.stop_container("no-such-pod", "web", Duration::from_secs(1)).await.expect("stopping in a pod that does not exist");
    rt.remove_sandbox(uid).await.unwrap();
}

#[tokio::test]
async fn restarts_are_numbered_and_earlier_logs_stay_readable() {
    let f = Fixture::new("restart").await;
    let rt = &f.runtime;
    let uid = "restart-pod";
    rt.run_sandbox(&sandbox_spec(uid)).await.unwrap();

    rt.start_container(uid, &container("web", 0, &[SERVER, "--bogus"])).await.unwrap();
    let (attempt, state) = wait_exited(rt, uid, "web").await;
    assert_eq!((attempt, exit(&state)), (0, (2, None, ExitReason::Error)), "{state:?}");
    // Once a run reads as exited, its log is complete.
    let first = log_entries(&rt.log_path(uid, "web", 0));
    assert_eq!(first, [("stderr".to_string(), "hawser-test-server: unknown argument \"--bogus\"".to_string())]);
    rt.start_container(uid, &container("web", 0, &[SERVER, "--bogus"])).await.expect("a retry of a started attempt starts nothing");
    assert_eq!(rt.container_state(uid, "web").await.unwrap(), (0, state));

    start_server(rt, uid, &container("web", 1, &[SERVER])).await;
    assert!(matches!(rt.container_state(uid, "web").await.unwrap(), (1, ContainerState::Running { .. })));
    let err = rt.start_container(uid, &container("web", 2, &[SERVER])).await.expect_err("attempt 1 still runs");
    assert!(err.to_string().contains("still running"), "{err}");
    assert_eq!(log_entries(&rt.log_path(uid, "web", 0)), first, "the previous run's log is kept");
    assert_eq!(
        log_entries(&rt.log_path(uid, "web", 1)),
        [("stderr".to_string(), "hawser-test-server: serving on 0.0.0.0:8080".to_string())]
    );

    ask_to_exit(rt, uid, "web", 0).await;
    let (attempt, state) = wait_exited(rt, uid, "web").await;
    assert_eq!((attempt, exit(&state)), (1, (0, None, ExitReason::Completed)));
    let err = rt.start_container(uid, &container("web", 0, &[SERVER])).await.expect_err("attempt 1 has run");
    assert!(err.to_string().contains("already run"), "{err}");

    // A run whose start fails reads as exited with an error; a retry of it is refused.
    let err = rt.start_container(uid, &container("web", 2, &["/no-such-binary"])).await.expect_err("no such binary");
    assert!(err.to_string().contains("attempt 2"), "{err}");
    let (attempt, state) = rt.container_state(uid, "web").await.unwrap();
    let (code, _, reason) = exit(&state);
    assert!(attempt == 2 && code != 0 && reason == ExitReason::Error, "{state:?}");
    let err = rt.start_container(uid, &container("web", 2, &["/no-such-binary"])).await.expect_err("a failed start is not retried");
    assert!(err.to_string().contains("failed to start"), "{err}");

    // Runs older than the previous one are removed from Docker; their logs stay.
    start_server(rt, uid, &container("web", 3, &[SERVER])).await;
    let mut attempts: Vec<String> =
        f.dockerd.pod_containers(uid).iter().filter_map(|c| c["Labels"]["io.hawser.attempt"].as_str().map(String::from)).collect();
    attempts.sort();
    assert_eq!(attempts, ["2", "3"]);
    for attempt in 0..=3 {
        assert!(rt.log_path(uid, "web", attempt).exists(), "log of attempt {attempt}");
    }
    rt.remove_sandbox(uid).await.unwrap();
}

#[tokio::test]
async fn exec_runs_in_the_container_and_sees_the_pods_files() {
    let f = Fixture::new("exec").await;
    let rt = &f.runtime;
    let uid = "exec-pod";
    rt.run_sandbox(&sandbox_spec(uid)).await.unwrap();
    let mut web = container("web", 0, &[SERVER]);
    web.env = vec![("GREETING".into(), "hello".into())];
    start_server(rt, uid, &web).await;

    let fetch = |path: &str| format!("{LOCAL}{path}");
    let (code, resolv, stderr) = exec(rt, uid, "web", &[SERVER, "fetch", &fetch("/file?path=/etc/resolv.conf")], false).await;
    assert_eq!((code, resolv.as_str(), stderr.as_str()), (0, RESOLV_CONF, ""));
    let (_, hosts, _) = exec(rt, uid, "web", &[SERVER, "fetch", &fetch("/file?path=/etc/hosts")], false).await;
    assert_eq!(hosts, HOSTS);
    let (_, greeting, _) = exec(rt, uid, "web", &[SERVER, "fetch", &fetch("/env/GREETING")], true).await;
    assert_eq!(greeting, "hello\n", "the container's environment (and an exec with stdin ends too)");

    let (code, body, _) = exec(rt, uid, "web", &[SERVER, "fetch", &fetch("/file?path=/no/such/file")], false).await;
    assert_eq!(code, 1, "a non-2xx answer: {body}");
    let (code, _, stderr) = exec(rt, uid, "web", &[SERVER, "fetch", "http://127.0.0.1:9/"], false).await;
    assert_eq!(code, 2, "nothing listening there: {stderr}");
    assert!(stderr.contains("hawser-test-server: fetch"), "{stderr}");
    match rt.exec(uid, "web", &["/no-such-binary".to_string()], false).await {
        Err(e) => assert!(e.to_string().contains("no-such-binary"), "{e}"),
        Ok(session) => {
            let code = tokio::time::timeout(WAIT, session.exit).await.unwrap().unwrap();
            assert_ne!(code, 0);
        }
    }

    assert!(matches!(rt.exec(uid, "nope", &["x".to_string()], false).await, Err(RuntimeError::NoContainer { .. })));
    assert!(matches!(rt.exec("no-such-pod", "web", &["x".to_string()], false).await, Err(RuntimeError::NoSandbox { .. })));
    rt.stop_container(uid, "web", Duration::ZERO).await.unwrap();
    let err = rt.exec(uid, "web", &[SERVER.to_string()], false).await.err().expect("exec in a stopped container");
    assert!(err.to_string().contains("exec"), "{err}");
    rt.remove_sandbox(uid).await.unwrap();
}

#[tokio::test]
async fn remove_sandbox_leaves_no_container_or_file_behind() {
    let f = Fixture::new("remove").await;
    let rt = &f.runtime;
    let uid = "remove-pod";
    let sandbox = rt.run_sandbox(&sandbox_spec(uid)).await.unwrap();
    start_server(rt, uid, &container("web", 0, &[SERVER])).await;
    rt.start_container(uid, &container("oops", 0, &[SERVER, "--bogus"])).await.unwrap();
    wait_exited(rt, uid, "oops").await;
    assert_eq!(f.dockerd.pod_containers(uid).len(), 3);

    rt.remove_sandbox(uid).await.expect("remove_sandbox");
    assert!(f.dockerd.pod_containers(uid).is_empty(), "every container of the pod is gone");
    assert!(!rt.pod_dir(uid).exists(), "its files are gone");
    assert!(matches!(rt.container_state(uid, "web").await, Err(RuntimeError::NoSandbox { .. })));
    assert!(rt.list_sandboxes().await.unwrap().is_empty());
    let deadline = Instant::now() + WAIT;
    while sandbox.netns.exists() {
        assert!(Instant::now() < deadline, "the pause process is still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rt.remove_sandbox(uid).await.expect("removing a removed sandbox");

    // The pod can come back afterwards, in a new namespace.
    let again = rt.run_sandbox(&sandbox_spec(uid)).await.unwrap();
    assert_ne!(again, sandbox);
    rt.remove_sandbox(uid).await.unwrap();
}

#[tokio::test]
async fn a_restarted_agent_finds_its_sandboxes_and_keeps_the_logs_going() {
    let f = Fixture::new("restart-agent").await;
    let uid = "survivor";
    let first = f.restarted().await;
    let sandbox = first.run_sandbox(&sandbox_spec(uid)).await.unwrap();
    // Whether the first runtime got to log the start line or not, the log
    // ends up with it exactly once.
    first.start_container(uid, &container("web", 0, &[SERVER])).await.unwrap();
    drop(first);

    let rt = f.restarted().await;
    assert_eq!(rt.list_sandboxes().await.unwrap(), std::slice::from_ref(&sandbox));
    assert_eq!(rt.run_sandbox(&sandbox_spec(uid)).await.unwrap(), sandbox, "the same sandbox, not a new one");
    assert!(matches!(rt.container_state(uid, "web").await.unwrap(), (0, ContainerState::Running { .. })));
    let log = rt.log_path(uid, "web", 0);
    wait_for_log(&log, "serving on").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(log_entries(&log), [("stderr".to_string(), "hawser-test-server: serving on 0.0.0.0:8080".to_string())]);

    // An agent with other state shares the engine but not the pods.
    let other_state = tempfile::tempdir().unwrap();
    let other = f.dockerd.runtime(other_state.path()).await;
    assert!(other.list_sandboxes().await.unwrap().is_empty());
    assert!(matches!(other.container_state(uid, "web").await, Err(RuntimeError::NoSandbox { .. })));

    // Exited while no agent watched: its end and its log are there afterwards.
    ask_to_exit(&rt, uid, "web", 3).await;
    drop(rt);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rt = f.restarted().await;
    let (attempt, state) = wait_exited(&rt, uid, "web").await;
    assert_eq!((attempt, exit(&state)), (0, (3, None, ExitReason::Error)));
    assert_eq!(log_entries(&log).len(), 1);
    rt.remove_sandbox(uid).await.unwrap();
}

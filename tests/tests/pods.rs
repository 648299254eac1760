//! Real pods on real agents: `hawser up` in a network-namespace host, and a
//! 3-node cluster of namespace hosts. The pods run the workspace's test
//! HTTP server (`hawser-test-server`), so every check is a real process
//! answering on a real address.
//!
//! What does not depend on the runtime is written once, as a function of
//! the [`Runtime`], and run against both: the process runtime (`process::`
//! tests; pods run the host's binary) and Docker (`docker::` tests; a
//! dockerd of each test's own, pods from the `FROM scratch` test server
//! image). What reads the process runtime's cgroups runs on it alone.

use hawser_tests::nodes::{NetnsCluster, OneNode, Runtime};
use hawser_tests::pods::{is_ready, pod_ip, pod_name, pods_of, ready_pods, test_server_rc as rc};
use hawser_tests::{poll_until, table_cells};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// `#[test]` wrappers running each function named against both runtimes.
macro_rules! on_both_runtimes {
    ($($test:ident),* $(,)?) => {
        mod process {
            $(#[test]
            fn $test() {
                super::$test(super::Runtime::Process)
            })*
        }
        mod docker {
            $(#[test]
            fn $test() {
                super::$test(super::Runtime::Docker)
            })*
        }
    };
}

on_both_runtimes!(
    an_rc_runs_as_real_processes_with_their_own_addresses,
    pods_on_different_nodes_reach_each_other_and_every_node_has_its_own_block,
    containers_restart_when_they_exit_or_are_unhealthy_and_readiness_follows_the_probe,
    a_container_over_its_memory_limit_is_oom_killed,
    logs_and_exec_reach_the_container_through_the_api_server,
    deleting_a_pod_removes_its_containers_veth_and_address,
);

/// `hawser up` runs an RC of 3 as 3 Ready pods with distinct addresses in
/// the node's pod CIDR, each answering with its name.
fn an_rc_runs_as_real_processes_with_their_own_addresses(runtime: Runtime) {
    let node = OneNode::start_on(runtime, &[]);
    node.apply("web.yaml", &rc(runtime, "web", 3), &[]);
    let pods = ready_pods(&node, "web", 3);
    let cidr: ipnetwork::Ipv4Network = node.kubectl_ok(&["get", "node", "n1", "-o", "jsonpath={.spec.podCIDR}"]).trim().parse().unwrap();
    let ips: BTreeSet<String> = pods.iter().map(pod_ip).collect();
    assert_eq!(ips.len(), 3, "distinct pod IPs: {ips:?}");
    for ip in &ips {
        assert!(cidr.contains(ip.parse().unwrap()), "{ip} is in the node's pod CIDR {cidr}");
    }
    // `kubectl get pods -o wide` shows each pod's IP and node.
    let wide = node.kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "wide"]);
    for pod in &pods {
        let line = wide.lines().find(|l| l.starts_with(&pod_name(pod))).unwrap_or_else(|| panic!("{} in\n{wide}", pod_name(pod)));
        let cells = table_cells(line);
        assert!(cells.contains(&pod_ip(pod)) && cells.contains(&"n1".to_string()) && cells.contains(&"Running".to_string()), "{line}");
    }
    // Each pod answers on its own address with its own name.
    for pod in &pods {
        let body = node.host.fetch(&format!("http://{}:8080/", pod_ip(pod))).expect("the pod answers");
        assert_eq!(body.trim(), pod_name(pod));
    }
}

fn pods_on_different_nodes_reach_each_other_and_every_node_has_its_own_block(runtime: Runtime) {
    let cluster = NetnsCluster::start_on(runtime, 3, &[], &[]);
    let cidrs: BTreeSet<String> =
        cluster.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"]).split_whitespace().map(str::to_string).collect();
    assert_eq!(cidrs.len(), 3, "one /24 per node: {cidrs:?}");
    assert!(cidrs.iter().all(|c| c.ends_with("/24")));
    cluster.apply("spread.yaml", &rc(runtime, "spread", 6), &[]);
    let pods = ready_pods(&cluster, "spread", 6);
    let by_node = |node: &str| pods.iter().find(|p| p["spec"]["nodeName"] == node).unwrap_or_else(|| panic!("a pod on {node}")).clone();
    let (a, b) = (by_node("n1"), by_node("n3"));
    // From inside pod a (on n1) to pod b (on n3), and back: exec the test
    // client in each pod.
    for (from, to) in [(&a, &b), (&b, &a)] {
        let out = cluster.kubectl_ok(&[
            "exec",
            &pod_name(from),
            "--",
            &runtime.server_command(),
            "fetch",
            &format!("http://{}:8080/", pod_ip(to)),
        ]);
        assert_eq!(out.trim(), pod_name(to), "{} → {}", pod_name(from), pod_name(to));
    }
    // And from each node's host namespace to a pod on another node.
    for host in &cluster.nodes {
        for pod in [&a, &b] {
            let body =
                host.fetch(&format!("http://{}:8080/", pod_ip(pod))).unwrap_or_else(|e| panic!("{} → {}: {e}", host.name, pod_name(pod)));
            assert_eq!(body.trim(), pod_name(pod));
        }
    }
}

/// A single pod running the test server, with `container_extra` YAML
/// appended to its container (indented for the container's map) and
/// `spec_extra` to its spec.
fn pod(runtime: Runtime, name: &str, container_extra: &str, spec_extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  terminationGracePeriodSeconds: 5
{spec_extra}  containers:
  - name: web
    image: {image}
    command: ["{server}"]
{container_extra}"#,
        image = runtime.server_image(),
        server = runtime.server_command()
    )
}

fn pod_json(cluster: &hawser_tests::TestCluster, name: &str) -> Value {
    cluster.kubectl_json(&["get", "pod", name, "-o", "json"])
}

fn restart_count(pod: &Value) -> i64 {
    pod["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(-1)
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().expect("a uid").to_string()
}

fn container_id(pod: &Value) -> String {
    pod["status"]["containerStatuses"][0]["containerID"].as_str().unwrap_or_default().to_string()
}

/// Has the test server of a pod exit with `code` (it answers first).
fn ask_to_exit(node: &OneNode, ip: &str, code: i32) {
    node.host.fetch(&format!("http://{ip}:8080/exit?code={code}")).unwrap_or_else(|e| panic!("asking {ip} to exit: {e}"));
}

fn containers_restart_when_they_exit_or_are_unhealthy_and_readiness_follows_the_probe(runtime: Runtime) {
    let node = OneNode::start_on(runtime, &[]);
    let probes = "    livenessProbe:\n      httpGet: {path: /healthz, port: 8080}\n      periodSeconds: 1\n      failureThreshold: 2\n    readinessProbe:\n      httpGet: {path: /ready, port: 8080}\n      periodSeconds: 1\n";
    node.apply("probed.yaml", &pod(runtime, "probed", probes, ""), &[]);
    let ready = ready_pods(&node, "probed", 1).remove(0);
    let ip = pod_ip(&ready);
    let first = container_id(&pod_json(&node, "probed"));

    // Exited (as a SIGKILL would leave it): restarted, restartCount 1,
    // last state says how it ended.
    ask_to_exit(&node, &ip, 137);
    let restarted = poll_until(Duration::from_secs(30), "restart after the exit", || {
        let p = pod_json(&node, "probed");
        (restart_count(&p) == 1 && is_ready(&p)).then_some(p)
    });
    let last = &restarted["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!((&last["exitCode"], &last["reason"]), (&Value::from(137), &Value::from("Error")), "{restarted:#}");
    assert_ne!(container_id(&restarted), first, "a new run");

    // Readiness follows the probe both ways, without a restart.
    node.host.fetch(&format!("http://{ip}:8080/set?ready=false")).unwrap();
    poll_until(Duration::from_secs(15), "Ready=False", || (!is_ready(&pod_json(&node, "probed"))).then_some(()));
    node.host.fetch(&format!("http://{ip}:8080/set?ready=true")).unwrap();
    poll_until(Duration::from_secs(15), "Ready=True again", || is_ready(&pod_json(&node, "probed")).then_some(()));
    assert_eq!(restart_count(&pod_json(&node, "probed")), 1, "readiness never restarts");

    // A failing liveness probe restarts the container (after the back-off
    // of the first restart: 10 s).
    node.host.fetch(&format!("http://{ip}:8080/set?healthy=false")).unwrap();
    poll_until(Duration::from_secs(40), "restart by liveness", || {
        let p = pod_json(&node, "probed");
        (restart_count(&p) == 2 && is_ready(&p)).then_some(())
    });
    let events = node.kubectl_ok(&["describe", "pod", "probed"]);
    for expected in [
        "Started",
        "Unhealthy",
        "Liveness probe failed: HTTP probe failed with statuscode: 500",
        "failed liveness probe, will be restarted",
    ] {
        assert!(events.contains(expected), "describe shows {expected:?}:\n{events}");
    }
}

fn a_container_over_its_memory_limit_is_oom_killed(runtime: Runtime) {
    let node = OneNode::start_on(runtime, &[]);
    let extra = "    args: [\"--alloc-mb\", \"200\"]\n    resources:\n      limits: {memory: 48Mi}\n";
    node.apply("hog.yaml", &pod(runtime, "hog", extra, "  restartPolicy: Never\n"), &[]);
    let p = poll_until(Duration::from_secs(60), "the pod fails", || {
        let p = pod_json(&node, "hog");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let terminated = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{p:#}");
    assert_eq!(terminated["exitCode"], 137);
}

fn logs_and_exec_reach_the_container_through_the_api_server(runtime: Runtime) {
    let node = OneNode::start_on(runtime, &[]);
    node.apply("talk.yaml", &pod(runtime, "talk", "", ""), &[]);
    let ip = pod_ip(&ready_pods(&node, "talk", 1).remove(0));
    let logs = node.kubectl_ok(&["logs", "talk"]);
    assert!(logs.contains("hawser-test-server: serving on 0.0.0.0:8080"), "{logs}");
    assert!(node.kubectl_ok(&["logs", "talk", "-c", "web"]).contains("serving on"));
    // The Docker image has nothing but the test server: exec its client,
    // which reads files through the server in the same container.
    let server = runtime.server_command();
    let read = |path: &str| node.kubectl_ok(&["exec", "talk", "--", &server, "fetch", &format!("http://127.0.0.1:8080/file?path={path}")]);
    let resolv = read("/etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"), "{resolv}");
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    assert_eq!(read("/etc/hostname").trim(), "talk");
    // A failing command's exit code comes back through kubectl (2: nothing
    // listens on port 9).
    let out = node.kubectl(&["exec", "talk", "--", &server, "fetch", "http://127.0.0.1:9/"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    // --previous: the run before a restart.
    ask_to_exit(&node, &ip, 137);
    poll_until(Duration::from_secs(30), "restarted", || (restart_count(&pod_json(&node, "talk")) == 1).then_some(()));
    assert!(node.kubectl_ok(&["logs", "talk", "--previous"]).contains("serving on"));
}

fn deleting_a_pod_removes_its_containers_veth_and_address(runtime: Runtime) {
    let node = OneNode::start_on(runtime, &[]);
    node.apply("gone.yaml", &pod(runtime, "gone", "", ""), &[]);
    let p = ready_pods(&node, "gone", 1).remove(0);
    let (uid, ip) = (uid(&p), pod_ip(&p));
    let ipam = node.data_dir().join("agent/network/ipam");
    let held = |ip: &str| walk_names(&ipam).iter().any(|n| n == ip);
    assert!(held(&ip), "the IPAM holds {ip}");
    assert_eq!(node.host.veths().len(), 1, "one pod veth: {:?}", node.host.veths());
    let pids = node.host.container_pids(&uid, "web");
    match &node.dockerd {
        None => assert_eq!(pids.len(), 1),
        Some(dockerd) => assert_eq!(dockerd.pod_containers(&uid).len(), 2, "the pause and web containers"),
    }
    node.kubectl_ok(&["delete", "pod", "gone", "--wait=true", "--timeout=60s"]);
    assert!(node.kubectl(&["get", "pod", "gone"]).status.code() != Some(0), "the pod object is gone");
    match &node.dockerd {
        None => {
            assert!(!std::path::Path::new(&format!("/proc/{}", pids[0])).exists(), "the container process is gone");
            assert!(!node.host.pod_cgroup_exists(&uid), "the pod cgroup is gone");
        }
        Some(dockerd) => assert_eq!(dockerd.pod_containers(&uid), Vec::<Value>::new(), "no container of the pod is left"),
    }
    assert!(node.host.veths().is_empty(), "no veth left: {:?}", node.host.veths());
    assert!(!held(&ip), "{ip} released");
}

fn walk_names(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        names.push(entry.file_name().to_string_lossy().into_owned());
        if entry.path().is_dir() {
            names.extend(walk_names(&entry.path()));
        }
    }
    names
}

/// Process runtime only: reads the pods' processes from its cgroups.
#[test]
fn pods_keep_running_through_an_agent_crash_and_no_address_is_reused() {
    let mut node = OneNode::start(&[]);
    node.apply("steady.yaml", &rc(Runtime::Process, "steady", 3), &[]);
    let before = ready_pods(&node, "steady", 3);
    let pids: Vec<Vec<u32>> = before.iter().map(|p| node.host.container_pids(&uid(p), "web")).collect();
    assert!(pids.iter().all(|p| p.len() == 1), "{pids:?}");
    node.restart();
    // Throughout and after: the same processes, answering.
    for (pod, pid) in before.iter().zip(&pids) {
        assert_eq!(&node.host.container_pids(&uid(pod), "web"), pid, "{} kept its process", pod_name(pod));
        assert_eq!(node.host.fetch(&format!("http://{}:8080/", pod_ip(pod))).unwrap().trim(), pod_name(pod));
    }
    node.kubectl_ok(&["scale", "rc", "steady", "--replicas=6"]);
    let after = ready_pods(&node, "steady", 6);
    let ips: BTreeSet<String> = after.iter().map(pod_ip).collect();
    assert_eq!(ips.len(), 6, "no address handed out twice: {ips:?}");
    for (pod, pid) in before.iter().zip(&pids) {
        assert_eq!(&node.host.container_pids(&uid(pod), "web"), pid, "{} still runs the same process", pod_name(pod));
        let now = after.iter().find(|p| pod_name(p) == pod_name(pod)).expect("the old pod is still there");
        assert_eq!(restart_count(now), 0);
    }

    // Killed from outside (the one process in its container's cgroup):
    // restarted as a new process, the last state saying how it ended.
    let (victim, pid) = (pod_name(&before[0]), pids[0][0]);
    // SAFETY: kill(2) on the container's process, as an outside killer would.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let restarted = poll_until(Duration::from_secs(30), "restart after kill", || {
        let p = pod_json(&node, &victim);
        (restart_count(&p) == 1 && is_ready(&p)).then_some(p)
    });
    assert_eq!(restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 137);
    let now = node.host.container_pids(&uid(&restarted), "web");
    assert!(now.len() == 1 && now[0] != pid, "a new process: {now:?}");
}

/// Process runtime only: the lost host's pods die with its agent's cgroups.
#[test]
fn pods_of_a_node_whose_host_disappears_are_rescheduled_and_run() {
    let mut cluster = NetnsCluster::start(3, &["--node-monitor-grace-period", "8s", "--default-unreachable-toleration-seconds", "2"]);
    cluster.apply("moving.yaml", &rc(Runtime::Process, "moving", 6), &[]);
    let before = ready_pods(&cluster, "moving", 6);
    assert!(before.iter().any(|p| p["spec"]["nodeName"] == "n3"), "the spread put pods on n3");
    // The host vanishes: its agent, its pods and its namespace.
    let lost = cluster.nodes.remove(2);
    drop(lost);
    let after = poll_until(Duration::from_secs(90), "6 ready pods on n1 and n2", || {
        let ready: Vec<Value> = pods_of(&cluster, "moving").into_iter().filter(is_ready).collect();
        (ready.len() == 6 && ready.iter().all(|p| p["spec"]["nodeName"] != "n3")).then_some(ready)
    });
    for pod in &after {
        let body = cluster.node("n1").fetch(&format!("http://{}:8080/", pod_ip(pod))).unwrap_or_else(|e| panic!("{}: {e}", pod_name(pod)));
        assert_eq!(body.trim(), pod_name(pod));
    }
    let node = cluster.kubectl_ok(&["get", "node", "n3", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
    assert_eq!(node.trim(), "Unknown");
}

//! The first things a user types: version, cluster-info, nodes, namespaces;
//! and `hawser up`'s promise to print where the kubeconfig is.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hawser_tests::netns::{self, Lan};
use hawser_tests::nodes::{AgentHost, ISOLATED_RESOLV_CONF};
use hawser_tests::{TestCluster, hawser_binary, run_bounded, table_cells};
use std::net::Ipv4Addr;

#[test]
fn kubectl_version_reports_the_servers_version() {
    let cluster = TestCluster::start();
    let v = cluster.kubectl_json(&["version"]);
    let server = &v["serverVersion"];
    for field in ["major", "minor", "gitVersion", "platform", "goVersion"] {
        assert!(server[field].as_str().is_some_and(|s| !s.is_empty()), "serverVersion.{field} missing or empty in {v}");
    }
    assert!(server["gitVersion"].as_str().unwrap().starts_with('v'), "gitVersion should look like v1.x.y: {server}");
    let text = cluster.kubectl_ok(&["version"]);
    assert!(text.contains("Server Version: v"), "{text}");
}

#[test]
fn cluster_info_names_the_control_plane_url() {
    let cluster = TestCluster::start();
    let out = cluster.kubectl_ok(&["cluster-info"]);
    let expected = format!("Kubernetes control plane is running at {}", cluster.url());
    // kubectl colours the output when it thinks it may; compare without escapes.
    let plain: String = strip_ansi(&out);
    assert!(plain.contains(&expected), "expected {expected:?} in:\n{plain}");
}

#[test]
fn get_nodes_answers_with_node_columns() {
    let cluster = TestCluster::start();
    // No agent exists yet, so the list starts empty; register a Node the way
    // an agent will (a plain create) to see kubectl's node columns.
    let out = cluster.kubectl(&["get", "nodes"]);
    assert!(out.status.success(), "get nodes failed: {out:?}");
    let manifest = cluster.write_manifest(
        "node.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: worker-1\n  labels:\n    kubernetes.io/hostname: worker-1\n",
    );
    cluster.kubectl_ok(&["create", "-f", manifest.to_str().unwrap()]);
    let out = cluster.kubectl_ok(&["get", "nodes"]);
    let mut lines = out.lines();
    assert_eq!(table_cells(lines.next().expect("header")), ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], "{out}");
    let row = table_cells(lines.next().expect("a row for worker-1"));
    assert_eq!(row[0], "worker-1", "{out}");
    let names = cluster.kubectl_ok(&["get", "nodes", "-o", "name"]);
    assert_eq!(names.trim(), "node/worker-1");
}

#[test]
fn a_fresh_cluster_has_the_four_system_namespaces() {
    let cluster = TestCluster::start();
    let names = cluster.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    let mut names: Vec<&str> = names.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["namespace/default", "namespace/kube-node-lease", "namespace/kube-public", "namespace/kube-system"]);
    let table = cluster.kubectl_ok(&["get", "namespaces"]);
    let mut lines = table.lines();
    assert_eq!(table_cells(lines.next().unwrap()), ["NAME", "STATUS", "AGE"]);
    for line in lines {
        assert_eq!(table_cells(line)[1], "Active", "{table}");
    }
}

#[test]
fn the_kubernetes_service_sits_at_the_first_service_ip() {
    let cluster = TestCluster::start();
    let svc = cluster.kubectl_json(&["get", "service", "kubernetes", "-n", "default"]);
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1", "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443, "{svc}");
}

/// `hawser up` runs the control plane and an agent for the machine, so it
/// gets a machine of its own: a namespace host on a test LAN.
#[test]
fn hawser_up_prints_the_kubeconfig_export_line_once_ready() {
    let dir = tempfile::Builder::new().prefix("hawser-e2e-up-").tempdir().unwrap();
    let data = dir.path().join("data");
    let mut lan = Lan::new(&netns::run_id());
    let host = AgentHost::new(&mut lan, "n1", Ipv4Addr::new(198, 51, 100, 11), dir.path().join("up.log"));
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, ISOLATED_RESOLV_CONF).unwrap();
    let mut child = host
        .ns
        .command(hawser_binary())
        .arg("up")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:6443", "--node-name", "n1", "--node-ip", "198.51.100.11", "--cgroup-root", &host.cgroup_root])
        .arg("--bpf-pin-dir")
        .arg(&host.bpf_pin_dir)
        .arg("--resolv-conf")
        .arg(&resolv_conf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("up.log")).unwrap())
        .spawn()
        .expect("spawn hawser up");
    // Kills `hawser up` however this test ends (before the host goes).
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let kubeconfig = data.join("kubeconfig.yaml");
    let mut seen: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let printed = loop {
        if let Some(path) = seen.iter().find_map(|l| l.trim().strip_prefix("export KUBECONFIG=")) {
            break std::path::PathBuf::from(path);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "`hawser up` printed no `export KUBECONFIG=` line within 30 s; it printed:\n{}\nand logged:\n{}",
                seen.join("\n"),
                std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default()
            ),
        }
    };
    // The printed path may be canonical (e.g. /tmp behind a symlink).
    assert_eq!(
        printed.canonicalize().expect("the printed kubeconfig exists"),
        kubeconfig.canonicalize().expect("kubeconfig.yaml is in the data dir"),
        "printed {printed:?}, expected the data dir's kubeconfig.yaml"
    );
    // Once the line is out the server must already answer kubectl (on the
    // host's own loopback, where the kubeconfig points).
    let mut cmd = host.ns.command(hawser_tests::KUBECTL);
    cmd.arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args(["get", "namespace", "default", "-o", "name"])
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG");
    let out = run_bounded(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "kubectl against `hawser up` failed: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "namespace/default");
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequences end with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `/usr/bin/kubectl` dispatches to the build matching the server's version
/// (1.33 for us); the 1.32 build the project targets must work as well.
const KUBECTL_1_32: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

#[test]
fn kubectl_1_32_applies_lists_and_explains() {
    if !std::path::Path::new(KUBECTL_1_32).exists() {
        eprintln!("skipped: {KUBECTL_1_32} is not installed on this machine");
        return;
    }
    let cluster = TestCluster::start();
    let manifest = cluster.write_manifest("pod-132.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: old-client\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    ports: [{containerPort: 80}]\n");
    let kubectl = |args: &[&str]| {
        // Same arguments and environment as every other test, another binary.
        let template = cluster.kubectl_command(args);
        let mut cmd = Command::new(KUBECTL_1_32);
        cmd.args(template.get_args()).envs(template.get_envs().filter_map(|(k, v)| v.map(|v| (k, v)))).env_remove("KUBECONFIG");
        let out = run_bounded(cmd, Duration::from_secs(60));
        assert!(out.status.success(), "kubectl 1.32 {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let version = kubectl(&["version", "--client"]);
    assert!(version.contains("v1.32."), "not the 1.32 build: {version}");
    assert_eq!(kubectl(&["apply", "-f", manifest.to_str().unwrap()]).trim(), "pod/old-client created");
    assert_eq!(kubectl(&["apply", "-f", manifest.to_str().unwrap()]).trim(), "pod/old-client unchanged");
    let header = kubectl(&["get", "pods", "-o", "wide"]);
    assert_eq!(
        table_cells(header.lines().next().unwrap_or_default()),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
        "{header}"
    );
    assert!(kubectl(&["explain", "pods.spec.containers.ports"]).contains("containerPort"));
    assert!(kubectl(&["apply", "--server-side", "-f", manifest.to_str().unwrap()]).contains("serverside-applied"));
}

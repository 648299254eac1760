//! The service proxy end to end: a 3-node cluster of namespace hosts with
//! real agents, Services applied with real kubectl, traffic from pods,
//! from the nodes' own namespaces and from a client host on the underlay.
//!
//! Every check is written once as a function of the proxy mode and run for
//! each mode by [`hawser_tests::on_every_proxy_mode`].

use hawser_tests::netns::Netns;
use hawser_tests::nodes::{AgentHost, NetnsCluster, Runtime, test_server_binary, test_server_command};
use hawser_tests::pods::{is_ready, node_of, pod_ip, pod_name, pods_of, ready_pods, test_server_rc as rc};
use hawser_tests::poll_until;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

hawser_tests::on_every_proxy_mode!(
    cluster_ips_and_node_ports_reach_every_endpoint_from_pods_nodes_and_outside,
    local_traffic_policy_keeps_the_client_address_and_answers_health_checks,
    unready_and_missing_endpoints_stop_traffic_at_once_and_udp_follows_a_replaced_pod,
    a_thousand_services_of_ten_endpoints_are_programmed_as_wanted,
    an_agent_restart_drops_no_connection_and_cleanup_leaves_nothing,
);

/// The client host on the underlay, outside every node.
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);

struct ProxyCluster {
    cluster: NetnsCluster,
    /// Dropped before the cluster (and its LAN).
    client: Netns,
}

impl std::ops::Deref for ProxyCluster {
    type Target = NetnsCluster;
    fn deref(&self) -> &NetnsCluster {
        &self.cluster
    }
}

impl ProxyCluster {
    fn start(mode: &str) -> Self {
        Self::start_nodes(mode, 3)
    }

    fn start_nodes(mode: &str, nodes: usize) -> Self {
        let mut cluster = NetnsCluster::start_with(nodes, &[], &["--proxy-mode", mode]);
        let client = cluster.lan.add_host("client", CLIENT);
        // Each mode must really run, not fall back: the eBPF agents pin
        // their links, the iptables ones leave no pins.
        for node in &cluster.nodes {
            let pinned = node.bpf_pin_dir.join("links/sock_connect4").exists() && node.bpf_pin_dir.join("links/nodeport_ingress").exists();
            assert_eq!(
                pinned,
                mode == "ebpf",
                "{}: {mode} mode, BPF links pinned under {}: {pinned}",
                node.name,
                node.bpf_pin_dir.display()
            );
        }
        Self { cluster, client }
    }

    /// Runs the test server's client on the client host.
    fn client_run(&self, args: &[&str]) -> Output {
        self.client.run(test_server_binary(), args, Duration::from_secs(60))
    }

    /// Runs the test server's client inside pod `pod`.
    fn pod_run(&self, pod: &str, args: &[&str]) -> Output {
        let server = test_server_command();
        let mut all = vec!["exec", pod, "--", server.as_str()];
        all.extend_from_slice(args);
        self.kubectl(&all)
    }

    fn service(&self, name: &str) -> Value {
        self.kubectl_json(&["get", "service", name])
    }
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many answers came from each pod.
fn tally(answers: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in answers.lines().map(str::trim).filter(|l| !l.is_empty()) {
        *counts.entry(line.to_string()).or_default() += 1;
    }
    counts
}

/// A Service selecting app=`app` on port `port` → 8080 with `extra` spec lines.
fn service(name: &str, app: &str, port: u16, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: {app}\n  ports:\n  - name: http\n    port: {port}\n    targetPort: 8080\n{extra}"
    )
}

fn cluster_ip(service: &Value) -> String {
    service["spec"]["clusterIP"].as_str().expect("a cluster IP").to_string()
}

fn node_port(service: &Value) -> u64 {
    service["spec"]["ports"][0]["nodePort"].as_u64().expect("a node port")
}

/// Polls `url` from `host` until its answers (over `n` requests) satisfy
/// `done`; how long that took.
fn until_answers(fetch: impl Fn() -> Output, what: &str, limit: Duration, done: impl Fn(&BTreeMap<String, usize>) -> bool) -> Duration {
    let started = Instant::now();
    poll_until(limit, what, || {
        let out = fetch();
        out.status.success().then(|| tally(&String::from_utf8_lossy(&out.stdout))).filter(&done).map(|_| ())
    });
    started.elapsed()
}

fn cluster_ips_and_node_ports_reach_every_endpoint_from_pods_nodes_and_outside(mode: &str) {
    let c = ProxyCluster::start(mode);
    c.apply("web.yaml", &rc(Runtime::Process, "web", 3), &[]);
    c.apply("solo.yaml", &rc(Runtime::Process, "solo", 1), &[]);
    c.apply("web-svc.yaml", &service("web", "web", 80, "  type: NodePort\n"), &[]);
    c.apply("sticky-svc.yaml", &service("sticky", "web", 81, "  sessionAffinity: ClientIP\n"), &[]);
    c.apply("solo-svc.yaml", &service("solo", "solo", 80, "  type: NodePort\n"), &[]);
    let web = ready_pods(&c, "web", 3);
    let names: BTreeSet<String> = web.iter().map(pod_name).collect();
    let solo = ready_pods(&c, "solo", 1).remove(0);
    let (vip, np) = (cluster_ip(&c.service("web")), node_port(&c.service("web")));
    let url = format!("http://{vip}:80/");

    // From a pod on every node: 600 requests spread over the 3 endpoints.
    let clients: BTreeMap<String, String> = web.iter().map(|p| (node_of(p), pod_name(p))).collect();
    for (node, pod) in &clients {
        let counts = poll_until(Duration::from_secs(30), &format!("{url} from {pod}"), || {
            let out = c.pod_run(pod, &["fetch", &url, "--count", "600"]);
            out.status.success().then(|| tally(&String::from_utf8_lossy(&out.stdout)))
        });
        assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), names, "from {pod} on {node}: {counts:?}");
        assert!(counts.values().all(|&n| n >= 150), "600 requests from {pod} on {node}, at least 150 on each: {counts:?}");
    }
    // From every node's own namespace.
    for node in &c.nodes {
        let answers = tally(&stdout(&node.run(test_server_binary(), &["fetch", &url, "--count", "30"])));
        assert!(answers.keys().all(|k| names.contains(k)) && answers.values().sum::<usize>() == 30, "from {}: {answers:?}", node.name);
    }
    // NodePort from the client through every node, with or without a local endpoint.
    let solo_np = node_port(&c.service("solo"));
    for node in &c.nodes {
        let answers = tally(&stdout(&c.client_run(&["fetch", &format!("http://{}:{np}/", node.ip), "--count", "30"])));
        assert!(answers.keys().all(|k| names.contains(k)), "NodePort via {}: {answers:?}", node.name);
        let solo_answer = stdout(&c.client_run(&["fetch", &format!("http://{}:{solo_np}/", node.ip)]));
        assert_eq!(solo_answer.trim(), pod_name(&solo), "NodePort via {} (solo runs on {})", node.name, node_of(&solo));
    }
    // ClientIP affinity: 50 requests from one client, one pod.
    let sticky = format!("http://{}:81/", cluster_ip(&c.service("sticky")));
    let one_client = clients.values().next().unwrap();
    let counts = tally(&stdout(&c.pod_run(one_client, &["fetch", &sticky, "--count", "50"])));
    assert_eq!(counts.len(), 1, "50 requests from one client hit one pod: {counts:?}");
    // Hairpin: the solo pod reaches itself through its own service.
    let own = format!("http://{}:80/", cluster_ip(&c.service("solo")));
    let hairpin = stdout(&c.pod_run(&pod_name(&solo), &["fetch", &own, "--count", "5"]));
    assert_eq!(tally(&hairpin), BTreeMap::from([(pod_name(&solo), 5)]), "{hairpin}");
    let source = stdout(&c.pod_run(&pod_name(&solo), &["fetch", &format!("{own}source")]));
    let source_ip = source.split(':').next().unwrap();
    if mode == "iptables" {
        // The answer came from the node's side of the bridge (masqueraded),
        // the only way its reply can come back through the NAT.
        assert_ne!(source_ip, pod_ip(&solo), "hairpin traffic is masqueraded: {source}");
    } else {
        // Balanced at connect(): the pod connected straight to itself, no
        // NAT on the way, so nothing to masquerade.
        assert_eq!(source_ip, pod_ip(&solo), "a socket-balanced hairpin connection comes from the pod itself: {source}");
    }
}

fn local_traffic_policy_keeps_the_client_address_and_answers_health_checks(mode: &str) {
    let c = ProxyCluster::start(mode);
    c.apply("solo.yaml", &rc(Runtime::Process, "solo", 1), &[]);
    // A LoadBalancer (with no load balancer here) is what gets a health check port.
    c.apply("local-svc.yaml", &service("local", "solo", 80, "  type: LoadBalancer\n  externalTrafficPolicy: Local\n"), &[]);
    let solo = ready_pods(&c, "solo", 1).remove(0);
    let home = node_of(&solo);
    let svc = c.service("local");
    let (np, hc) = (node_port(&svc), svc["spec"]["healthCheckNodePort"].as_u64().expect("a health check node port"));
    let home_ip = c.node(&home).ip;

    // Through the pod's node: the pod sees the client's own address.
    let source = poll_until(Duration::from_secs(30), "the local NodePort answers", || {
        let out = c.client_run(&["fetch", &format!("http://{home_ip}:{np}/source")]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    assert_eq!(source.split(':').next().unwrap(), CLIENT.to_string(), "the client's address is kept");
    // The health check: 200 with one local endpoint there, 503 elsewhere
    // (its server starts just after the sync that programs the NodePort).
    let healthy = poll_until(Duration::from_secs(10), "the health check port answers", || {
        let out = c.client_run(&["fetch", &format!("http://{home_ip}:{hc}/healthz")]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    let json: Value = serde_json::from_str(&healthy).unwrap();
    assert_eq!(json["localEndpoints"], 1, "{healthy}");
    assert_eq!(json["service"], serde_json::json!({"namespace": "default", "name": "local"}));
    for node in c.nodes.iter().filter(|n| n.name != home) {
        // Each node starts its health server after its own sync.
        let out = poll_until(Duration::from_secs(10), &format!("the health check port of {}", node.name), || {
            let out = c.client_run(&["fetch", &format!("http://{}:{hc}/healthz", node.ip)]);
            (!out.stdout.is_empty()).then_some(out)
        });
        assert!(!out.status.success(), "503 from {}: {out:?}", node.name);
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"localEndpoints\":0"), "{out:?}");
        // Nodes without a local endpoint do not forward outside traffic.
        let out = c.client_run(&["fetch", &format!("http://{}:{np}/", node.ip)]);
        assert!(!out.status.success(), "{} has no local endpoint and must not forward: {out:?}", node.name);
        // Their own traffic still reaches the service.
        let own = stdout(&node.run(test_server_binary(), &["fetch", &format!("http://{}:{np}/", node.ip)]));
        assert_eq!(own.trim(), pod_name(&solo), "{}'s own traffic to its NodePort", node.name);
    }
}

fn unready_and_missing_endpoints_stop_traffic_at_once_and_udp_follows_a_replaced_pod(mode: &str) {
    let c = ProxyCluster::start(mode);
    c.apply("web.yaml", &rc(Runtime::Process, "web", 3), &[]);
    c.apply("web-svc.yaml", &service("web", "web", 80, ""), &[]);
    c.apply("echo.yaml", &rc(Runtime::Process, "echo", 1), &[]);
    c.apply(
        "echo-svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo\nspec:\n  selector:\n    app: echo\n  ports:\n  - name: dns\n    port: 53\n    protocol: UDP\n    targetPort: 8080\n",
        &[],
    );
    let web = ready_pods(&c, "web", 3);
    let url = format!("http://{}:80/", cluster_ip(&c.service("web")));
    let n1 = c.node("n1");
    let fetch = |count: &str| n1.run(test_server_binary(), &["fetch", &url, "--count", count]);
    until_answers(|| fetch("60"), "all three endpoints answer", Duration::from_secs(30), |t| t.len() == 3);

    // Readiness off in one pod: no new connection reaches it within 2 s.
    let (victim, victim_ip) = (pod_name(&web[0]), pod_ip(&web[0]));
    let owner = c.node(&node_of(&web[0]));
    owner.fetch(&format!("http://{victim_ip}:8080/set?ready=false")).unwrap();
    let took = until_answers(|| fetch("30"), "the unready pod gets no traffic", Duration::from_secs(30), |t| !t.contains_key(&victim));
    assert!(took <= Duration::from_secs(2), "the unready pod still got connections {took:?} after its readiness went");
    owner.fetch(&format!("http://{victim_ip}:8080/set?ready=true")).unwrap();
    until_answers(|| fetch("60"), "the pod is back", Duration::from_secs(30), |t| t.contains_key(&victim));

    // Scaled to zero: a connect is refused at once, not left to time out.
    c.kubectl_ok(&["scale", "rc", "web", "--replicas=0"]);
    let refused = poll_until(Duration::from_secs(60), "connections are refused", || {
        let out = fetch("1");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (!out.status.success() && err.contains("refused")).then_some(err)
    });
    // The client says how long its connect took (process start-up on a
    // loaded machine is not the proxy's).
    let took: u64 = refused
        .split("(after ")
        .nth(1)
        .and_then(|rest| rest.split(" ms)").next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no time in {refused:?}"));
    assert!(took < 500, "refused at once, not after a timeout: {refused}");

    // UDP: one socket keeps sending (one conntrack entry); after the pod is
    // replaced the traffic reaches the new one within 2 s of its readiness.
    let echo = ready_pods(&c, "echo", 1).remove(0);
    let udp_target = format!("{}:53", cluster_ip(&c.service("echo")));
    let first = stdout(&n1.run(test_server_binary(), &["udp", &udp_target, "--count", "3", "--source-port", "40053"]));
    assert!(first.lines().any(|l| l == pod_name(&echo)), "the UDP service answers: {first}");
    let mut sender = UdpLoop::start(n1, &udp_target, 40053);
    c.kubectl_ok(&["delete", "pod", &pod_name(&echo), "--wait=false"]);
    let replacement = poll_until(Duration::from_secs(60), "a new echo pod is ready", || {
        pods_of(&c, "echo").into_iter().find(|p| is_ready(p) && pod_name(p) != pod_name(&echo))
    });
    let ready_at = Instant::now();
    let answers = poll_until(Duration::from_secs(10), "the new pod answers UDP", || {
        let seen = sender.answers();
        seen.iter().find(|(_, answer)| *answer == pod_name(&replacement)).map(|(at, _)| *at)
    });
    assert!(
        answers.saturating_duration_since(ready_at) <= Duration::from_secs(2),
        "UDP reached the new pod {:?} after it was seen ready",
        answers.saturating_duration_since(ready_at)
    );
    sender.stop();
}

/// `hawser-test-server udp` from one source port, answers timestamped as
/// they arrive.
struct UdpLoop {
    child: Child,
    answers: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

impl UdpLoop {
    fn start(host: &AgentHost, target: &str, source_port: u16) -> Self {
        let mut child = host
            .ns
            .command(test_server_binary())
            .args(["udp", target, "--count", "600", "--interval-ms", "100", "--source-port", &source_port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the UDP client");
        let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = answers.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Self { child, answers }
    }

    fn answers(&self) -> Vec<(Instant, String)> {
        self.answers.lock().unwrap().clone()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UdpLoop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates services `s0`..`s{count-1}` selecting `app` (port 80 → 8080;
/// no selector, so no endpoints and no EndpointSlices, for `None`) through
/// the API, 16 at a time (kubectl would send them one by one), and returns
/// their cluster IPs.
fn create_services(c: &ProxyCluster, count: usize, app: Option<&str>) -> BTreeSet<String> {
    hawser_tests::block_on(async {
        use futures::{StreamExt, TryStreamExt};
        let api: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(c.kube_client().await, "default");
        futures::stream::iter(0..count)
            .map(|i| {
                let api = api.clone();
                async move {
                    let mut spec = serde_json::json!({"ports": [{"name": "http", "port": 80, "targetPort": 8080}]});
                    if let Some(app) = app {
                        spec["selector"] = serde_json::json!({"app": app});
                    }
                    let service = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("s{i}")}, "spec": spec}))
                        .expect("a Service");
                    api.create(&kube::api::PostParams::default(), &service).await
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
            .expect("creating the services")
    });
    let list = c.kubectl_json(&["get", "services", "-o", "json"]);
    let vips: BTreeSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["metadata"]["name"].as_str().is_some_and(|n| n.starts_with('s') && n[1..].parse::<u32>().is_ok()))
        .map(cluster_ip)
        .collect();
    assert_eq!(vips.len(), count);
    vips
}

/// The VIPs (port 80) that `node`'s proxy does not send to exactly
/// `endpoints`, read from what the mode programs: the nat table, or the
/// pinned BPF maps.
fn unprogrammed(mode: &str, node: &AgentHost, vips: &BTreeSet<String>, endpoints: &BTreeSet<String>) -> Vec<String> {
    if mode == "iptables" {
        return mismatches(&stdout(&node.run("iptables-save", &["-t", "nat"])), vips, endpoints);
    }
    let contents = match bpf_maps(node) {
        Ok(contents) => contents,
        Err(e) => return vec![e],
    };
    vips.iter()
        .filter_map(|vip| {
            let Some(backends) = contents.backends_of(&bpf_key(vip, 80)) else {
                return Some(format!("{vip}: no service entry"));
            };
            let backends: BTreeSet<String> = backends.into_iter().map(|(ip, port)| format!("{ip}:{port}")).collect();
            (&backends != endpoints).then(|| format!("{vip}: {backends:?}"))
        })
        .collect()
}

/// What `node`'s eBPF proxy has in its pinned service maps.
fn bpf_maps(node: &AgentHost) -> Result<hawser_agent::proxy::ebpf::maps::Contents, String> {
    let maps = hawser_agent::proxy::ebpf::maps::ProxyMaps::open(&node.bpf_pin_dir).map_err(|e| e.to_string())?;
    maps.dump().map_err(|e| e.to_string())
}

/// The socket-side map key of `vip:port` over TCP.
fn bpf_key(vip: &str, port: u16) -> hawser_ebpf_common::ServiceKey {
    let ip: Ipv4Addr = vip.parse().unwrap();
    hawser_ebpf_common::ServiceKey {
        ip: u32::from(ip).to_be(),
        port: port.to_be(),
        proto: hawser_ebpf_common::IPPROTO_TCP,
        origin: hawser_ebpf_common::ORIGIN_NODE,
    }
}

fn a_thousand_services_of_ten_endpoints_are_programmed_as_wanted(mode: &str) {
    let mut c = ProxyCluster::start(mode);
    c.apply("many.yaml", &rc(Runtime::Process, "many", 10), &[]);
    let pods = ready_pods(&c, "many", 10);
    let endpoints: BTreeSet<String> = pods.iter().map(|p| format!("{}:8080", pod_ip(p))).collect();
    let vips = create_services(&c, 1000, Some("many"));
    // Every node: each VIP spreads over exactly the ten endpoints.
    for node in &c.nodes {
        let started = Instant::now();
        poll_until(Duration::from_secs(300), &format!("1000 services programmed on {}", node.name), || {
            let mismatch = unprogrammed(mode, node, &vips, &endpoints);
            mismatch.is_empty().then_some(()).or_else(|| {
                eprintln!("{}: {} services not yet as wanted, e.g. {:?}", node.name, mismatch.len(), mismatch.first());
                None
            })
        });
        eprintln!("{}: 1000 services × 10 endpoints as wanted after {:?}", node.name, started.elapsed());
    }
    // From nothing (after --cleanup) an agent writes them all again (on
    // iptables-nft in batches of chains, then the top-level chains).
    let n1 = c.cluster.node_mut("n1");
    n1.kill9_agent();
    let pins = n1.bpf_pin_dir.to_str().unwrap().to_string();
    stdout(&n1.run(hawser_tests::hawser_binary(), &["agent", "--cleanup", "--bpf-pin-dir", &pins]));
    n1.restart_agent();
    let n1 = c.node("n1");
    let started = Instant::now();
    poll_until(Duration::from_secs(300), "1000 services programmed again on n1", || {
        unprogrammed(mode, n1, &vips, &endpoints).is_empty().then_some(())
    });
    eprintln!("n1: programmed again from nothing after {:?}", started.elapsed());
}

/// At 10,000 services, changing one (a selector-less service given the
/// selector of a deployed app) writes only that service's map entries:
/// every entry that differs afterwards is one of its keys or a slot of a
/// new backend list (here none: the app's own service already has a list
/// of exactly those backends, which the changed service shares). (One node, and services without endpoints but the
/// one, keep the control plane's part of the test short.)
#[test]
fn ebpf_one_change_at_ten_thousand_services_touches_only_its_own_map_entries() {
    let c = ProxyCluster::start_nodes("ebpf", 1);
    c.apply("many.yaml", &rc(Runtime::Process, "many", 2), &[]);
    let pods = ready_pods(&c, "many", 2);
    let endpoints: BTreeSet<String> = pods.iter().map(|p| format!("{}:8080", pod_ip(p))).collect();
    c.apply("many-svc.yaml", &service("many", "many", 80, ""), &[]);
    let started = Instant::now();
    let vips = create_services(&c, 10_000, None);
    eprintln!("n1: 10,000 services created in {:?}", started.elapsed());
    let n1 = c.node("n1");
    poll_until(Duration::from_secs(600), "10,000 services programmed on n1", || {
        unprogrammed("ebpf", n1, &vips, &BTreeSet::new()).is_empty().then_some(())
    });
    eprintln!("n1: 10,000 services as wanted after {:?}", started.elapsed());
    let before = bpf_maps(n1).unwrap();
    let target = cluster_ip(&c.service("s4242"));
    let target_ip = u32::from(target.parse::<Ipv4Addr>().unwrap()).to_be();
    c.kubectl_ok(&["patch", "service", "s4242", "-p", r#"{"spec":{"selector":{"app":"many"}}}"#]);
    poll_until(Duration::from_secs(60), "s4242 with the app's endpoints on n1", || {
        let backends: BTreeSet<String> =
            bpf_maps(n1).unwrap().backends_of(&bpf_key(&target, 80))?.into_iter().map(|(ip, port)| format!("{ip}:{port}")).collect();
        (backends == endpoints).then_some(())
    });
    let after = bpf_maps(n1).unwrap();
    // Services: only s4242's keys (its cluster IP, both origins) differ.
    let changed_keys: Vec<_> = before
        .services
        .iter()
        .filter(|(k, v)| after.services.get(k) != Some(v))
        .map(|(k, _)| *k)
        .chain(after.services.keys().filter(|k| !before.services.contains_key(k)).copied())
        .collect();
    assert!(!changed_keys.is_empty() && changed_keys.iter().all(|k| k.ip == target_ip), "service entries changed: {changed_keys:?}");
    assert_eq!(before.services.len(), after.services.len());
    let new_lists: BTreeSet<u32> = after.services.iter().filter(|(k, _)| k.ip == target_ip).map(|(_, v)| v.list).collect();
    // Slots: only a new list's are written (none when an existing list
    // already held the same backends), none deleted or changed.
    let added_slots: Vec<_> = after.slots.keys().filter(|k| !before.slots.contains_key(k)).collect();
    assert!(added_slots.iter().all(|k| new_lists.contains(&k.list)), "slots written: {added_slots:?}");
    assert!(before.slots.iter().all(|(k, v)| after.slots.get(k) == Some(v)), "an existing slot changed or went");
    // Backends: the app's, already there for its own service.
    assert_eq!(before.backends, after.backends);
    eprintln!(
        "n1: {} service entries and {} slots written; {} service entries and {} slots before",
        changed_keys.len(),
        added_slots.len(),
        before.services.len(),
        before.slots.len()
    );
}

/// The VIPs whose rules in `saved` (iptables-save of nat) do not send
/// port 80 to exactly `endpoints`.
fn mismatches(saved: &str, vips: &BTreeSet<String>, endpoints: &BTreeSet<String>) -> Vec<String> {
    let mut chains: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in saved.lines() {
        if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap();
            chains.entry(chain).or_default().push(line);
        }
    }
    let target = |rule: &str| rule.split(" -j ").nth(1).map(|t| t.split_whitespace().next().unwrap_or("").to_string());
    let mut wrong = Vec::new();
    for vip in vips {
        let jump = chains
            .get("HAWSER-SERVICES")
            .into_iter()
            .flatten()
            .find(|r| r.contains(&format!("-d {vip}/32 ")) && r.contains("--dport 80 "))
            .and_then(|r| target(r));
        let Some(svc) = jump else {
            wrong.push(format!("{vip}: no HAWSER-SERVICES rule"));
            continue;
        };
        let seps: Vec<String> =
            chains.get(svc.as_str()).into_iter().flatten().filter_map(|r| target(r)).filter(|t| t.starts_with("HAWSER-SEP-")).collect();
        let dnat: BTreeSet<String> = seps
            .iter()
            .filter_map(|sep| chains.get(sep.as_str()))
            .flatten()
            .filter_map(|r| r.split("--to-destination ").nth(1))
            .map(|t| t.trim().to_string())
            .collect();
        if seps.len() != endpoints.len() || &dnat != endpoints {
            wrong.push(format!("{vip}: {} SEP jumps to {dnat:?}", seps.len()));
        }
    }
    wrong
}

fn an_agent_restart_drops_no_connection_and_cleanup_leaves_nothing(mode: &str) {
    let mut c = ProxyCluster::start(mode);
    c.apply("web.yaml", &rc(Runtime::Process, "web", 3), &[]);
    c.apply("web-svc.yaml", &service("web", "web", 80, "  type: NodePort\n"), &[]);
    ready_pods(&c, "web", 3);
    let vips = create_services(&c, 1000, Some("web"));
    let url = format!("http://{}:80/", cluster_ip(&c.service("web")));
    let node_port_url = format!("http://{}:{}/", c.node("n1").ip, node_port(&c.service("web")));
    let n1 = c.node("n1");
    until_answers(
        || n1.run(test_server_binary(), &["fetch", &url, "--count", "30"]),
        "the service answers",
        Duration::from_secs(30),
        |t| t.len() == 3,
    );
    let endpoints: BTreeSet<String> = pods_of(&c, "web").iter().map(|p| format!("{}:8080", pod_ip(p))).collect();
    poll_until(Duration::from_secs(120), "1000 more services programmed on n1", || {
        unprogrammed(mode, n1, &vips, &endpoints).is_empty().then_some(())
    });
    // While n1's agent is killed and started again: a steady connect loop
    // through the VIP from n1, and established streams through the VIP
    // (from n1) and through n1's NodePort (from the client host).
    let spawn = |ns: &Netns, args: &[&str]| {
        ns.command(test_server_binary()).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start a client")
    };
    let looping = spawn(&n1.ns, &["loop", &url, "--seconds", "12"]);
    let vip_stream = spawn(&n1.ns, &["stream", &url, "--seconds", "12"]);
    let node_port_stream = spawn(&c.client, &["stream", &node_port_url, "--seconds", "12"]);
    std::thread::sleep(Duration::from_secs(2));
    let n1 = c.cluster.node_mut("n1");
    n1.kill9_agent();
    std::thread::sleep(Duration::from_secs(1));
    n1.restart_agent();
    for (what, child) in
        [("connect loop", looping), ("stream through the VIP", vip_stream), ("stream through the NodePort", node_port_stream)]
    {
        let out = child.wait_with_output().unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{what}: {report}{}", String::from_utf8_lossy(&out.stderr));
        eprintln!("{what} across the agent restart: {}", report.trim());
    }

    // --cleanup: nothing of ours is left in any table or on the bpffs, and
    // the VIP no longer leads anywhere.
    let n1 = c.cluster.node_mut("n1");
    n1.kill9_agent();
    let pins = n1.bpf_pin_dir.to_str().unwrap().to_string();
    let cleanup = n1.run(hawser_tests::hawser_binary(), &["agent", "--cleanup", "--bpf-pin-dir", &pins]);
    assert!(cleanup.status.success(), "{cleanup:?}");
    let saved = stdout(&n1.run("iptables-save", &[]));
    assert!(!saved.contains("HAWSER-"), "iptables-save after --cleanup:\n{saved}");
    assert!(!n1.bpf_pin_dir.exists(), "{} after --cleanup", n1.bpf_pin_dir.display());
    let after = n1.run(test_server_binary(), &["fetch", &url]);
    assert!(!after.status.success(), "the VIP still answers after --cleanup: {}", stdout(&after));
}

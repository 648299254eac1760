//! Cluster DNS end to end: a namespace-host cluster whose agent serves DNS
//! for its node, queried from pods (glibc's `getent` through the pod's
//! resolv.conf, and `dig`) and from the node, with an upstream server the
//! test runs itself (dnsmasq on the node's loopback, never a real resolver).
//! Every check runs once per proxy mode: the kube-dns cluster IP must reach
//! the node's server with either backend.

use futures::StreamExt;
use hawser_tests::dnsmasq::Dnsmasq;
use hawser_tests::netns::Netns;
use hawser_tests::nodes::{AgentHost, NetnsCluster, Runtime};
use hawser_tests::pods::{node_of, pod_ip, pod_name, ready_pods, test_server_rc as rc};
use hawser_tests::poll_until;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use std::process::Output;
use std::sync::mpsc;
use std::time::{Duration, Instant};

hawser_tests::on_every_proxy_mode!(pods_resolve_services_by_the_kubernetes_dns_spec);

/// Where the test's upstream server listens, inside node n1.
const UPSTREAM: &str = "127.0.0.53";
/// How many addresses `big.example.test` has: more than one UDP answer holds.
const BIG: usize = 100;

/// The test's upstream in node `ns`: `www.example.test` (192.0.2.7) and
/// `big.example.test` ([`BIG`] addresses), NXDOMAIN for the rest of
/// example.test.
fn upstream(ns: &Netns, dir: &std::path::Path) -> Dnsmasq {
    let hosts = dir.join("hosts");
    let lines: String = (0..BIG).map(|i| format!("192.0.2.{} big.example.test\n", 100 + i)).collect();
    std::fs::write(&hosts, lines).unwrap();
    let args = [
        "--local=/example.test/".to_string(),
        "--host-record=www.example.test,192.0.2.7".to_string(),
        format!("--addn-hosts={}", hosts.display()),
    ];
    Dnsmasq::start(ns, UPSTREAM, &args)
}

/// Every change to the EndpointSlices of Service `service` (default
/// namespace), with the moment it arrived, from a kube-rs watch on a
/// thread of its own that ends once the receiver is gone.
fn watch_slices(c: &NetnsCluster, service: &str) -> mpsc::Receiver<(Instant, EndpointSlice)> {
    let (tx, rx) = mpsc::channel();
    let kubeconfig = c.kubeconfig_path();
    let selector = format!("kubernetes.io/service-name={service}");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
            let api: kube::Api<EndpointSlice> = kube::Api::default_namespaced(kube::Client::try_from(config).unwrap());
            let mut changes = watcher(api, watcher::Config::default().labels(&selector)).boxed();
            while let Some(change) = changes.next().await {
                let slice = match change {
                    Ok(watcher::Event::Apply(slice) | watcher::Event::InitApply(slice)) => slice,
                    Ok(_) => continue,
                    // The cluster is gone once the test ends: stop with it.
                    Err(_) if tx.send((Instant::now(), EndpointSlice::default())).is_err() => return,
                    Err(_) => continue,
                };
                if tx.send((Instant::now(), slice)).is_err() {
                    return;
                }
            }
        });
    });
    rx
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sorted non-empty lines.
fn lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    lines.sort();
    lines
}

/// `dig +short` run on the node against its node-local address.
fn dig_on_node(node: &AgentHost, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+short", "+time=1", "+tries=1", "@169.254.20.10"];
    all.extend_from_slice(args);
    lines(&stdout(&node.run("dig", &all)))
}

/// The `status:` and the answer count of a full `dig` reply.
fn status_and_answers(reply: &str) -> (String, usize) {
    let status = reply.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("?").to_string();
    let answers = reply.split("ANSWER: ").nth(1).and_then(|s| s.split(',').next()).and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
    (status, answers)
}

fn pods_resolve_services_by_the_kubernetes_dns_spec(mode: &str) {
    let dir = tempfile::Builder::new().prefix("hawser-dns-").tempdir().unwrap();
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, format!("nameserver {UPSTREAM}\nsearch example.test\n")).unwrap();
    let c = NetnsCluster::start_with(1, &[], &["--proxy-mode", mode, "--resolv-conf", resolv_conf.to_str().unwrap()]);
    let n1 = c.node("n1");
    let _upstream = upstream(&n1.ns, dir.path());
    c.apply("web.yaml", &rc(Runtime::Process, "web", 1), &[]);
    c.apply(
        "web-svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
        &[],
    );
    c.apply("db.yaml", &rc(Runtime::Process, "db", 2), &[]);
    c.apply(
        "db-svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\nspec:\n  clusterIP: None\n  selector:\n    app: db\n  ports:\n  - name: http\n    port: 8080\n",
        &[],
    );
    c.apply(
        "ext-svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\nspec:\n  type: ExternalName\n  externalName: www.example.test\n",
        &[],
    );
    let client = pod_name(&ready_pods(&c, "web", 1)[0]);
    let db = ready_pods(&c, "db", 2);
    let web_ip = c.kubectl_json(&["get", "service", "web"])["spec"]["clusterIP"].as_str().unwrap().to_string();
    let in_pod = |args: &[&str]| {
        let mut all = vec!["exec", client.as_str(), "--"];
        all.extend_from_slice(args);
        stdout(&c.kubectl(&all))
    };

    // The pod's resolv.conf: the kube-dns address, the cluster search list
    // then the node's, ndots:5.
    assert_eq!(
        in_pod(&["cat", "/etc/resolv.conf"]),
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local example.test\noptions ndots:5\n"
    );
    // Short, namespaced and full names through glibc and the search list.
    for name in ["web", "web.default", "web.default.svc", "web.default.svc.cluster.local"] {
        let out = in_pod(&["getent", "hosts", name]);
        assert!(out.starts_with(&format!("{web_ip} ")), "{name}: {out}");
    }
    let kubernetes = in_pod(&["getent", "hosts", "kubernetes.default"]);
    assert!(kubernetes.starts_with("10.96.0.1 "), "{kubernetes}");

    // Headless: one address per ready pod, and a pod turned unready is gone
    // within 1 s of its EndpointSlice saying so.
    let mut db_ips: Vec<String> = db.iter().map(pod_ip).collect();
    db_ips.sort();
    poll_until(Duration::from_secs(10), "both db pods in DNS", || {
        (dig_on_node(n1, &["db.default.svc.cluster.local"]) == db_ips).then_some(())
    });
    let srv = dig_on_node(n1, &["SRV", "_http._tcp.db.default.svc.cluster.local"]);
    let expected: Vec<String> =
        lines(&db_ips.iter().map(|ip| format!("0 50 8080 {}.db.default.svc.cluster.local.\n", ip.replace('.', "-"))).collect::<String>());
    assert_eq!(srv, expected);
    let (victim, victim_ip) = (pod_name(&db[0]), pod_ip(&db[0]));
    let slices = watch_slices(&c, "db");
    c.node(&node_of(&db[0])).fetch(&format!("http://{victim_ip}:8080/set?ready=false")).unwrap();
    let slice_changed = loop {
        let (at, slice) = slices.recv_timeout(Duration::from_secs(30)).expect("the watch shows the pod unready");
        let unready =
            slice.endpoints.iter().any(|e| e.addresses.contains(&victim_ip) && e.conditions.as_ref().and_then(|c| c.ready) == Some(false));
        if unready {
            break at;
        }
    };
    let left = poll_until(Duration::from_secs(10), "the unready pod leaves DNS", || {
        let answer = dig_on_node(n1, &["db.default.svc.cluster.local"]);
        (!answer.contains(&victim_ip)).then_some(answer)
    });
    let took = slice_changed.elapsed();
    eprintln!("{victim} left DNS {took:?} after its EndpointSlice changed");
    assert!(took <= Duration::from_secs(1), "{victim} left DNS {took:?} after its slice changed");
    assert_eq!(left.len(), 1);

    // SRV for a ClusterIP service's named port; PTR for its address.
    assert_eq!(
        lines(&in_pod(&["dig", "+short", "SRV", "_http._tcp.web.default.svc.cluster.local"])),
        ["0 100 80 web.default.svc.cluster.local."]
    );
    assert_eq!(lines(&in_pod(&["dig", "+short", "-x", &web_ip])), ["web.default.svc.cluster.local."]);
    // NXDOMAIN for what does not exist; NOERROR, no answer, for a name
    // without the asked type.
    assert_eq!(status_and_answers(&in_pod(&["dig", "nope.default.svc.cluster.local"])), ("NXDOMAIN".to_string(), 0));
    assert_eq!(status_and_answers(&in_pod(&["dig", "TXT", "web.default.svc.cluster.local"])), ("NOERROR".to_string(), 0));
    assert_eq!(in_pod(&["dig", "+short", "TXT", "dns-version.cluster.local"]).trim(), "\"1.1.0\"");

    // Names outside the cluster: the test's upstream answers, through the
    // node's search list too; an ExternalName service is its CNAME, followed.
    assert!(in_pod(&["getent", "hosts", "www.example.test"]).starts_with("192.0.2.7 "));
    assert!(in_pod(&["getent", "hosts", "www"]).starts_with("192.0.2.7 "), "the node's search domain applies");
    assert_eq!(
        lines(&in_pod(&["dig", "+short", "ext.default.svc.cluster.local"])),
        lines("192.0.2.7\nwww.example.test.\n"),
        "the CNAME and its target's address"
    );
    assert_eq!(status_and_answers(&in_pod(&["dig", "missing.example.test"])), ("NXDOMAIN".to_string(), 0));
    // Too big for UDP upstream: fetched again over TCP, so all of it arrives.
    assert_eq!(dig_on_node(n1, &["+tcp", "big.example.test"]).len(), BIG);

    // Queries to either DNS address leave no conntrack entry.
    let tracked = stdout(&n1.run("conntrack", &["-L", "-p", "udp", "--dport", "53"]));
    let dns_flows: Vec<&str> = tracked.lines().filter(|l| l.contains("dst=10.96.0.10") || l.contains("dst=169.254.20.10")).collect();
    assert!(dns_flows.is_empty(), "DNS is tracked: {dns_flows:?}");

    // Metrics: requests, rcodes, cache and upstream latency.
    let metrics = stdout(
        &n1.run("curl", &["-sk", "-H", &format!("Authorization: Bearer {}", c.token()), &format!("https://{}:10250/metrics", n1.ip)]),
    );
    for family in [
        "hawser_dns_requests_total{proto=\"udp\"}",
        "hawser_dns_responses_total{rcode=\"NXDOMAIN\"}",
        "hawser_dns_cache_hits_total",
        "hawser_dns_upstream_request_duration_seconds_count",
    ] {
        assert!(metrics.contains(family), "{family} missing from:\n{metrics}");
    }
}

//! Reading: `get` tables with Kubernetes' columns, label selectors, describe.

use std::net::Ipv4Addr;

use hawser_tests::manifests::{DEPLOYMENT, POD, RC, SERVICE_NODEPORT};
use hawser_tests::{TestCluster, table_cells};

/// The table's header and the row whose first cell is `name`.
fn header_and_row(table: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let mut lines = table.lines();
    let header = table_cells(lines.next().unwrap_or_else(|| panic!("empty table")));
    let row = lines
        .map(table_cells)
        .find(|cells| cells.first().is_some_and(|c| c == name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"));
    (header, row)
}

#[test]
fn get_pods_wide_prints_the_kubernetes_columns() {
    let cluster = TestCluster::start();
    cluster.apply("pod.yaml", POD, &[]);
    let table = cluster.kubectl_ok(&["get", "pods", "-o", "wide"]);
    let (header, row) = header_and_row(&table, "web");
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"], "{table}");
    // No scheduler or agent yet: the pod waits unbound, with no IP.
    assert_eq!(row[1], "0/1", "{table}");
    assert_eq!(row[2], "Pending", "{table}");
    assert_eq!(row[3], "0", "{table}");
    assert_eq!(&row[5..], ["<none>", "<none>", "<none>", "<none>"], "{table}");

    // Without -o wide the priority-1 columns are hidden.
    let narrow = cluster.kubectl_ok(&["get", "pods"]);
    let (header, _) = header_and_row(&narrow, "web");
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
}

#[test]
fn get_services_shows_a_cluster_ip_from_the_service_cidr_and_the_node_port() {
    let cluster = TestCluster::start();
    cluster.apply("service.yaml", SERVICE_NODEPORT, &[]);
    let table = cluster.kubectl_ok(&["get", "services"]);
    let (header, row) = header_and_row(&table, "web");
    assert_eq!(header, ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], "{table}");
    assert_eq!(row[1], "NodePort", "{table}");

    let ip: Ipv4Addr = row[2].parse().unwrap_or_else(|_| panic!("CLUSTER-IP {:?} is not an IPv4 address", row[2]));
    // 10.96.0.0/12 is 10.96.0.0 - 10.111.255.255; .1 belongs to `kubernetes`.
    let o = ip.octets();
    assert!(o[0] == 10 && (96..=111).contains(&o[1]), "{ip} is outside 10.96.0.0/12");
    assert_ne!(ip, Ipv4Addr::new(10, 96, 0, 1), "the kubernetes service's IP was handed out again");

    let ports = &row[4];
    let node_port: u16 = ports
        .strip_prefix("80:")
        .and_then(|p| p.strip_suffix("/TCP"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("PORT(S) {ports:?} is not like 80:3xxxx/TCP"));
    assert!((30000..=32767).contains(&node_port), "nodePort {node_port} outside 30000-32767");

    let svc = cluster.kubectl_json(&["get", "service", "web"]);
    assert_eq!(svc["spec"]["clusterIP"], row[2].as_str(), "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], node_port, "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP", "defaulting: {svc}");
}

#[test]
fn get_rc_and_deployments_list_what_was_applied() {
    let cluster = TestCluster::start();
    cluster.apply("rc.yaml", RC, &[]);
    cluster.apply("deployment.yaml", DEPLOYMENT, &[]);

    let table = cluster.kubectl_ok(&["get", "rc"]);
    let (header, row) = header_and_row(&table, "web");
    assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "READY", "AGE"], "{table}");
    assert_eq!(row[1], "1", "DESIRED should be spec.replicas:\n{table}");

    let table = cluster.kubectl_ok(&["get", "deployments"]);
    let (header, row) = header_and_row(&table, "api");
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], "{table}");
    // No controllers yet, so nothing is ready: READY is "0/<spec.replicas>".
    assert_eq!(row[1], "0/2", "{table}");

    let dep = cluster.kubectl_json(&["get", "deployment", "api"]);
    assert_eq!(dep["metadata"]["generation"], 1, "{dep}");
    assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate", "defaulting: {dep}");
}

#[test]
fn get_pods_with_a_label_selector_returns_only_matching_pods() {
    let cluster = TestCluster::start();
    cluster.apply("pod.yaml", POD, &[]);
    let db = POD.replace("name: web\n  labels", "name: db\n  labels").replace("app: web", "app: db");
    cluster.apply("db.yaml", &db, &[]);

    let names = |selector: &str| {
        let out = cluster.kubectl_ok(&["get", "pods", "-l", selector, "-o", "name"]);
        let mut v: Vec<String> = out.lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(names("app=web"), ["pod/web"]);
    assert_eq!(names("app!=web"), ["pod/db"]);
    assert_eq!(names("app in (web,db)"), ["pod/db", "pod/web"]);
    assert_eq!(names("app notin (web)"), ["pod/db"]);
    assert_eq!(names("tier"), ["pod/db", "pod/web"]);
    assert_eq!(names("!tier"), Vec::<String>::new());

    // The table form filters too.
    let table = cluster.kubectl_ok(&["get", "pods", "-l", "app=web"]);
    assert!(table.contains("web") && !table.contains("db"), "{table}");
}

#[test]
fn describe_pod_shows_its_spec_and_status() {
    let cluster = TestCluster::start();
    cluster.apply("pod.yaml", POD, &[]);
    let out = cluster.kubectl_ok(&["describe", "pod", "web"]);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("describe has no {name:?} line:\n{out}"))
            .to_owned()
    };
    assert_eq!(field("Name:"), "web");
    assert_eq!(field("Namespace:"), "default");
    assert_eq!(field("Status:"), "Pending");
    assert!(field("Labels:").starts_with("app=web"), "{out}");
    // Column widths depend on the longest label; compare whitespace-normalised lines.
    let lines: Vec<String> = out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    let has = |want: &str| lines.iter().any(|l| l == want);
    assert!(has("web:"), "a section for container web:\n{out}");
    assert!(has("Image: nginx:1.27"), "{out}");
    assert!(has("MODE: test"), "the container's env:\n{out}");
    assert!(out.contains("80/TCP"), "container port with its defaulted protocol:\n{out}");
}

#[test]
fn get_a_missing_pod_reports_not_found() {
    let cluster = TestCluster::start();
    let err = cluster.kubectl_fails(&["get", "pod", "nope"]);
    assert!(err.contains(r#"Error from server (NotFound): pods "nope" not found"#), "{err}");
}

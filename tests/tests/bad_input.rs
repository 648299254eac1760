//! Wrong input is refused with Kubernetes' Status errors, kubectl shows the
//! server's message, and the store is left exactly as it was.

use hawser_tests::manifests::SERVICE_NODEPORT;
use hawser_tests::{TestCluster, block_on};
use serde_json::{Value, json};

const KINDS: &str = "pods,services,replicationcontrollers,configmaps";

/// Every object of the kinds these tests touch, as (kind/name, resourceVersion),
/// in every namespace: equal snapshots mean nothing was written.
fn snapshot(cluster: &TestCluster) -> Vec<(String, String)> {
    let list = cluster.kubectl_json(&["get", KINDS, "-A"]);
    let mut items: Vec<(String, String)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| {
            (
                format!(
                    "{}/{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["namespace"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                ),
                o["metadata"]["resourceVersion"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    items.sort();
    items
}

#[test]
fn a_manifest_with_an_invalid_name_is_refused_with_the_servers_message() {
    let cluster = TestCluster::start();
    let before = snapshot(&cluster);
    let path = cluster.write_manifest("bad-name.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\ndata:\n  k: v\n");
    let err = cluster.kubectl_fails(&["apply", "-f", path.to_str().unwrap()]);
    assert!(err.contains(r#"The ConfigMap "Bad_Name" is invalid"#), "{err}");
    assert!(err.contains("metadata.name"), "the message should name the field:\n{err}");
    assert_eq!(snapshot(&cluster), before, "a refused create changed the store");
}

#[test]
fn a_service_asking_for_a_node_port_in_use_is_refused() {
    let cluster = TestCluster::start();
    let with_port = |name: &str| {
        SERVICE_NODEPORT
            .replace("name: web\n  labels", &format!("name: {name}\n  labels"))
            .replace("targetPort: 80", "targetPort: 80\n    nodePort: 30080")
    };
    let first = cluster.write_manifest("first.yaml", &with_port("first"));
    cluster.kubectl_ok(&["apply", "-f", first.to_str().unwrap()]);
    let before = snapshot(&cluster);

    let second = cluster.write_manifest("second.yaml", &with_port("second"));
    let err = cluster.kubectl_fails(&["apply", "-f", second.to_str().unwrap()]);
    assert!(err.contains(r#"The Service "second" is invalid"#), "{err}");
    assert!(err.contains("spec.ports[0].nodePort"), "{err}");
    assert!(err.contains("30080"), "{err}");
    assert_eq!(snapshot(&cluster), before, "a refused create changed the store");
    let svc = cluster.kubectl_json(&["get", "service", "first"]);
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
}

#[test]
fn malformed_yaml_is_refused_and_nothing_is_written() {
    let cluster = TestCluster::start();
    let before = snapshot(&cluster);
    let path = cluster.write_manifest("broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\n data: [unclosed\n");
    let err = cluster.kubectl_fails(&["apply", "-f", path.to_str().unwrap()]);
    assert!(err.contains("yaml") || err.contains("YAML"), "{err}");
    assert_eq!(snapshot(&cluster), before);

    // kubectl rejects bad YAML before sending; a malformed body that reaches
    // the server must get a 400 BadRequest Status.
    let (status, body) = block_on(async {
        let resp = cluster
            .client()
            .post(format!("{}/api/v1/namespaces/default/configmaps", cluster.url()))
            .header("Content-Type", "application/json")
            .body(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"#)
            .send()
            .await
            .expect("POST reaches the server");
        (resp.status().as_u16(), resp.json::<Value>().await.expect("a JSON Status"))
    });
    assert_eq!(status, 400, "{body}");
    assert_status(&body, "BadRequest", 400);
    assert_eq!(snapshot(&cluster), before);
}

#[test]
fn an_unknown_kind_is_refused_and_nothing_is_written() {
    let cluster = TestCluster::start();
    let before = snapshot(&cluster);
    let path = cluster.write_manifest("unknown.yaml", "apiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: frob\nspec: {}\n");
    let err = cluster.kubectl_fails(&["apply", "-f", path.to_str().unwrap()]);
    assert!(err.contains(r#"no matches for kind "Frobnicator" in version "v1""#), "{err}");
    assert_eq!(snapshot(&cluster), before);

    // The same kind sent straight to a made-up path: 404 NotFound Status.
    let (status, body) = block_on(async {
        let resp = cluster
            .client()
            .post(format!("{}/api/v1/namespaces/default/frobnicators", cluster.url()))
            .json(&json!({"apiVersion": "v1", "kind": "Frobnicator", "metadata": {"name": "frob"}}))
            .send()
            .await
            .expect("POST reaches the server");
        (resp.status().as_u16(), resp.json::<Value>().await.expect("a JSON Status"))
    });
    assert_eq!(status, 404, "{body}");
    assert_status(&body, "NotFound", 404);
}

#[test]
fn requests_without_a_valid_token_get_401_unauthorized() {
    let cluster = TestCluster::start();
    let url = cluster.url();
    let anonymous = cluster.anonymous_client();
    let wrong = hawser_tests::https_client(cluster.ca_pem(), Some("not-the-token"));
    let answers = block_on(async {
        let mut answers = Vec::new();
        for (who, client) in [("no token", &anonymous), ("wrong token", &wrong)] {
            for path in ["/api/v1/namespaces", "/api", "/apis/apps/v1/deployments"] {
                let resp = client.get(format!("{url}{path}")).send().await.expect("request");
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                answers.push((who, path, status, body));
            }
        }
        // Health and version stay open: load balancers and kubectl's
        // dispatcher ask before any credentials are involved.
        for path in ["/healthz", "/readyz", "/livez", "/version"] {
            let resp = anonymous.get(format!("{url}{path}")).send().await.expect("request");
            answers.push(("no token", path, resp.status().as_u16(), Value::Null));
        }
        answers
    });
    for (who, path, status, body) in answers {
        if ["/healthz", "/readyz", "/livez", "/version"].contains(&path) {
            assert_eq!(status, 200, "{path} with {who}");
        } else {
            assert_eq!(status, 401, "{path} with {who}: {body}");
            assert_status(&body, "Unauthorized", 401);
        }
    }
}

#[test]
fn a_service_requesting_a_taken_or_out_of_range_ip_or_port_gets_422_naming_the_field() {
    let cluster = TestCluster::start();
    let create = |spec: Value| {
        let svc = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "pinned"},
            "spec": spec,
        });
        block_on(async {
            let resp = cluster
                .client()
                .post(format!("{}/api/v1/namespaces/default/services", cluster.url()))
                .json(&svc)
                .send()
                .await
                .expect("POST reaches the server");
            (resp.status().as_u16(), resp.json::<Value>().await.expect("a JSON body"))
        })
    };
    let port = json!([{"port": 80, "targetPort": 80}]);
    let cases = [
        ("clusterIP taken by `kubernetes`", json!({"clusterIP": "10.96.0.1", "ports": port}), "spec.clusterIP"),
        ("clusterIP outside 10.96.0.0/12", json!({"clusterIP": "192.0.2.10", "ports": port}), "spec.clusterIP"),
        ("nodePort outside 30000-32767", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]}), "spec.ports[0].nodePort"),
    ];
    let before = snapshot(&cluster);
    for (what, spec, field) in cases {
        let (status, body) = create(spec);
        assert_eq!(status, 422, "{what}: {body}");
        assert_status(&body, "Invalid", 422);
        let causes = body["details"]["causes"].as_array().unwrap_or_else(|| panic!("{what}: no details.causes in {body}"));
        assert!(
            causes.iter().any(|c| c["field"].as_str().is_some_and(|f| f.starts_with(field))),
            "{what}: no cause naming {field} in {body}"
        );
    }
    assert_eq!(snapshot(&cluster), before);

    // A free in-range address is granted as asked.
    let (status, body) = create(json!({"clusterIP": "10.100.0.42", "ports": port}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["spec"]["clusterIP"], "10.100.0.42");
}

#[test]
fn a_request_body_over_3_mib_is_refused() {
    let cluster = TestCluster::start();
    let big = "x".repeat(3 * 1024 * 1024 + 1);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": big}});
    let (status, body) = block_on(async {
        let resp = cluster
            .client()
            .post(format!("{}/api/v1/namespaces/default/configmaps", cluster.url()))
            .json(&cm)
            .send()
            .await
            .expect("POST reaches the server");
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap_or(Value::Null))
    });
    assert_eq!(status, 413, "{body}");
    assert_status(&body, "RequestEntityTooLarge", 413);
    let err = cluster.kubectl_fails(&["get", "configmap", "big"]);
    assert!(err.contains("NotFound"), "{err}");
}

fn assert_status(body: &Value, reason: &str, code: u64) {
    assert_eq!(body["kind"], "Status", "not a Status: {body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "Status without a message: {body}");
}

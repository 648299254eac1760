//! The API machinery clients rely on, spoken to over plain HTTP: paging,
//! selectors, optimistic concurrency, generation, the four patch types,
//! field validation, finalizers and owner propagation, deletecollection,
//! watch, pod binding and graceful pod deletion, the scale subresource,
//! namespace admission and discovery.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use hawser_tests::{TestCluster, block_on, poll_until};
use reqwest::Method;
use serde_json::{Value, json};

/// How long a background controller (garbage collector, finalizer handling)
/// may take to act on something the facts say it acts on.
const CONTROLLER_WAIT: Duration = Duration::from_secs(10);
/// How long one watch event may take to arrive.
const EVENT_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------

/// One answer from the server: status code, `Warning` headers, JSON body
/// (or the raw text as a JSON string when it is not JSON).
#[derive(Debug)]
struct Reply {
    status: u16,
    warnings: Vec<String>,
    body: Value,
}

impl Reply {
    /// The body, after asserting the status code; `what` names the request.
    fn expect(self, status: u16, what: &str) -> Value {
        assert_eq!(self.status, status, "{what}: unexpected status; body: {}", self.body);
        self.body
    }

    /// Asserts a Kubernetes `Status` failure with this code and reason.
    fn expect_status(self, code: u16, reason: &str, what: &str) -> Value {
        let body = self.expect(code, what);
        assert_eq!(body["kind"], "Status", "{what}: not a Status: {body}");
        assert_eq!(body["status"], "Failure", "{what}: {body}");
        assert_eq!(body["reason"], reason, "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        body
    }
}

/// Sends one request with the admin token. A fresh client per call: each
/// `block_on` has its own runtime, and pooled connections must not outlive it.
fn send(cluster: &TestCluster, method: Method, path: &str, content_type: Option<&str>, body: Option<String>) -> Reply {
    let url = format!("{}{path}", cluster.url());
    block_on(async {
        let mut req = cluster.client().request(method.clone(), &url);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path} did not reach the server: {e}"));
        let status = resp.status().as_u16();
        let warnings =
            resp.headers().get_all("warning").iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect::<Vec<_>>();
        let text = resp.text().await.unwrap_or_else(|e| panic!("{method} {path}: reading the body failed: {e}"));
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, warnings, body }
    })
}

fn get(cluster: &TestCluster, path: &str) -> Reply {
    send(cluster, Method::GET, path, None, None)
}

fn post(cluster: &TestCluster, path: &str, obj: &Value) -> Reply {
    send(cluster, Method::POST, path, Some("application/json"), Some(obj.to_string()))
}

fn put(cluster: &TestCluster, path: &str, obj: &Value) -> Reply {
    send(cluster, Method::PUT, path, Some("application/json"), Some(obj.to_string()))
}

fn patch(cluster: &TestCluster, path: &str, content_type: &str, patch: &Value) -> Reply {
    send(cluster, Method::PATCH, path, Some(content_type), Some(patch.to_string()))
}

fn merge_patch(cluster: &TestCluster, path: &str, body: &Value) -> Reply {
    patch(cluster, path, "application/merge-patch+json", body)
}

fn delete(cluster: &TestCluster, path: &str, options: Option<&Value>) -> Reply {
    match options {
        Some(o) => send(cluster, Method::DELETE, path, Some("application/json"), Some(o.to_string())),
        None => send(cluster, Method::DELETE, path, None, None),
    }
}

/// `k=v&k2=v2`, percent-encoded (selectors carry spaces, parentheses, `!`, `=`).
fn query(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("a fixed URL parses");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or("").to_owned()
}

fn create_namespace(cluster: &TestCluster, name: &str) {
    post(cluster, "/api/v1/namespaces", &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .expect(201, &format!("create namespace {name}"));
}

fn configmaps(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps")
}

fn pods(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

fn deployments(ns: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/deployments")
}

/// Creates a ConfigMap with `data: {k: v}` and the given labels; returns it.
fn create_configmap(cluster: &TestCluster, ns: &str, name: &str, labels: Value) -> Value {
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    });
    post(cluster, &configmaps(ns), &cm).expect(201, &format!("create configmap {ns}/{name}"))
}

/// A pod with one container `web`; `extra_spec` is merged into `spec`.
fn pod(name: &str, extra_spec: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    });
    if let Value::Object(extra) = extra_spec {
        for (k, v) in extra {
            pod["spec"][k] = v;
        }
    }
    pod
}

/// Deployment `name`, 2 replicas, selector app=<name>, containers `api`
/// (port 8080, env A=1, B=2) and `sidecar`.
fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {
                        "name": "api",
                        "image": "registry.example/api:1.0",
                        "ports": [{"containerPort": 8080}],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    },
                    {"name": "sidecar", "image": "registry.example/sidecar:1.0", "args": ["--verbose"]},
                ]},
            },
        },
    })
}

fn create_deployment(cluster: &TestCluster, ns: &str, name: &str) -> Value {
    post(cluster, &deployments(ns), &deployment(name)).expect(201, &format!("create deployment {ns}/{name}"))
}

/// `metadata.resourceVersion` as a number (Hawser's are numeric, and the
/// tests compare them).
fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no numeric metadata.resourceVersion in {obj}"))
}

/// `metadata.name` of every item of a list, in the order listed.
fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap_or_else(|| panic!("item without a name in {list}")).to_owned())
        .collect()
}

fn list_names(cluster: &TestCluster, collection: &str, params: &[(&str, &str)]) -> Vec<String> {
    let path = format!("{collection}?{}", query(params));
    names(&get(cluster, &path).expect(200, &format!("GET {path}")))
}

/// Polls (at most [`CONTROLLER_WAIT`]) until GET `path` answers 404.
fn wait_gone(cluster: &TestCluster, path: &str, why: &str) {
    poll_until(CONTROLLER_WAIT, &format!("{path} still exists: {why}"), || (get(cluster, path).status == 404).then_some(()));
}

// ---------------------------------------------------------------------------
// 1. Paging
// ---------------------------------------------------------------------------

#[test]
fn list_paging_with_limit_and_continue_returns_every_object_once_in_name_order() {
    let cluster = TestCluster::start();
    create_namespace(&cluster, "paging");
    // Created out of name order, so an order by creation would show.
    let mut created = vec!["cm-e", "cm-a", "cm-g", "cm-c", "cm-b", "cm-f", "cm-d"];
    for name in &created {
        create_configmap(&cluster, "paging", name, json!({}));
    }
    created.sort();
    let all = list_names(&cluster, &configmaps("paging"), &[]);
    for name in &created {
        assert!(all.contains(&name.to_string()), "unpaged list lacks {name}: {all:?}");
    }

    let first = get(&cluster, &format!("{}?limit=2", configmaps("paging"))).expect(200, "first page");
    assert_eq!(names(&first).len(), 2, "limit=2 must return 2 items: {first}");
    let mut token = first["metadata"]["continue"].as_str().unwrap_or_default().to_owned();
    assert!(!token.is_empty(), "a partial page must carry metadata.continue: {first}");
    let mut paged = names(&first);
    let mut pages = 1;
    while !token.is_empty() {
        pages += 1;
        assert!(pages <= all.len(), "more pages than objects: continue tokens never run out (last token {token:?})");
        let path = format!("{}?{}", configmaps("paging"), query(&[("limit", "2"), ("continue", &token)]));
        let page = get(&cluster, &path).expect(200, "next page");
        let items = names(&page);
        assert!(items.len() <= 2, "limit=2 returned {} items: {page}", items.len());
        paged.extend(items);
        token = page["metadata"]["continue"].as_str().unwrap_or_default().to_owned();
    }
    let mut sorted = paged.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(paged, sorted, "pages are not in name order or repeat an object");
    assert_eq!(paged, all, "following continue tokens must yield exactly the unpaged list");
}

#[test]
fn a_garbage_continue_token_is_a_400_bad_request() {
    let cluster = TestCluster::start();
    create_configmap(&cluster, "default", "one", json!({}));
    let path = format!("{}?{}", configmaps("default"), query(&[("limit", "2"), ("continue", "not-a-real-token!!")]));
    get(&cluster, &path).expect_status(400, "BadRequest", "list with a garbage continue token");
}

// ---------------------------------------------------------------------------
// 2. Field and label selectors
// ---------------------------------------------------------------------------

#[test]
fn field_selectors_filter_by_name_and_by_empty_node_name() {
    let cluster = TestCluster::start();
    post(&cluster, &pods("default"), &pod("unbound", json!({}))).expect(201, "create pod unbound");
    post(&cluster, &pods("default"), &pod("placed", json!({"nodeName": "n1"}))).expect(201, "create pod placed");
    create_configmap(&cluster, "default", "x", json!({}));
    create_configmap(&cluster, "default", "y", json!({}));

    assert_eq!(list_names(&cluster, &configmaps("default"), &[("fieldSelector", "metadata.name=x")]), ["x"]);
    assert_eq!(list_names(&cluster, &pods("default"), &[("fieldSelector", "metadata.name=placed")]), ["placed"]);
    assert_eq!(
        list_names(&cluster, &pods("default"), &[("fieldSelector", "spec.nodeName=")]),
        ["unbound"],
        "spec.nodeName= selects pods no node was assigned"
    );
    assert_eq!(list_names(&cluster, &pods("default"), &[("fieldSelector", "spec.nodeName=n1")]), ["placed"]);
}

#[test]
fn an_unsupported_field_selector_is_a_400_naming_the_field() {
    let cluster = TestCluster::start();
    let path = format!("{}?{}", pods("default"), query(&[("fieldSelector", "spec.foo=bar")]));
    let body = get(&cluster, &path).expect_status(400, "BadRequest", "list with fieldSelector=spec.foo=bar");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("field label not supported: spec.foo"), "{body}");
}

#[test]
fn label_selector_set_operators_filter_lists() {
    let cluster = TestCluster::start();
    create_namespace(&cluster, "labels");
    create_configmap(&cluster, "labels", "prod", json!({"env": "prod"}));
    create_configmap(&cluster, "labels", "dev", json!({"env": "dev"}));
    create_configmap(&cluster, "labels", "test", json!({"env": "test"}));
    create_configmap(&cluster, "labels", "none", json!({"other": "yes"}));

    let cases: &[(&str, &[&str])] = &[
        ("env in (prod,dev)", &["dev", "prod"]),
        ("env notin (prod)", &["dev", "none", "test"]),
        ("!env", &["none"]),
        ("env", &["dev", "prod", "test"]),
        ("env,env notin (dev,test)", &["prod"]),
    ];
    for (selector, expected) in cases {
        let got = list_names(&cluster, &configmaps("labels"), &[("labelSelector", selector)]);
        assert_eq!(got, *expected, "labelSelector={selector}");
    }
}

// ---------------------------------------------------------------------------
// 3. Optimistic concurrency
// ---------------------------------------------------------------------------

#[test]
fn put_with_a_stale_resource_version_is_a_409_conflict_and_the_current_one_wins() {
    let cluster = TestCluster::start();
    let created = create_configmap(&cluster, "default", "occ", json!({}));
    let path = format!("{}/occ", configmaps("default"));

    let mut first = created.clone();
    first["data"]["k"] = json!("first");
    let updated = put(&cluster, &path, &first).expect(200, "PUT with the current resourceVersion");
    assert!(rv(&updated) > rv(&created), "an update must raise the resourceVersion: {} -> {}", rv(&created), rv(&updated));
    assert_eq!(updated["data"]["k"], "first");

    let mut stale = created.clone();
    stale["data"]["k"] = json!("lost update");
    put(&cluster, &path, &stale).expect_status(409, "Conflict", "PUT with a stale resourceVersion");
    let stored = get(&cluster, &path).expect(200, "GET after the refused PUT");
    assert_eq!(stored["data"]["k"], "first", "a conflicting PUT must not be written");
    assert_eq!(rv(&stored), rv(&updated));
}

#[test]
fn a_put_or_patch_that_changes_nothing_keeps_the_resource_version() {
    let cluster = TestCluster::start();
    let created = create_configmap(&cluster, "default", "same", json!({"a": "b"}));
    let path = format!("{}/same", configmaps("default"));

    let again = put(&cluster, &path, &created).expect(200, "PUT of the object as read");
    assert_eq!(rv(&again), rv(&created), "a no-op PUT wrote a new resourceVersion");
    let patched = merge_patch(&cluster, &path, &json!({"data": {"k": "v"}, "metadata": {"labels": {"a": "b"}}}))
        .expect(200, "merge patch restating current values");
    assert_eq!(rv(&patched), rv(&created), "a no-op merge patch wrote a new resourceVersion");
    assert_eq!(rv(&get(&cluster, &path).expect(200, "GET")), rv(&created));
}

// ---------------------------------------------------------------------------
// 4. generation
// ---------------------------------------------------------------------------

#[test]
fn generation_starts_at_one_and_only_spec_changes_bump_it() {
    let cluster = TestCluster::start();
    let created = create_deployment(&cluster, "default", "gen");
    assert_eq!(created["metadata"]["generation"], 1, "{created}");
    let path = format!("{}/gen", deployments("default"));

    let labelled = merge_patch(&cluster, &path, &json!({"metadata": {"labels": {"touched": "yes"}}})).expect(200, "label patch");
    assert!(rv(&labelled) > rv(&created), "the label patch should have been written");
    assert_eq!(labelled["metadata"]["generation"], 1, "a metadata-only change must not bump generation: {labelled}");

    let scaled = merge_patch(&cluster, &path, &json!({"spec": {"replicas": 4}})).expect(200, "replicas patch");
    assert_eq!(scaled["spec"]["replicas"], 4);
    assert_eq!(scaled["metadata"]["generation"], 2, "a spec change must bump generation: {scaled}");
}

// ---------------------------------------------------------------------------
// 5. Patch types
// ---------------------------------------------------------------------------

#[test]
fn json_patch_applies_in_order_and_a_failing_test_op_is_422_and_writes_nothing() {
    let cluster = TestCluster::start();
    let created = create_deployment(&cluster, "default", "jp");
    let path = format!("{}/jp", deployments("default"));
    const JSON_PATCH: &str = "application/json-patch+json";

    let failing = json!([
        {"op": "test", "path": "/spec/replicas", "value": 99},
        {"op": "replace", "path": "/spec/replicas", "value": 7},
    ]);
    patch(&cluster, &path, JSON_PATCH, &failing).expect_status(422, "Invalid", "json patch whose test op fails");
    let stored = get(&cluster, &path).expect(200, "GET after the failed patch");
    assert_eq!(stored["spec"]["replicas"], 2, "a failed json patch wrote its replace op");
    assert_eq!(rv(&stored), rv(&created), "a failed json patch wrote something");

    let passing = json!([
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/replicas", "value": 7},
        {"op": "add", "path": "/metadata/labels/patched", "value": "json"},
    ]);
    let patched = patch(&cluster, &path, JSON_PATCH, &passing).expect(200, "json patch whose test op holds");
    assert_eq!(patched["spec"]["replicas"], 7);
    assert_eq!(patched["metadata"]["labels"]["patched"], "json");
}

#[test]
fn merge_patch_sets_and_removes_keys_and_replaces_lists_whole() {
    let cluster = TestCluster::start();
    create_deployment(&cluster, "default", "mp");
    let path = format!("{}/mp", deployments("default"));
    let body = json!({
        "metadata": {"labels": {"app": null, "new": "yes"}},
        "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "registry.example/only:1"}]}}},
    });
    let patched = merge_patch(&cluster, &path, &body).expect(200, "merge patch");
    let labels = &patched["metadata"]["labels"];
    assert_eq!(labels.get("app"), None, "null removes a key: {labels}");
    assert_eq!(labels["new"], "yes");
    let containers = patched["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "a merge patch replaces lists whole: {containers:?}");
    assert_eq!(containers[0]["name"], "only");
    assert_eq!(patched["spec"]["replicas"], 2, "untouched fields stay");
}

#[test]
fn strategic_merge_patch_merges_container_env_by_name_and_keeps_other_containers() {
    let cluster = TestCluster::start();
    create_deployment(&cluster, "default", "smp");
    let path = format!("{}/smp", deployments("default"));
    let body = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "api", "env": [{"name": "B", "value": "changed"}, {"name": "C", "value": "3"}]},
    ]}}}});
    let patched = patch(&cluster, &path, "application/strategic-merge-patch+json", &body).expect(200, "strategic merge patch");

    let containers = patched["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    let find = |name: &str| {
        containers.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("container {name} lost by the patch: {containers:?}"))
    };
    assert_eq!(containers.len(), 2, "containers are merged by name, not replaced: {containers:?}");
    let api = find("api");
    let mut env: Vec<(String, String)> = api["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().unwrap_or("?").to_owned(), e["value"].as_str().unwrap_or("?").to_owned()))
        .collect();
    env.sort();
    let expected: Vec<(String, String)> =
        [("A", "1"), ("B", "changed"), ("C", "3")].iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    assert_eq!(env, expected, "env must be merged by name");
    assert_eq!(api["image"], "registry.example/api:1.0", "fields the patch did not name stay: {api}");
    assert_eq!(api["ports"][0]["containerPort"], 8080, "{api}");
    let sidecar = find("sidecar");
    assert_eq!(sidecar["image"], "registry.example/sidecar:1.0", "{sidecar}");
    assert_eq!(sidecar["args"], json!(["--verbose"]), "{sidecar}");
}

#[test]
fn server_side_apply_creates_is_idempotent_and_conflicts_between_managers_unless_forced() {
    // No controllers: the deployment controller's status write between the
    // two applies would bump the resourceVersion the test compares (CI saw it).
    let cluster = TestCluster::start_with(&["--disable-controller-manager"]);
    let path = format!("{}/ssa", deployments("default"));
    const APPLY: &str = "application/apply-patch+yaml";
    let apply = |manager: &str, replicas: u32, force: bool| {
        let mut manifest = deployment("ssa");
        manifest["spec"]["replicas"] = json!(replicas);
        let yaml = serde_yaml::to_string(&manifest).expect("manifest serializes as YAML");
        let force = if force { "&force=true" } else { "" };
        send(&cluster, Method::PATCH, &format!("{path}?fieldManager={manager}{force}"), Some(APPLY), Some(yaml))
    };

    let created = apply("m1", 2, false).expect(201, "first apply by m1 creates the deployment");
    assert_eq!(created["spec"]["replicas"], 2);
    let again = apply("m1", 2, false).expect(200, "identical re-apply by m1");
    assert_eq!(rv(&again), rv(&created), "an identical apply wrote a new resourceVersion");

    let body = apply("m2", 3, false).expect_status(409, "Conflict", "m2 applying a replicas value m1 owns");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(".spec.replicas"), "the conflict should name the field: {body}");
    let stored = get(&cluster, &path).expect(200, "GET after the conflict");
    assert_eq!(stored["spec"]["replicas"], 2, "a conflicting apply was written");

    let forced = apply("m2", 3, true).expect(200, "forced apply by m2");
    assert_eq!(forced["spec"]["replicas"], 3);
    assert_eq!(get(&cluster, &path).expect(200, "GET")["spec"]["replicas"], 3);
}

// ---------------------------------------------------------------------------
// 6. fieldValidation
// ---------------------------------------------------------------------------

#[test]
fn field_validation_strict_refuses_unknown_fields_and_warn_drops_them_with_a_warning() {
    let cluster = TestCluster::start();
    let bogus = |name: &str| pod(name, json!({"bogus": true}));

    let body = post(&cluster, &format!("{}?fieldValidation=Strict", pods("default")), &bogus("strict")).expect_status(
        400,
        "BadRequest",
        "Strict create with spec.bogus",
    );
    assert!(body["message"].as_str().unwrap_or_default().contains(r#"unknown field "spec.bogus""#), "{body}");
    get(&cluster, &format!("{}/strict", pods("default"))).expect(404, "a Strict-refused pod must not exist");

    for (name, path) in [("warned", format!("{}?fieldValidation=Warn", pods("default"))), ("default", pods("default"))] {
        let reply = post(&cluster, &path, &bogus(name));
        let warnings = reply.warnings.clone();
        let created = reply.expect(201, &format!("POST {path} with spec.bogus"));
        assert!(
            warnings.iter().any(|w| w.contains("spec.bogus")),
            "POST {path}: expected a Warning header naming spec.bogus, got {warnings:?}"
        );
        assert_eq!(created["spec"].get("bogus"), None, "the created object kept the unknown field: {created}");
        let stored = get(&cluster, &format!("{}/{name}", pods("default"))).expect(200, "GET the warned pod");
        assert_eq!(stored["spec"].get("bogus"), None, "the stored object kept the unknown field: {stored}");
    }
}

// ---------------------------------------------------------------------------
// 7. Finalizers and propagation
// ---------------------------------------------------------------------------

#[test]
fn a_finalizer_holds_a_deleted_object_until_it_is_removed() {
    let cluster = TestCluster::start();
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
        "data": {"k": "v"},
    });
    post(&cluster, &configmaps("default"), &cm).expect(201, "create held");
    let path = format!("{}/held", configmaps("default"));

    delete(&cluster, &path, None).expect(200, "DELETE of an object with a finalizer");
    let held = get(&cluster, &path).expect(200, "an object with a finalizer must outlive its DELETE");
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "deletionTimestamp not set: {held}");
    assert_eq!(held["metadata"]["finalizers"], json!(["example.com/hold"]));

    merge_patch(&cluster, &path, &json!({"metadata": {"finalizers": null}})).expect(200, "remove the finalizer");
    wait_gone(&cluster, &path, "removing the last finalizer of a deleted object should remove it");
}

/// Creates ConfigMap `owner` and ConfigMap `dep` owned by it (`dep_extra`
/// merged into dep's metadata); returns dep's path.
fn owner_and_dependent(cluster: &TestCluster, dep_extra: Value) -> (String, String) {
    let owner = create_configmap(cluster, "default", "owner", json!({}));
    let uid = owner["metadata"]["uid"].as_str().unwrap_or_else(|| panic!("owner has no uid: {owner}")).to_owned();
    let mut dep = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dep",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
        "data": {"k": "v"},
    });
    if let Value::Object(extra) = dep_extra {
        for (k, v) in extra {
            dep["metadata"][k] = v;
        }
    }
    post(cluster, &configmaps("default"), &dep).expect(201, "create dep");
    (format!("{}/owner", configmaps("default")), format!("{}/dep", configmaps("default")))
}

#[test]
fn background_propagation_deletes_dependents() {
    let cluster = TestCluster::start();
    let (owner, dep) = owner_and_dependent(&cluster, json!({}));
    delete(&cluster, &owner, Some(&json!({"propagationPolicy": "Background"}))).expect(200, "DELETE owner (Background)");
    wait_gone(&cluster, &owner, "a Background delete of an owner without finalizers should remove it");
    wait_gone(&cluster, &dep, "the garbage collector should delete dependents of a deleted owner");
}

#[test]
fn orphan_propagation_keeps_dependents_and_strips_their_owner_reference() {
    let cluster = TestCluster::start();
    let (owner, dep) = owner_and_dependent(&cluster, json!({}));
    delete(&cluster, &owner, Some(&json!({"propagationPolicy": "Orphan"}))).expect(200, "DELETE owner (Orphan)");
    poll_until(
        CONTROLLER_WAIT,
        "dep still lists owner in ownerReferences after an Orphan delete (orphan finalizer not processed?)",
        || {
            let d = get(&cluster, &dep).expect(200, "an orphaned dependent must not be deleted");
            d["metadata"]["ownerReferences"].as_array().is_none_or(|refs| refs.is_empty()).then_some(())
        },
    );
    wait_gone(&cluster, &owner, "the owner should go once its dependents are orphaned");
    let d = get(&cluster, &dep).expect(200, "dep must survive the orphaning delete");
    assert!(d["metadata"]["deletionTimestamp"].is_null(), "an orphaned dependent is being deleted: {d}");
}

#[test]
fn foreground_propagation_holds_the_owner_until_its_dependents_are_gone() {
    let cluster = TestCluster::start();
    // dep's own finalizer keeps it (and so the owner) around long enough to look.
    let (owner, dep) = owner_and_dependent(&cluster, json!({"finalizers": ["example.com/hold"]}));
    delete(&cluster, &owner, Some(&json!({"propagationPolicy": "Foreground"}))).expect(200, "DELETE owner (Foreground)");

    let o = get(&cluster, &owner).expect(200, "a Foreground-deleted owner must stay while dependents exist");
    assert!(o["metadata"]["deletionTimestamp"].is_string(), "{o}");
    let finalizers = o["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
    assert!(finalizers.contains(&json!("foregroundDeletion")), "owner lacks the foregroundDeletion finalizer: {o}");

    poll_until(CONTROLLER_WAIT, "dep has no deletionTimestamp: the garbage collector did not delete the owner's dependents", || {
        get(&cluster, &dep).expect(200, "dep is held by its own finalizer")["metadata"]["deletionTimestamp"].is_string().then_some(())
    });
    let o = get(&cluster, &owner).expect(200, "the owner must wait for dep, which is still there");
    assert!(o["metadata"]["finalizers"].as_array().is_some_and(|f| f.contains(&json!("foregroundDeletion"))), "{o}");

    merge_patch(&cluster, &dep, &json!({"metadata": {"finalizers": null}})).expect(200, "release dep");
    wait_gone(&cluster, &dep, "dep lost its last finalizer while being deleted");
    wait_gone(&cluster, &owner, "the owner's foregroundDeletion finalizer should be dropped once dependents are gone");
}

// ---------------------------------------------------------------------------
// 8. deletecollection
// ---------------------------------------------------------------------------

#[test]
fn deletecollection_with_a_label_selector_deletes_exactly_the_matching_objects() {
    let cluster = TestCluster::start();
    create_namespace(&cluster, "dc");
    create_configmap(&cluster, "dc", "a1", json!({"group": "a"}));
    create_configmap(&cluster, "dc", "a2", json!({"group": "a"}));
    create_configmap(&cluster, "dc", "b1", json!({"group": "b"}));
    create_configmap(&cluster, "dc", "plain", json!({}));
    create_configmap(&cluster, "default", "a-elsewhere", json!({"group": "a"}));
    let before = list_names(&cluster, &configmaps("dc"), &[]);

    let path = format!("{}?{}", configmaps("dc"), query(&[("labelSelector", "group=a")]));
    delete(&cluster, &path, None).expect(200, "deletecollection group=a");
    let expected: Vec<String> = before.into_iter().filter(|n| n != "a1" && n != "a2").collect();
    assert_eq!(list_names(&cluster, &configmaps("dc"), &[]), expected);
    get(&cluster, &format!("{}/a-elsewhere", configmaps("default"))).expect(200, "deletecollection reached another namespace");
}

// ---------------------------------------------------------------------------
// 9. Watch
// ---------------------------------------------------------------------------

/// A watch response read line by line; every event seen is kept for the
/// failure message.
struct Watch {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: Vec<u8>,
    seen: Vec<String>,
    path: String,
}

/// A client without the harness's 30 s whole-request timeout (a watch body
/// is read for as long as the test needs it; each read is bounded instead).
fn watch_client(cluster: &TestCluster) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(cluster.ca_pem().as_bytes()).expect("CA parses");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", cluster.token()).parse().expect("token is a header value"));
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .expect("build a watch client")
}

impl Watch {
    async fn open(client: &reqwest::Client, cluster: &TestCluster, path: String) -> Watch {
        let resp = tokio::time::timeout(EVENT_WAIT, client.get(format!("{}{path}", cluster.url())).send())
            .await
            .unwrap_or_else(|_| panic!("GET {path}: no response headers within {EVENT_WAIT:?}"))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.text().await.unwrap_or_default();
            panic!("GET {path}: expected 200 and an event stream, got {status}: {body}");
        }
        Watch { body: resp.bytes_stream().map(|chunk| chunk.map(|b| b.to_vec())).boxed(), buf: Vec::new(), seen: Vec::new(), path }
    }

    /// The next event other than a BOOKMARK; `what` says what is awaited.
    async fn next(&mut self, what: &str) -> Value {
        loop {
            let event = self.next_any(what).await;
            if event["type"] != "BOOKMARK" {
                return event;
            }
        }
    }

    async fn next_any(&mut self, what: &str) -> Value {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).trim().to_owned();
                if line.is_empty() {
                    continue;
                }
                let event: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("watch {}: invalid event line ({e}): {line}", self.path));
                self.seen.push(format!(
                    "{} {}",
                    event["type"].as_str().unwrap_or("?"),
                    event["object"]["metadata"]["name"].as_str().unwrap_or("?")
                ));
                return event;
            }
            match tokio::time::timeout(EVENT_WAIT, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend(chunk),
                Ok(Some(Err(e))) => panic!("watch {}: stream error ({e}) waiting for {what}; events so far: {:?}", self.path, self.seen),
                Ok(None) => {
                    panic!("watch {}: the server ended the stream while waiting for {what}; events so far: {:?}", self.path, self.seen)
                }
                Err(_) => {
                    panic!("watch {}: nothing within {EVENT_WAIT:?} while waiting for {what}; events so far: {:?}", self.path, self.seen)
                }
            }
        }
    }

    /// Asserts the next (non-bookmark) event is `kind` for object `name`; returns its object.
    async fn expect(&mut self, kind: &str, name: &str) -> Value {
        let what = format!("{kind} {name}");
        let event = self.next(&what).await;
        assert_eq!(
            (event["type"].as_str(), event["object"]["metadata"]["name"].as_str()),
            (Some(kind), Some(name)),
            "watch {}: expected {what} next; events so far: {:?}",
            self.path,
            self.seen
        );
        event["object"].clone()
    }
}

/// Async twins of the helpers above, for use inside one `block_on`.
async fn send_async(client: &reqwest::Client, cluster: &TestCluster, method: Method, path: &str, ct: &str, body: Value) -> Value {
    let resp = client
        .request(method.clone(), format!("{}{path}", cluster.url()))
        .header("Content-Type", ct)
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {path}: {status}: {body}");
    body
}

fn cm_body(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

#[test]
fn watch_from_a_resource_version_streams_later_changes_as_added_modified_deleted() {
    let cluster = TestCluster::start();
    create_namespace(&cluster, "w");
    let before = create_configmap(&cluster, "w", "before", json!({}));
    // The watch starts at `before`'s creation; the update below happens
    // before the watch is opened and must still be replayed, the creation not.
    let start = rv(&before).to_string();
    merge_patch(&cluster, &format!("{}/before", configmaps("w")), &json!({"data": {"k": "v2"}})).expect(200, "update before");

    block_on(async {
        let client = watch_client(&cluster);
        let path = format!("{}?watch=true&resourceVersion={start}", configmaps("w"));
        let mut watch = Watch::open(&client, &cluster, path).await;
        let replayed = watch.expect("MODIFIED", "before").await;
        assert_eq!(replayed["data"]["k"], "v2");

        let cms = configmaps("w");
        send_async(&client, &cluster, Method::POST, &cms, "application/json", cm_body("live", json!({}))).await;
        let added = watch.expect("ADDED", "live").await;
        assert_eq!(added["data"]["k"], "v");
        let item = format!("{cms}/live");
        send_async(&client, &cluster, Method::PATCH, &item, "application/merge-patch+json", json!({"data": {"k": "changed"}})).await;
        let modified = watch.expect("MODIFIED", "live").await;
        assert_eq!(modified["data"]["k"], "changed");
        assert!(rv(&modified) > rv(&added), "event resourceVersions must increase");
        send_async(&client, &cluster, Method::DELETE, &item, "application/json", json!({})).await;
        watch.expect("DELETED", "live").await;
    });
}

#[test]
fn a_label_selected_watch_reports_objects_entering_as_added_and_leaving_as_deleted() {
    let cluster = TestCluster::start();
    create_namespace(&cluster, "w");
    let list = get(&cluster, &configmaps("w")).expect(200, "list");
    let start = list["metadata"]["resourceVersion"].as_str().unwrap_or_else(|| panic!("list without resourceVersion: {list}")).to_owned();

    block_on(async {
        let client = watch_client(&cluster);
        let cms = configmaps("w");
        let path = format!("{cms}?{}", query(&[("watch", "true"), ("resourceVersion", &start), ("labelSelector", "tier=x")]));
        let mut watch = Watch::open(&client, &cluster, path).await;

        let merge = "application/merge-patch+json";
        send_async(&client, &cluster, Method::POST, &cms, "application/json", cm_body("noise", json!({"tier": "y"}))).await;
        send_async(&client, &cluster, Method::POST, &cms, "application/json", cm_body("mover", json!({}))).await;
        let mover = format!("{cms}/mover");
        send_async(&client, &cluster, Method::PATCH, &mover, merge, json!({"metadata": {"labels": {"tier": "x"}}})).await;
        let entered = watch.expect("ADDED", "mover").await;
        assert_eq!(entered["metadata"]["labels"]["tier"], "x");
        send_async(&client, &cluster, Method::PATCH, &mover, merge, json!({"data": {"k": "inside"}})).await;
        watch.expect("MODIFIED", "mover").await;
        send_async(&client, &cluster, Method::PATCH, &mover, merge, json!({"metadata": {"labels": {"tier": "y"}}})).await;
        let left = watch.expect("DELETED", "mover").await;
        assert_eq!(left["metadata"]["labels"]["tier"], "y", "the DELETED event carries the object as it now is");
        // Changes outside the selection stay silent: the next event is this one.
        send_async(&client, &cluster, Method::PATCH, &mover, merge, json!({"data": {"k": "outside"}})).await;
        send_async(&client, &cluster, Method::POST, &cms, "application/json", cm_body("born-inside", json!({"tier": "x"}))).await;
        watch.expect("ADDED", "born-inside").await;
    });
}

#[test]
fn a_watch_from_resource_version_zero_starts_with_existing_objects_and_accepts_bookmarks() {
    let cluster = TestCluster::start();
    create_namespace(&cluster, "w");
    create_configmap(&cluster, "w", "one", json!({}));
    create_configmap(&cluster, "w", "two", json!({}));
    let mut existing = list_names(&cluster, &configmaps("w"), &[]);
    existing.sort();

    block_on(async {
        let client = watch_client(&cluster);
        let cms = configmaps("w");
        let path = format!("{cms}?watch=true&resourceVersion=0&allowWatchBookmarks=true");
        let mut watch = Watch::open(&client, &cluster, path).await;
        let mut initial = Vec::new();
        for _ in 0..existing.len() {
            let event = watch.next("the existing objects as ADDED").await;
            assert_eq!(event["type"], "ADDED", "initial events must be ADDED: {event}");
            initial.push(event["object"]["metadata"]["name"].as_str().unwrap_or("?").to_owned());
        }
        initial.sort();
        assert_eq!(initial, existing, "resourceVersion=0 must first send every existing object");

        send_async(&client, &cluster, Method::POST, &cms, "application/json", cm_body("three", json!({}))).await;
        watch.expect("ADDED", "three").await;
    });
}

// ---------------------------------------------------------------------------
// 10. Binding and graceful pod deletion
// ---------------------------------------------------------------------------

fn binding(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}})
}

#[test]
fn binding_a_pod_sets_its_node_and_pod_scheduled_and_a_second_binding_conflicts() {
    let cluster = TestCluster::start();
    post(&cluster, &pods("default"), &pod("bindme", json!({}))).expect(201, "create pod");
    let path = format!("{}/bindme", pods("default"));

    post(&cluster, &format!("{path}/binding"), &binding("bindme", "n1")).expect(201, "first binding");
    let bound = get(&cluster, &path).expect(200, "GET bound pod");
    assert_eq!(bound["spec"]["nodeName"], "n1", "{bound}");
    let conditions = bound["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let scheduled = conditions.iter().find(|c| c["type"] == "PodScheduled");
    assert!(scheduled.is_some_and(|c| c["status"] == "True"), "no PodScheduled=True condition: {bound}");

    post(&cluster, &format!("{path}/binding"), &binding("bindme", "n2")).expect_status(409, "Conflict", "second binding");
    assert_eq!(get(&cluster, &path).expect(200, "GET")["spec"]["nodeName"], "n1", "a refused binding moved the pod");
}

#[test]
fn deleting_a_bound_pod_is_graceful_and_grace_period_zero_removes_it() {
    let cluster = TestCluster::start();
    post(&cluster, &pods("default"), &pod("bound", json!({}))).expect(201, "create pod");
    let path = format!("{}/bound", pods("default"));
    post(&cluster, &format!("{path}/binding"), &binding("bound", "n1")).expect(201, "binding");

    delete(&cluster, &path, None).expect(200, "graceful DELETE of a bound pod");
    let terminating = get(&cluster, &path).expect(200, "a bound pod waits for its node agent after DELETE");
    assert!(terminating["metadata"]["deletionTimestamp"].is_string(), "{terminating}");

    delete(&cluster, &path, Some(&json!({"gracePeriodSeconds": 0}))).expect(200, "DELETE with gracePeriodSeconds=0");
    get(&cluster, &path).expect(404, "a pod deleted with gracePeriodSeconds=0 must be gone");
}

#[test]
fn deleting_an_unbound_pod_removes_it_at_once() {
    let cluster = TestCluster::start();
    post(&cluster, &pods("default"), &pod("loose", json!({}))).expect(201, "create pod");
    let path = format!("{}/loose", pods("default"));
    delete(&cluster, &path, None).expect(200, "DELETE unbound pod");
    get(&cluster, &path).expect(404, "no node will ever finish an unbound pod; it must go at once");
}

// ---------------------------------------------------------------------------
// 11. Scale subresource
// ---------------------------------------------------------------------------

#[test]
fn the_deployment_scale_subresource_reads_and_writes_replicas_and_refuses_negatives() {
    let cluster = TestCluster::start();
    create_deployment(&cluster, "default", "web");
    let path = format!("{}/web/scale", deployments("default"));

    let scale = get(&cluster, &path).expect(200, "GET scale");
    assert_eq!(scale["kind"], "Scale", "{scale}");
    assert_eq!(scale["apiVersion"], "autoscaling/v1", "{scale}");
    assert_eq!(scale["spec"]["replicas"], 2, "{scale}");
    assert_eq!(scale["status"]["selector"], "app=web", "status.selector is the label selector as a string: {scale}");

    let scaled = merge_patch(&cluster, &path, &json!({"spec": {"replicas": 5}})).expect(200, "merge patch scale");
    assert_eq!(scaled["spec"]["replicas"], 5, "{scaled}");
    let dep = get(&cluster, &format!("{}/web", deployments("default"))).expect(200, "GET deployment");
    assert_eq!(dep["spec"]["replicas"], 5, "scaling must write the deployment's spec.replicas");

    merge_patch(&cluster, &path, &json!({"spec": {"replicas": -1}})).expect_status(422, "Invalid", "negative replicas");
    let dep = get(&cluster, &format!("{}/web", deployments("default"))).expect(200, "GET deployment");
    assert_eq!(dep["spec"]["replicas"], 5, "a refused scale was written");
}

// ---------------------------------------------------------------------------
// 12. Namespaces
// ---------------------------------------------------------------------------

#[test]
fn creating_in_a_namespace_that_does_not_exist_is_404() {
    let cluster = TestCluster::start();
    let body = post(&cluster, &configmaps("nope"), &cm_body("orphan", json!({}))).expect_status(404, "NotFound", "create in ns nope");
    assert!(body["message"].as_str().unwrap_or_default().contains(r#"namespaces "nope" not found"#), "{body}");
}

#[test]
fn creating_in_a_terminating_namespace_is_403_forbidden() {
    let cluster = TestCluster::start();
    create_namespace(&cluster, "closing");
    let held = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
    });
    post(&cluster, &configmaps("closing"), &held).expect(201, "create held");
    delete(&cluster, "/api/v1/namespaces/closing", None).expect(200, "DELETE namespace closing");
    let ns = get(&cluster, "/api/v1/namespaces/closing").expect(200, "a namespace with a held object stays while Terminating");
    assert!(ns["metadata"]["deletionTimestamp"].is_string(), "{ns}");

    post(&cluster, &configmaps("closing"), &cm_body("late", json!({}))).expect_status(
        403,
        "Forbidden",
        "create in a Terminating namespace",
    );
    get(&cluster, &format!("{}/late", configmaps("closing"))).expect(404, "a refused create was stored");
}

// ---------------------------------------------------------------------------
// 13. Discovery
// ---------------------------------------------------------------------------

#[test]
fn discovery_lists_subresources_and_openapi_v3_lists_group_versions() {
    let cluster = TestCluster::start();
    let core = get(&cluster, "/api/v1").expect(200, "GET /api/v1");
    let resources = |list: &Value| -> Vec<Value> { list["resources"].as_array().cloned().unwrap_or_default() };
    let core_names: Vec<String> = resources(&core).iter().filter_map(|r| r["name"].as_str().map(str::to_owned)).collect();
    for name in ["pods/status", "pods/binding", "replicationcontrollers/scale"] {
        assert!(core_names.iter().any(|n| n == name), "/api/v1 lacks {name}: {core_names:?}");
    }

    let apps = get(&cluster, "/apis/apps/v1").expect(200, "GET /apis/apps/v1");
    let scale = resources(&apps)
        .into_iter()
        .find(|r| r["name"] == "deployments/scale")
        .unwrap_or_else(|| panic!("/apis/apps/v1 lacks deployments/scale: {apps}"));
    assert_eq!(scale["group"], "autoscaling", "{scale}");
    assert_eq!(scale["kind"], "Scale", "{scale}");

    let openapi = get(&cluster, "/openapi/v3").expect(200, "GET /openapi/v3");
    for gv in ["api/v1", "apis/apps/v1"] {
        assert!(openapi["paths"].get(gv).is_some(), "/openapi/v3 lacks {gv}: {openapi}");
    }
}

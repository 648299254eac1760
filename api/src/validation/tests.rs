//! Behaviour of the public API, checked against what Kubernetes 1.33 does.

use serde_json::{Value, json};

use super::*;
use crate::resources::by_kind;
use crate::status::FieldErrorKind;

fn info(kind: &str) -> &'static ResourceInfo {
    by_kind(kind).unwrap()
}

/// What the server does to a create: decode, normalize, default.
fn prepared(kind: &str, obj: Value) -> Value {
    let info = info(kind);
    let mut obj = obj;
    decode(info, &obj).unwrap();
    normalize(info, &mut obj).unwrap();
    apply_defaults(info, &mut obj);
    obj
}

fn errors(kind: &str, obj: Value) -> Vec<FieldError> {
    let obj = prepared(kind, obj);
    validate(info(kind), &obj, None)
}

fn messages(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

fn has(errs: &[FieldError], field: &str, kind: FieldErrorKind) -> bool {
    errs.iter().any(|e| e.field == field && e.kind == kind)
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn nginx_pod() -> Value {
    pod(json!({"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}))
}

fn service(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}
            }
        }
    })
}

// ---------------------------------------------------------------- decode

#[test]
fn decode_reports_misspelled_fields_with_their_path() {
    let mut obj = nginx_pod();
    obj["spec"]["containers"][0]["imagePullPolizy"] = json!("Always");
    obj["spec"]["bogus"] = json!({"x": 1});
    let unknown = decode(info("Pod"), &obj).unwrap();
    assert_eq!(unknown, vec!["spec.bogus", "spec.containers[0].imagePullPolizy"]);
}

#[test]
fn decode_knows_every_metadata_field_the_server_writes() {
    let mut obj = nginx_pod();
    obj["metadata"] = json!({
        "name": "web", "namespace": "default", "uid": "1", "resourceVersion": "5", "generation": 1,
        "creationTimestamp": "2024-01-01T00:00:00Z", "labels": {"a": "b"},
        "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": "2024-01-01T00:00:00Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:containers": {}}}}],
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "2", "controller": true}]
    });
    assert_eq!(decode(info("Pod"), &obj).unwrap(), Vec::<String>::new());
}

#[test]
fn decode_skips_null_values() {
    let mut obj = nginx_pod();
    obj["metadata"]["creationTimestamp"] = Value::Null;
    obj["status"] = Value::Null;
    assert!(decode(info("Pod"), &obj).unwrap().is_empty());
}

#[test]
fn decode_rejects_a_wrongly_typed_field_naming_it() {
    let mut obj = nginx_pod();
    obj["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("80");
    let err = decode(info("Pod"), &obj).unwrap_err();
    assert_eq!(err.code, 400);
    assert_eq!(err.reason, "BadRequest");
    assert_eq!(
        err.message,
        "Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field Pod.spec.containers[0].ports[0].containerPort of type int32"
    );
}

#[test]
fn decode_names_the_version_of_grouped_kinds() {
    let mut obj = deployment();
    obj["spec"]["replicas"] = json!(true);
    let err = decode(info("Deployment"), &obj).unwrap_err();
    assert!(err.message.starts_with("Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal bool"));
    assert!(err.message.contains("Deployment.spec.replicas"));
}

#[test]
fn decode_rejects_malformed_quantities_like_the_kubernetes_decoder() {
    let mut obj = nginx_pod();
    obj["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "lots"}});
    let err = decode(info("Pod"), &obj).unwrap_err();
    assert_eq!(
        err.message,
        "Pod in version \"v1\" cannot be handled as a Pod: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );
    // Quantities inside a controller's template are checked too.
    let mut d = deployment();
    d["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "1 Gi"}});
    assert_eq!(decode(info("Deployment"), &d).unwrap_err().code, 400);
}

#[test]
fn decode_accepts_numeric_quantities_from_yaml() {
    let mut obj = nginx_pod();
    obj["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": 1, "memory": 0.5}});
    assert!(decode(info("Pod"), &obj).unwrap().is_empty());
}

#[test]
fn decode_refuses_kinds_it_has_no_type_for() {
    let fake = ResourceInfo {
        group: "",
        version: "v1",
        kind: "Widget",
        plural: "widgets",
        singular: "widget",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    };
    assert_eq!(decode(&fake, &json!({})).unwrap_err().code, 400);
}

// ---------------------------------------------------------------- normalize

#[test]
fn normalize_drops_unknown_fields_and_canonicalizes_quantities() {
    let mut obj = nginx_pod();
    obj["spec"]["containers"][0]["imagePullPolizy"] = json!("Always");
    obj["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "0.5", "memory": "1024Mi"}, "requests": {"cpu": 1}});
    normalize(info("Pod"), &mut obj).unwrap();
    let c = &obj["spec"]["containers"][0];
    assert!(c.get("imagePullPolizy").is_none());
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
    assert_eq!(c["resources"]["limits"]["memory"], "1Gi");
    assert_eq!(c["resources"]["requests"]["cpu"], "1");
}

#[test]
fn normalize_folds_secret_string_data_into_data() {
    let mut obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
        "data": {"a": "eA=="}, "stringData": {"a": "y", "b": "z"}});
    normalize(info("Secret"), &mut obj).unwrap();
    assert_eq!(obj["data"], json!({"a": "eQ==", "b": "eg=="}));
    assert!(obj.get("stringData").is_none());
}

#[test]
fn normalize_reports_type_errors_too() {
    let mut obj = nginx_pod();
    obj["spec"]["containers"] = json!({"name": "x"});
    assert_eq!(normalize(info("Pod"), &mut obj).unwrap_err().code, 400);
}

// ---------------------------------------------------------------- defaults

#[test]
fn pod_defaults_match_what_kubectl_shows_on_real_kubernetes() {
    let obj = prepared("Pod", nginx_pod());
    assert_eq!(
        obj["spec"],
        json!({
            "containers": [{
                "name": "nginx",
                "image": "nginx",
                "imagePullPolicy": "Always",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File"
            }],
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "terminationGracePeriodSeconds": 30
        })
    );
    assert_eq!(obj["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
}

#[test]
fn new_pods_get_default_tolerations_unless_they_have_their_own() {
    let mut obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "c", "image": "nginx"}],
        "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]
    }});
    super::admit_new_pod(&mut obj, 30);
    assert_eq!(
        obj["spec"]["tolerations"],
        json!([
            {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 5},
            {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 30}
        ])
    );
}

#[test]
fn image_pull_policy_follows_the_tag() {
    use super::pod::default_pull_policy as p;
    assert_eq!(p("nginx"), "Always");
    assert_eq!(p("nginx:latest"), "Always");
    assert_eq!(p("nginx:1.27"), "IfNotPresent");
    assert_eq!(p("localhost:5000/app"), "Always");
    assert_eq!(p("localhost:5000/app:v2"), "IfNotPresent");
    assert_eq!(p("nginx@sha256:0123"), "IfNotPresent");
    assert_eq!(p("registry.example.com/team/app:latest"), "Always");
    assert_eq!(p("Nginx"), "IfNotPresent"); // not a valid reference
}

#[test]
fn pod_defaults_fill_probes_volumes_and_field_refs() {
    let obj = prepared(
        "Pod",
        pod(json!({
            "containers": [{
                "name": "app", "image": "app:1",
                "livenessProbe": {"httpGet": {"port": 8080}},
                "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "volumeMounts": [{"name": "scratch", "mountPath": "/s"}, {"name": "cfg", "mountPath": "/c"}, {"name": "host", "mountPath": "/h"}]
            }],
            "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "host", "hostPath": {"path": "/tmp"}}]
        })),
    );
    let c = &obj["spec"]["containers"][0];
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"path": "/", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    let v = &obj["spec"]["volumes"];
    assert_eq!(v[0], json!({"name": "scratch", "emptyDir": {}}));
    assert_eq!(v[1]["configMap"], json!({"name": "cfg", "defaultMode": 420}));
    assert_eq!(v[2]["hostPath"], json!({"path": "/tmp", "type": ""}));
    assert!(validate(info("Pod"), &obj, None).is_empty());
}

#[test]
fn pod_requests_default_to_limits_and_set_the_qos_class() {
    let guaranteed = prepared(
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "a", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}}]})),
    );
    assert_eq!(guaranteed["spec"]["containers"][0]["resources"]["requests"], json!({"cpu": "500m", "memory": "128Mi"}));
    assert_eq!(guaranteed["status"]["qosClass"], "Guaranteed");

    let burstable = prepared("Pod", pod(json!({"containers": [{"name": "a", "image": "a", "resources": {"requests": {"cpu": "100m"}}}]})));
    assert_eq!(burstable["status"]["qosClass"], "Burstable");

    // Limits on only one of cpu/memory is not enough for Guaranteed.
    let cpu_only = prepared("Pod", pod(json!({"containers": [{"name": "a", "image": "a", "resources": {"limits": {"cpu": "1"}}}]})));
    assert_eq!(cpu_only["status"]["qosClass"], "Burstable");
}

#[test]
fn resource_lists_are_rounded_up_to_millicores() {
    let obj = prepared("Pod", pod(json!({"containers": [{"name": "a", "image": "a", "resources": {"requests": {"cpu": "0.0001"}}}]})));
    assert_eq!(obj["spec"]["containers"][0]["resources"]["requests"]["cpu"], "1m");
}

#[test]
fn pod_defaults_keep_existing_tolerations_and_status() {
    let mut p = nginx_pod();
    p["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
    p["status"] = json!({"phase": "Running", "qosClass": "BestEffort"});
    let obj = prepared("Pod", p);
    assert_eq!(obj["spec"]["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(obj["status"]["phase"], "Running");
}

#[test]
fn empty_strings_are_defaulted_like_unset_ones() {
    // Go cannot tell `""` from unset, so Kubernetes defaults both.
    let obj = prepared(
        "Pod",
        pod(
            json!({"restartPolicy": "", "dnsPolicy": "", "containers": [{"name": "a", "image": "a:1", "imagePullPolicy": "", "ports": [{"containerPort": 80, "protocol": ""}]}]}),
        ),
    );
    assert_eq!(obj["spec"]["restartPolicy"], "Always");
    assert_eq!(obj["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(obj["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(obj["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
    assert!(validate(info("Pod"), &obj, None).is_empty());
}

#[test]
fn generate_name_may_end_in_a_dash_but_must_otherwise_be_valid() {
    let mut p = nginx_pod();
    p["metadata"]["generateName"] = json!("web-");
    assert!(errors("Pod", p.clone()).is_empty());
    p["metadata"]["generateName"] = json!("Web-");
    assert!(has(&errors("Pod", p), "metadata.generateName", FieldErrorKind::Invalid));
}

#[test]
fn host_network_pods_get_host_ports() {
    let mut p = nginx_pod();
    p["spec"]["hostNetwork"] = json!(true);
    let obj = prepared("Pod", p);
    assert_eq!(obj["spec"]["containers"][0]["ports"][0]["hostPort"], 80);
    assert!(validate(info("Pod"), &obj, None).is_empty());
}

#[test]
fn service_defaults_match_kubernetes() {
    let obj = prepared("Service", service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})));
    assert_eq!(
        obj["spec"],
        json!({
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
            "selector": {"app": "web"},
            "sessionAffinity": "None",
            "type": "ClusterIP"
        })
    );
    assert_eq!(obj["status"], json!({"loadBalancer": {}}));
}

#[test]
fn node_port_and_client_ip_services_get_their_defaults() {
    let obj = prepared(
        "Service",
        service(
            json!({"type": "NodePort", "sessionAffinity": "ClientIP", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}),
        ),
    );
    assert_eq!(obj["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(obj["spec"]["sessionAffinityConfig"], json!({"clientIP": {"timeoutSeconds": 10800}}));
    assert_eq!(obj["spec"]["ports"][0]["targetPort"], "http");
    let lb = prepared("Service", service(json!({"type": "LoadBalancer", "ports": [{"port": 443}]})));
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
}

#[test]
fn headless_services_keep_none_and_selectorless_ones_ask_for_both_families() {
    let obj = prepared("Service", service(json!({"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]})));
    assert_eq!(obj["spec"]["clusterIPs"], json!(["None"]));
    assert_eq!(obj["spec"]["ipFamilyPolicy"], "SingleStack");
    assert!(validate(info("Service"), &obj, None).is_empty());

    let bare = prepared("Service", service(json!({"clusterIP": "None"})));
    assert_eq!(bare["spec"]["ipFamilyPolicy"], "RequireDualStack");
    assert_eq!(bare["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    assert!(validate(info("Service"), &bare, None).is_empty());
}

#[test]
fn external_name_services_get_no_ip_families() {
    let obj = prepared("Service", service(json!({"type": "ExternalName", "externalName": "example.com"})));
    assert!(obj["spec"].get("ipFamilies").is_none());
    assert!(obj["spec"].get("ipFamilyPolicy").is_none());
    assert!(obj["spec"].get("internalTrafficPolicy").is_none());
    assert!(validate(info("Service"), &obj, None).is_empty());
}

#[test]
fn deployment_defaults_match_kubernetes() {
    let obj = prepared("Deployment", deployment());
    let spec = &obj["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["strategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}));
    let t = &spec["template"]["spec"];
    assert_eq!(t["restartPolicy"], "Always");
    assert_eq!(t["dnsPolicy"], "ClusterFirst");
    assert_eq!(t["terminationGracePeriodSeconds"], 30);
    assert_eq!(t["containers"][0]["imagePullPolicy"], "IfNotPresent");
    // Pod-only defaults stay out of templates, as in Kubernetes.
    assert!(t.get("enableServiceLinks").is_none());
    assert!(t.get("tolerations").is_none());
    assert!(t.get("priority").is_none());
    assert_eq!(obj["status"], json!({}));
}

#[test]
fn recreate_deployments_get_no_rolling_update_parameters() {
    let mut d = deployment();
    d["spec"]["strategy"] = json!({"type": "Recreate"});
    let obj = prepared("Deployment", d);
    assert_eq!(obj["spec"]["strategy"], json!({"type": "Recreate"}));
    assert!(validate(info("Deployment"), &obj, None).is_empty());
}

#[test]
fn replication_controllers_take_selector_and_labels_from_the_template() {
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let obj = prepared("ReplicationController", rc);
    assert_eq!(obj["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(obj["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(obj["spec"]["replicas"], 1);
    assert_eq!(obj["status"], json!({"replicas": 0}));
    assert!(validate(info("ReplicationController"), &obj, None).is_empty());
}

#[test]
fn replica_sets_default_to_one_replica() {
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let obj = prepared("ReplicaSet", rs);
    assert_eq!(obj["spec"]["replicas"], 1);
    assert!(validate(info("ReplicaSet"), &obj, None).is_empty());
}

#[test]
fn namespaces_get_their_name_label_finalizer_and_phase() {
    let obj = prepared("Namespace", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}));
    assert_eq!(obj["metadata"]["labels"], json!({"kubernetes.io/metadata.name": "team-a"}));
    assert_eq!(obj["spec"], json!({"finalizers": ["kubernetes"]}));
    assert_eq!(obj["status"], json!({"phase": "Active"}));
    assert!(validate(info("Namespace"), &obj, None).is_empty());
}

#[test]
fn namespace_finalizer_is_not_put_back_once_removed() {
    let stored = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "team-a", "resourceVersion": "7", "deletionTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {}, "status": {"phase": "Terminating"}});
    let obj = prepared("Namespace", stored);
    assert!(obj["spec"].get("finalizers").is_none());
    assert_eq!(obj["status"]["phase"], "Terminating");
}

#[test]
fn secrets_default_to_opaque() {
    let obj = prepared("Secret", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}}));
    assert_eq!(obj["type"], "Opaque");
}

#[test]
fn node_allocatable_defaults_to_capacity() {
    let obj = prepared(
        "Node",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}),
    );
    assert_eq!(obj["status"]["allocatable"], json!({"cpu": "2", "memory": "4Gi", "pods": "110"}));
    assert!(validate(info("Node"), &obj, None).is_empty());
}

#[test]
fn defaults_are_idempotent() {
    for (kind, obj) in [("Pod", nginx_pod()), ("Deployment", deployment()), ("Service", service(json!({"ports": [{"port": 80}]})))] {
        let once = prepared(kind, obj);
        let mut twice = once.clone();
        apply_defaults(info(kind), &mut twice);
        assert_eq!(once, twice, "{kind}");
    }
}

// ---------------------------------------------------------------- pods

#[test]
fn a_valid_pod_has_no_errors() {
    assert_eq!(messages(&errors("Pod", nginx_pod())), Vec::<String>::new());
}

#[test]
fn a_pod_needs_a_container() {
    let errs = errors("Pod", pod(json!({})));
    assert_eq!(messages(&errs), vec!["spec.containers: Required value"]);
}

#[test]
fn pod_name_must_be_a_dns_subdomain() {
    let mut p = nginx_pod();
    p["metadata"]["name"] = json!("Web_1");
    let errs = errors("Pod", p);
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        r#"metadata.name: Invalid value: "Web_1": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#
    );
}

#[test]
fn container_names_must_be_labels_and_unique_and_images_present() {
    let errs = errors("Pod", pod(json!({"containers": [{"name": "a.b", "image": "x"}, {"name": "c", "image": "x"}, {"name": "c"}]})));
    assert_eq!(errs[0].to_string(), "spec.containers[0].name: Invalid value: \"a.b\": must not contain dots");
    assert!(has(&errs, "spec.containers[2].image", FieldErrorKind::Required));
    assert!(has(&errs, "spec.containers[2].name", FieldErrorKind::Duplicate));
}

#[test]
fn container_ports_are_range_checked_and_named_like_iana_services() {
    let errs = errors(
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "x", "ports": [
            {"containerPort": 70000, "hostPort": 70000, "name": "HTTP"},
            {"containerPort": 81, "protocol": "ICMP", "name": "web"},
            {"containerPort": 82, "name": "web"}
        ]}]})),
    );
    let m = messages(&errs);
    assert!(m.contains(
        &"spec.containers[0].ports[0].containerPort: Invalid value: \"70000\": must be between 1 and 65535, inclusive".to_string()
    ));
    assert!(has(&errs, "spec.containers[0].ports[0].hostPort", FieldErrorKind::Invalid));
    assert!(m.contains(&"spec.containers[0].ports[0].name: Invalid value: \"HTTP\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string()));
    assert!(m.contains(
        &"spec.containers[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"".to_string()
    ));
    assert!(has(&errs, "spec.containers[0].ports[2].name", FieldErrorKind::Duplicate));
}

#[test]
fn restart_and_dns_policies_must_be_known() {
    let errs =
        errors("Pod", pod(json!({"restartPolicy": "Sometimes", "dnsPolicy": "Google", "containers": [{"name": "a", "image": "x"}]})));
    assert_eq!(
        messages(&errs),
        vec![
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
        ]
    );
}

#[test]
fn requests_may_not_exceed_limits() {
    let errs = errors(
        "Pod",
        pod(
            json!({"containers": [{"name": "a", "image": "x", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1500m", "memory": "-1"}}}]}),
        ),
    );
    let m = messages(&errs);
    assert!(m.contains(
        &"spec.containers[0].resources.requests: Invalid value: \"1500m\": must be less than or equal to cpu limit of 1".to_string()
    ));
    assert!(
        m.contains(&"spec.containers[0].resources.requests[memory]: Invalid value: \"-1\": must be greater than or equal to 0".to_string())
    );
}

#[test]
fn unknown_resource_names_are_rejected_for_containers() {
    let errs = errors(
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "x", "resources": {"limits": {"gpu": "1", "example.com/gpu": "1.5"}}}]})),
    );
    assert!(messages(&errs).contains(
        &"spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers".to_string()
    ));
    assert!(
        messages(&errs)
            .contains(&"spec.containers[0].resources.limits[example.com/gpu]: Invalid value: \"1500m\": must be an integer".to_string())
    );
}

#[test]
fn volumes_need_exactly_one_source_and_unique_names() {
    let errs = errors(
        "Pod",
        pod(json!({
            "containers": [{"name": "a", "image": "x"}],
            "volumes": [
                {"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}},
                {"name": "w", "secret": {}},
                {"name": "w", "emptyDir": {}}
            ]
        })),
    );
    // As in Kubernetes, a volume with errors is not counted, so the second
    // `w` is not reported as a duplicate of the broken first one.
    assert_eq!(
        messages(&errs),
        vec![
            "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type",
            "spec.volumes[1].secret.secretName: Required value"
        ]
    );
    let errs = errors(
        "Pod",
        pod(
            json!({"containers": [{"name": "a", "image": "x"}], "volumes": [{"name": "w", "emptyDir": {}}, {"name": "w", "configMap": {"name": "c"}}]}),
        ),
    );
    assert_eq!(messages(&errs), vec!["spec.volumes[1].name: Duplicate value: \"w\""]);
}

#[test]
fn volume_mounts_must_name_a_volume() {
    let errs =
        errors("Pod", pod(json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]})));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec.containers[0].volumeMounts[0].name");
    assert_eq!(errs[0].value.as_deref(), Some("data"));
}

#[test]
fn env_names_reject_equals_and_value_from_needs_one_source() {
    let errs = errors(
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "x", "env": [
            {"name": "A=B", "value": "1"},
            {"name": "B", "valueFrom": {}},
            {"name": "C", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ]}]})),
    );
    let m = messages(&errs);
    assert!(m.contains(&"spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='".to_string()));
    assert!(m.contains(&"spec.containers[0].env[1].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`".to_string()));
    assert!(
        m.contains(&"spec.containers[0].env[2].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty".to_string())
    );
}

#[test]
fn probes_need_exactly_one_handler() {
    let errs = errors(
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "x",
            "livenessProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}},
            "readinessProbe": {"periodSeconds": 3}
        }]})),
    );
    assert_eq!(
        messages(&errs),
        vec![
            "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
            "spec.containers[0].readinessProbe: Required value: must specify a handler type",
        ]
    );
}

#[test]
fn liveness_probes_must_succeed_once() {
    let errs = errors(
        "Pod",
        pod(json!({"containers": [{"name": "a", "image": "x", "livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2}}]})),
    );
    assert_eq!(messages(&errs), vec!["spec.containers[0].livenessProbe.successThreshold: Invalid value: \"2\": must be 1"]);
}

#[test]
fn tolerations_are_checked() {
    let errs =
        errors("Pod", pod(json!({"containers": [{"name": "a", "image": "x"}], "tolerations": [{"operator": "Equal", "value": "x"}]})));
    assert!(has(&errs, "spec.tolerations[0].operator", FieldErrorKind::Invalid));
}

#[test]
fn ephemeral_containers_cannot_be_set_on_create() {
    let mut p = nginx_pod();
    p["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox"}]);
    let errs = errors("Pod", p);
    assert_eq!(messages(&errs), vec!["spec.ephemeralContainers: Forbidden: cannot be set on create"]);
}

#[test]
fn pod_image_may_change_on_update() {
    let old = prepared("Pod", nginx_pod());
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.27");
    new["spec"]["activeDeadlineSeconds"] = json!(60);
    new["metadata"]["labels"] = json!({"tier": "web"});
    assert_eq!(messages(&validate(info("Pod"), &new, Some(&old))), Vec::<String>::new());
}

#[test]
fn other_pod_spec_changes_are_forbidden_with_kubernetes_message() {
    let old = prepared("Pod", nginx_pod());
    let mut new = old.clone();
    new["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(8080);
    let errs = validate(info("Pod"), &new, Some(&old));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec");
    assert_eq!(errs[0].kind, FieldErrorKind::Forbidden);
    assert!(errs[0].detail.starts_with("pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"));
    assert!(errs[0].detail.contains("spec.containers[0].ports[0].containerPort: 80"));
}

#[test]
fn pod_updates_may_add_but_not_change_tolerations_nor_add_containers() {
    let mut old = prepared("Pod", nginx_pod());
    super::admit_new_pod(&mut old, 300);
    let mut added = old.clone();
    added["spec"]["tolerations"].as_array_mut().unwrap().push(json!({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}));
    assert!(validate(info("Pod"), &added, Some(&old)).is_empty());

    let mut removed = old.clone();
    removed["spec"]["tolerations"] = json!([]);
    let errs = validate(info("Pod"), &removed, Some(&old));
    assert!(
        messages(&errs)
            .contains(&"spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds".to_string())
    );

    let mut more = old.clone();
    more["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "b", "image": "b"}));
    let more = prepared("Pod", more);
    let errs = validate(info("Pod"), &more, Some(&old));
    assert!(messages(&errs).contains(&"spec.containers: Forbidden: pod updates may not add or remove containers".to_string()));
}

#[test]
fn pods_cannot_be_renamed() {
    let old = prepared("Pod", nginx_pod());
    let mut new = old.clone();
    new["metadata"]["name"] = json!("other");
    let errs = validate(info("Pod"), &new, Some(&old));
    assert_eq!(messages(&errs), vec!["metadata.name: Invalid value: \"other\": field is immutable"]);
}

#[test]
fn label_and_annotation_keys_are_checked_on_every_kind() {
    let mut p = nginx_pod();
    p["metadata"]["labels"] = json!({"app": "bad value"});
    p["metadata"]["annotations"] = json!({"a/b/c": "x"});
    let errs = errors("Pod", p);
    assert!(has(&errs, "metadata.labels", FieldErrorKind::Invalid));
    assert!(has(&errs, "metadata.annotations", FieldErrorKind::Invalid));
}

// ---------------------------------------------------------------- services

#[test]
fn a_valid_service_has_no_errors_before_and_after_allocation() {
    let mut svc = prepared("Service", service(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]})));
    assert!(validate(info("Service"), &svc, None).is_empty());
    // What the server writes after allocating.
    svc["spec"]["clusterIP"] = json!("10.96.0.20");
    svc["spec"]["clusterIPs"] = json!(["10.96.0.20"]);
    assert!(validate(info("Service"), &svc, None).is_empty());
}

#[test]
fn a_requested_cluster_ip_is_accepted_and_mirrored() {
    let svc = prepared("Service", service(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}]})));
    assert_eq!(svc["spec"]["clusterIPs"], json!(["10.96.0.10"]));
    assert!(validate(info("Service"), &svc, None).is_empty());
}

#[test]
fn service_names_must_be_dns_1035_labels() {
    let mut svc = service(json!({"ports": [{"port": 80}]}));
    svc["metadata"]["name"] = json!("1web");
    let errs = errors("Service", svc);
    assert_eq!(
        messages(&errs),
        vec![
            "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
}

#[test]
fn services_need_ports_unless_headless_or_external_name() {
    assert_eq!(messages(&errors("Service", service(json!({"selector": {"a": "b"}})))), vec!["spec.ports: Required value"]);
    assert!(errors("Service", service(json!({"clusterIP": "None", "selector": {"a": "b"}}))).is_empty());
}

#[test]
fn service_ports_are_checked() {
    let errs = errors(
        "Service",
        service(
            json!({"ports": [{"port": 0}, {"port": 80, "name": "web", "targetPort": 70000}, {"port": 81, "name": "web", "protocol": "HTTP"}]}),
        ),
    );
    let m = messages(&errs);
    assert!(m.contains(&"spec.ports[0].name: Required value".to_string()));
    assert!(m.contains(&"spec.ports[0].port: Invalid value: \"0\": must be between 1 and 65535, inclusive".to_string()));
    assert!(m.contains(&"spec.ports[1].targetPort: Invalid value: \"70000\": must be between 1 and 65535, inclusive".to_string()));
    assert!(has(&errs, "spec.ports[2].name", FieldErrorKind::Duplicate));
    assert!(has(&errs, "spec.ports[2].protocol", FieldErrorKind::NotSupported));
}

#[test]
fn duplicate_service_ports_are_reported() {
    let errs = errors("Service", service(json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]})));
    assert!(has(&errs, "spec.ports[1]", FieldErrorKind::Duplicate));
}

#[test]
fn node_ports_must_be_in_range_and_only_on_node_port_services() {
    let errs = errors("Service", service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]})));
    assert_eq!(
        messages(&errs),
        vec![
            "spec.ports[0].nodePort: Invalid value: \"80\": provided port is not in the valid range. The range of valid ports is 30000-32767"
        ]
    );
    let errs = errors("Service", service(json!({"ports": [{"port": 80, "nodePort": 30080}]})));
    assert_eq!(messages(&errs), vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]);
    assert!(errors("Service", service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))).is_empty());
}

#[test]
fn service_type_must_be_known() {
    let errs = errors("Service", service(json!({"type": "Magic", "ports": [{"port": 80}]})));
    assert!(
        messages(&errs).contains(
            &"spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
                .to_string()
        )
    );
}

#[test]
fn cluster_ip_must_be_an_ip_or_none() {
    let errs = errors("Service", service(json!({"clusterIP": "10.96.0", "ports": [{"port": 80}]})));
    assert_eq!(
        messages(&errs),
        vec!["spec.clusterIPs[0]: Invalid value: \"10.96.0\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    );
    let errs = errors("Service", service(json!({"clusterIP": "fd00::1", "ports": [{"port": 80}]})));
    assert!(messages(&errs).iter().any(|m| m.contains("IPv6 is not configured on this cluster")));
}

#[test]
fn cluster_ip_is_immutable_unless_becoming_external_name() {
    let mut old = prepared("Service", service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})));
    old["spec"]["clusterIP"] = json!("10.96.0.20");
    old["spec"]["clusterIPs"] = json!(["10.96.0.20"]);
    let mut new = old.clone();
    new["spec"]["clusterIP"] = json!("10.96.0.21");
    new["spec"]["clusterIPs"] = json!(["10.96.0.21"]);
    let errs = validate(info("Service"), &new, Some(&old));
    assert_eq!(messages(&errs), vec!["spec.clusterIPs[0]: Invalid value: \"[]string{\"10.96.0.21\"}\": may not change once set"]);

    let ext = prepared("Service", service(json!({"type": "ExternalName", "externalName": "db.example.com"})));
    assert!(validate(info("Service"), &ext, Some(&old)).is_empty());
}

#[test]
fn session_affinity_timeout_is_bounded() {
    let errs = errors(
        "Service",
        service(
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 90000}}, "ports": [{"port": 80}]}),
        ),
    );
    assert_eq!(
        messages(&errs),
        vec!["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: \"90000\": must be greater than 0 and less than 86400"]
    );
    let errs = errors("Service", service(json!({"sessionAffinity": "Sticky", "ports": [{"port": 80}]})));
    assert!(has(&errs, "spec.sessionAffinity", FieldErrorKind::NotSupported));
}

#[test]
fn external_traffic_policy_is_only_for_externally_reachable_services() {
    let errs = errors("Service", service(json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]})));
    assert_eq!(
        messages(&errs),
        vec!["spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services"]
    );
    assert!(errors("Service", service(json!({"type": "NodePort", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}))).is_empty());
    let errs = errors("Service", service(json!({"type": "NodePort", "externalTrafficPolicy": "Nearest", "ports": [{"port": 80}]})));
    assert!(has(&errs, "spec.externalTrafficPolicy", FieldErrorKind::NotSupported));
}

#[test]
fn external_name_services_need_a_dns_name() {
    let errs = errors("Service", service(json!({"type": "ExternalName"})));
    assert_eq!(messages(&errs), vec!["spec.externalName: Required value"]);
    let errs = errors("Service", service(json!({"type": "ExternalName", "externalName": "not a name"})));
    assert!(has(&errs, "spec.externalName", FieldErrorKind::Invalid));
    assert!(errors("Service", service(json!({"type": "ExternalName", "externalName": "example.com."}))).is_empty());
}

// ---------------------------------------------------------------- workloads

#[test]
fn a_valid_deployment_has_no_errors() {
    assert_eq!(messages(&errors("Deployment", deployment())), Vec::<String>::new());
}

#[test]
fn deployments_need_a_selector_matching_the_template() {
    let mut d = deployment();
    d["spec"].as_object_mut().unwrap().remove("selector");
    let errs = errors("Deployment", d);
    assert_eq!(
        messages(&errs),
        vec![
            "spec.selector: Required value",
            "spec.template.metadata.labels: Invalid value: \"map[string]string{\"app\":\"web\"}\": `selector` does not match template `labels`",
        ]
    );
    let mut d = deployment();
    d["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
    let errs = errors("Deployment", d);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec.template.metadata.labels");
}

#[test]
fn deployment_templates_are_validated_with_their_prefix() {
    let mut d = deployment();
    d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    d["spec"]["template"]["spec"]["containers"][0]["name"] = json!("Bad");
    let errs = errors("Deployment", d);
    assert!(has(&errs, "spec.template.spec.containers[0].name", FieldErrorKind::Invalid));
    assert!(
        messages(&errs)
            .contains(&"spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"".to_string())
    );
}

#[test]
fn rolling_update_parameters_are_checked() {
    let mut d = deployment();
    d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
    let errs = errors("Deployment", d);
    assert_eq!(
        messages(&errs),
        vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"]
    );

    let mut d = deployment();
    d["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": "lots", "maxUnavailable": "120%"}});
    let errs = errors("Deployment", d);
    assert!(messages(&errs).contains(&"spec.strategy.rollingUpdate.maxSurge: Invalid value: \"lots\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')".to_string()));
    assert!(
        messages(&errs)
            .contains(&"spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"120%\": must not be greater than 100%".to_string())
    );

    let mut d = deployment();
    d["spec"]["strategy"] = json!({"type": "BlueGreen"});
    assert!(has(&errors("Deployment", d), "spec.strategy", FieldErrorKind::NotSupported));
}

#[test]
fn replica_counts_may_not_be_negative() {
    let mut d = deployment();
    d["spec"]["replicas"] = json!(-1);
    assert_eq!(messages(&errors("Deployment", d)), vec!["spec.replicas: Invalid value: \"-1\": must be greater than or equal to 0"]);
}

#[test]
fn apps_selectors_are_immutable() {
    let old = prepared("Deployment", deployment());
    let mut new = old.clone();
    new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
    new["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "v": "2"});
    let errs = validate(info("Deployment"), &new, Some(&old));
    assert_eq!(
        messages(&errs),
        vec![
            "spec.selector: Invalid value: \"v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}\": field is immutable"
        ]
    );
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(5);
    assert!(validate(info("Deployment"), &scaled, Some(&old)).is_empty());
}

#[test]
fn replication_controllers_need_a_selector_and_restart_always() {
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "x"}, "template": {"metadata": {"labels": {"app": "web"}},
                 "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "nginx"}]}}}});
    let errs = errors("ReplicationController", rc);
    assert_eq!(
        messages(&errs),
        vec![
            "spec.template.metadata.labels: Invalid value: \"map[string]string{\"app\":\"web\"}\": `selector` does not match template `labels`",
            "spec.template.spec.restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"",
        ]
    );
    let bare =
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web", "namespace": "default"}, "spec": {}});
    let errs = errors("ReplicationController", bare);
    assert_eq!(messages(&errs), vec!["spec.selector: Required value", "spec.template: Required value"]);
}

// ---------------------------------------------------------------- other kinds

#[test]
fn namespace_names_are_dns_labels() {
    let errs = errors("Namespace", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}}));
    assert_eq!(messages(&errs), vec!["metadata.name: Invalid value: \"team.a\": must not contain dots"]);
}

#[test]
fn config_map_keys_and_size_are_checked() {
    let cm =
        |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": data});
    assert!(errors("ConfigMap", cm(json!({"app.properties": "x", "KEY_1": "y"}))).is_empty());
    let errs = errors("ConfigMap", cm(json!({"a/b": "x"})));
    assert_eq!(
        messages(&errs),
        vec![
            "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
        ]
    );
    let errs = errors("ConfigMap", cm(json!({"big": "x".repeat(1024 * 1024 + 1)})));
    assert_eq!(errs[0].kind, FieldErrorKind::TooLong);
}

#[test]
fn immutable_config_maps_cannot_change() {
    let old = prepared(
        "ConfigMap",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1"}, "immutable": true}),
    );
    let mut new = old.clone();
    new["data"]["a"] = json!("2");
    assert_eq!(
        messages(&validate(info("ConfigMap"), &new, Some(&old))),
        vec!["data: Forbidden: field is immutable when `immutable` is set"]
    );
}

#[test]
fn secrets_check_keys_and_type_requirements() {
    let errs = errors(
        "Secret",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "x"}}),
    );
    assert_eq!(messages(&errs), vec!["data[tls.key]: Required value"]);
    let old = prepared("Secret", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}}));
    let mut new = old.clone();
    new["type"] = json!("kubernetes.io/basic-auth");
    new["data"] = json!({"username": "dQ=="});
    assert_eq!(
        messages(&validate(info("Secret"), &new, Some(&old))),
        vec!["type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"]
    );
}

#[test]
fn endpoints_need_valid_addresses_and_ports() {
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "10.244.0.5"}, {"ip": "127.0.0.1"}, {"ip": "nope"}], "ports": [{"port": 0}]}]});
    let obj = prepared("Endpoints", ep);
    assert_eq!(obj["subsets"][0]["ports"][0]["protocol"], "TCP");
    let m = messages(&validate(info("Endpoints"), &obj, None));
    assert!(m.contains(
        &"subsets[0].addresses[1].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)".to_string()
    ));
    assert!(m.contains(
        &"subsets[0].addresses[2].ip: Invalid value: \"nope\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".to_string()
    ));
    assert!(m.contains(&"subsets[0].ports[0].port: Invalid value: \"0\": must be between 1 and 65535, inclusive".to_string()));
    let empty = prepared(
        "Endpoints",
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "default"}, "subsets": [{}]}),
    );
    assert_eq!(
        messages(&validate(info("Endpoints"), &empty, None)),
        vec!["subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`"]
    );
}

fn endpoint_slice(address_type: &str, endpoints: Value, ports: Value) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "web-abc", "namespace": "default"},
        "addressType": address_type, "endpoints": endpoints, "ports": ports})
}

#[test]
fn endpoint_slice_ports_default_to_an_empty_name_and_tcp() {
    let obj = prepared("EndpointSlice", endpoint_slice("IPv4", json!([{"addresses": ["10.244.0.5"]}]), json!([{"port": 80}])));
    assert_eq!(obj["ports"][0], json!({"name": "", "port": 80, "protocol": "TCP"}));
    assert!(validate(info("EndpointSlice"), &obj, None).is_empty());
}

#[test]
fn endpoint_slices_are_checked_as_kubernetes_checks_them() {
    assert_eq!(messages(&errors("EndpointSlice", endpoint_slice("", json!([]), json!([])))), vec!["addressType: Required value"]);
    assert_eq!(
        messages(&errors("EndpointSlice", endpoint_slice("IP", json!([]), json!([])))),
        vec!["addressType: Unsupported value: \"IP\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""]
    );
    let endpoints = json!([
        {"addresses": []},
        {"addresses": ["10.244.0.300", "127.0.0.1", "fd00::1"], "nodeName": "Node_1", "hostname": "a.b"},
        {"addresses": ["10.244.0.6"], "hints": {"forZones": [{"name": "z1"}, {"name": "z1"}]}},
    ]);
    let ports = json!([{"name": "http", "port": 80}, {"name": "http", "port": 81, "protocol": "ICMP"}, {"name": "Web", "port": 82}]);
    let m = messages(&errors("EndpointSlice", endpoint_slice("IPv4", endpoints, ports)));
    let dns_label_rule = "(e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    assert_eq!(
        m,
        vec![
            "endpoints[0].addresses: Required value: must contain at least 1 address".to_string(),
            "endpoints[1].addresses[0]: Invalid value: \"10.244.0.300\": must be a valid IPv4 address".into(),
            "endpoints[1].addresses[0]: Invalid value: \"10.244.0.300\": must be a valid IP address".into(),
            "endpoints[1].addresses[1]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)".into(),
            "endpoints[1].addresses[2]: Invalid value: \"fd00::1\": must be a valid IPv4 address".into(),
            "endpoints[1].nodeName: Invalid value: \"Node_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into(),
            "endpoints[1].hostname: Invalid value: \"a.b\": must not contain dots".into(),
            "endpoints[2].hints.forZones[1].name: Duplicate value: \"z1\"".into(),
            "ports[1].name: Duplicate value: \"http\"".into(),
            "ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"".into(),
            format!(
                "ports[2].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character {dns_label_rule}"
            ),
        ]
    );
}

#[test]
fn endpoint_slice_limits_count_items_as_kubernetes_prints_them() {
    let many: Vec<Value> = (0..1001).map(|i| json!({"addresses": [format!("10.244.{}.{}", i / 200, i % 200 + 1)]})).collect();
    let errs = errors("EndpointSlice", endpoint_slice("IPv4", json!(many), json!([])));
    assert_eq!(messages(&errs), vec!["endpoints: Too many: 1001: must have at most 1000 items"]);
    assert_eq!(errs[0].kind, FieldErrorKind::TooMany);
    let addresses: Vec<String> = (1..=101).map(|i| format!("10.244.0.{i}")).collect();
    assert_eq!(
        messages(&errors("EndpointSlice", endpoint_slice("IPv4", json!([{"addresses": addresses}]), json!([])))),
        vec!["endpoints[0].addresses: Too many: 101: must have at most 100 items"]
    );
    let err = ApiError::invalid("discovery.k8s.io", "EndpointSlice", "web-abc", errs);
    assert_eq!(err.code, 422);
    assert_eq!(err.to_json()["details"]["causes"][0]["reason"], "FieldValueTooMany");
}

#[test]
fn endpoint_slice_addresses_follow_the_address_type() {
    let ipv6 = endpoint_slice("IPv6", json!([{"addresses": ["fd00::5", "10.244.0.5", "::ffff:10.0.0.1"]}]), json!([]));
    assert_eq!(
        messages(&errors("EndpointSlice", ipv6)),
        vec![
            "endpoints[0].addresses[1]: Invalid value: \"10.244.0.5\": must be a valid IPv6 address",
            "endpoints[0].addresses[2]: Invalid value: \"::ffff:10.0.0.1\": must be a valid IPv6 address",
        ]
    );
    let fqdn = endpoint_slice("FQDN", json!([{"addresses": ["db.example.com.", "localhost", "Bad.example.com"]}]), json!([]));
    let m = messages(&errors("EndpointSlice", fqdn));
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(
        m[0],
        "endpoints[0].addresses[1]: Invalid value: \"localhost\": should be a domain with at least two segments separated by dots"
    );
    assert!(m[1].starts_with("endpoints[0].addresses[2]: Invalid value: \"Bad.example.com\": a lowercase RFC 1123 subdomain"), "{m:?}");
}

#[test]
fn endpoint_slice_address_type_is_immutable_and_v1_drops_deprecated_fields() {
    let old = prepared("EndpointSlice", endpoint_slice("IPv4", json!([]), json!([])));
    let mut new = old.clone();
    new["addressType"] = json!("IPv6");
    assert_eq!(
        messages(&validate(info("EndpointSlice"), &new, Some(&old))),
        vec!["addressType: Invalid value: \"IPv6\": field is immutable"]
    );
    let obj = prepared(
        "EndpointSlice",
        endpoint_slice(
            "IPv4",
            json!([{"addresses": ["10.244.0.5"], "deprecatedTopology": {"kubernetes.io/hostname": "n1"},
                    "hints": {"forZones": [{"name": "z1"}], "forNodes": [{"name": "n1"}]}}]),
            json!([]),
        ),
    );
    assert!(obj["endpoints"][0].get("deprecatedTopology").is_none(), "{obj}");
    assert_eq!(obj["endpoints"][0]["hints"], json!({"forZones": [{"name": "z1"}]}));
}

#[test]
fn events_must_be_in_their_objects_namespace() {
    let ev = |ns: &str| {
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": ns}, "reason": "Scheduled", "type": "Normal"})
    };
    assert!(errors("Event", ev("default")).is_empty());
    assert_eq!(
        messages(&errors("Event", ev("other"))),
        vec!["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
    );
}

#[test]
fn new_style_events_name_their_reporter() {
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "eventTime": "2024-01-01T00:00:00.000000Z"});
    let m = messages(&errors("Event", ev));
    assert_eq!(
        m,
        vec![
            "reportingComponent: Required value",
            "reportingComponent: Invalid value: \"\": name part must be non-empty",
            "reportingComponent: Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            "reportingInstance: Required value",
            "action: Required value",
            "reason: Required value"
        ]
    );
}

#[test]
fn leases_need_a_positive_duration() {
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 0}});
    assert_eq!(messages(&errors("Lease", lease)), vec!["spec.leaseDurationSeconds: Invalid value: \"0\": must be greater than 0"]);
}

#[test]
fn node_taints_must_be_unique_and_well_formed() {
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "Sometimes"}],
                 "podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}});
    let errs = errors("Node", node);
    assert!(has(&errs, "metadata.taints[1]", FieldErrorKind::Duplicate));
    assert!(has(&errs, "metadata.taints[2].effect", FieldErrorKind::NotSupported));
}

#[test]
fn node_pod_cidrs_may_be_set_once() {
    let old = prepared("Node", json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}));
    let mut set = old.clone();
    set["spec"] = json!({"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]});
    assert!(validate(info("Node"), &set, Some(&old)).is_empty());
    let mut changed = set.clone();
    changed["spec"]["podCIDRs"] = json!(["10.244.2.0/24"]);
    assert_eq!(
        messages(&validate(info("Node"), &changed, Some(&set))),
        vec!["spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"]
    );
}

#[test]
fn names_that_cannot_be_url_path_segments_are_rejected_for_every_kind() {
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "a/b", "namespace": "default"},
        "involvedObject": {"namespace": "default"}});
    assert_eq!(messages(&errors("Event", ev)), vec!["metadata.name: Invalid value: \"a/b\": may not contain '/'"]);
}

#[test]
fn undecodable_objects_are_reported_not_panicked_on() {
    let errs = validate(info("Pod"), &json!({"spec": {"containers": 5}}), None);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "spec.containers");
}

// ---------------------------------------------------------------- field selectors

#[test]
fn pod_field_selectors_read_the_fields_kubernetes_offers() {
    let p = json!({"metadata": {"name": "web", "namespace": "default"},
        "spec": {"nodeName": "n1", "restartPolicy": "Always"},
        "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}]}});
    let i = info("Pod");
    assert_eq!(field_value(i, &p, "metadata.name").as_deref(), Some("web"));
    assert_eq!(field_value(i, &p, "metadata.namespace").as_deref(), Some("default"));
    assert_eq!(field_value(i, &p, "spec.nodeName").as_deref(), Some("n1"));
    assert_eq!(field_value(i, &p, "status.phase").as_deref(), Some("Running"));
    assert_eq!(field_value(i, &p, "status.podIP").as_deref(), Some("10.244.0.5"));
    assert_eq!(field_value(i, &p, "spec.schedulerName").as_deref(), Some(""));
    assert_eq!(field_value(i, &p, "spec.hostNetwork").as_deref(), Some("false"));
    assert_eq!(field_value(i, &p, "status.nominatedNodeName").as_deref(), Some(""));
    assert_eq!(field_value(i, &p, "spec.containers"), None);
}

#[test]
fn other_kinds_field_selectors() {
    let ev = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "web", "uid": "u1"}, "reason": "Pulled",
        "reportingComponent": "kubelet", "type": "Normal"});
    let e = info("Event");
    assert_eq!(field_value(e, &ev, "involvedObject.kind").as_deref(), Some("Pod"));
    assert_eq!(field_value(e, &ev, "involvedObject.uid").as_deref(), Some("u1"));
    assert_eq!(field_value(e, &ev, "involvedObject.fieldPath").as_deref(), Some(""));
    assert_eq!(field_value(e, &ev, "reason").as_deref(), Some("Pulled"));
    assert_eq!(field_value(e, &ev, "source").as_deref(), Some("kubelet"));
    assert_eq!(field_value(e, &ev, "reportingComponent").as_deref(), Some("kubelet"));
    assert_eq!(field_value(e, &ev, "message"), None);

    assert_eq!(field_value(info("Secret"), &json!({"type": "Opaque"}), "type").as_deref(), Some("Opaque"));
    assert_eq!(field_value(info("Namespace"), &json!({"status": {"phase": "Active"}}), "status.phase").as_deref(), Some("Active"));
    assert_eq!(field_value(info("Node"), &json!({"spec": {}}), "spec.unschedulable").as_deref(), Some("false"));
    assert_eq!(field_value(info("Node"), &json!({"spec": {"unschedulable": true}}), "spec.unschedulable").as_deref(), Some("true"));
    assert_eq!(field_value(info("ReplicaSet"), &json!({"status": {"replicas": 3}}), "status.replicas").as_deref(), Some("3"));
    assert_eq!(field_value(info("ReplicationController"), &json!({}), "status.replicas").as_deref(), Some("0"));
    assert_eq!(field_value(info("Deployment"), &json!({}), "status.replicas"), None);
    assert_eq!(field_value(info("ConfigMap"), &json!({"metadata": {"name": "c"}}), "metadata.name").as_deref(), Some("c"));
}

#[test]
fn cluster_scoped_kinds_have_no_namespace_field() {
    assert_eq!(field_value(info("Node"), &json!({"metadata": {"name": "n1"}}), "metadata.namespace"), None);
    assert_eq!(field_value(info("Node"), &json!({"metadata": {"name": "n1"}}), "metadata.name").as_deref(), Some("n1"));
}

//! Endpoints for every Service with a selector (Kubernetes'
//! `EndpointsController`): the IPs of the matching pods, ready ones in
//! `addresses` and the rest in `notReadyAddresses`, with each service port's
//! `targetPort` resolved per pod (a named port can differ from pod to pod).
//!
//! A pod change enqueues every Service in its namespace whose selector
//! matches the pod's old or new labels; the reconcile recomputes the whole
//! Endpoints object from the cache and writes it only when it differs.

use super::service_pods::{
    HEADLESS_LABEL, is_headless, pod_hostname, queue_selecting_services, selected_pods, service_selector, target_port,
};
use anyhow::Context;
use hawser_runtime::{Action, Informer, Informers, ObjectKey, WorkQueue, objects, run_workers};
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub fn start(informers: &Arc<Informers>, config: &super::Config) {
    let services = informers.get::<Service>();
    let pods = informers.get::<Pod>();
    let endpoints = informers.get::<Endpoints>();
    let queue = WorkQueue::<ObjectKey>::new();
    services.queue_changes(&queue);
    endpoints.queue_changes(&queue);
    queue_selecting_services(&pods, &services, &queue);
    let controller = Arc::new(EndpointsController { client: informers.client(), services, pods, endpoints });
    let workers = config.workers;
    tokio::spawn(async move {
        controller.services.wait_synced().await;
        controller.pods.wait_synced().await;
        controller.endpoints.wait_synced().await;
        run_workers("endpoints", queue, workers, move |key| {
            let controller = controller.clone();
            async move { controller.reconcile(&key).await }
        })
        .await;
    });
}

struct EndpointsController {
    client: kube::Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    endpoints: Informer<Endpoints>,
}

impl EndpointsController {
    async fn reconcile(&self, key: &ObjectKey) -> anyhow::Result<Action> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
        let existing = self.endpoints.get(key);
        let service = self.services.get(key);
        let Some(service) = service.filter(|s| s.metadata.deletion_timestamp.is_none()) else {
            // The Service is gone: so are the Endpoints we made for it.
            if existing.is_some() {
                match api.delete(&key.name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e).with_context(|| format!("deleting endpoints {key}")),
                }
            }
            return Ok(Action::AwaitChange);
        };
        // Services without a selector have user-managed Endpoints.
        if service_selector(&service).is_none() {
            return Ok(Action::AwaitChange);
        }
        let desired = desired_endpoints(&service, &self.pods.list_namespace(&key.namespace));
        match existing {
            Some(current) if current.subsets == desired.subsets && current.metadata.labels == desired.metadata.labels => {}
            Some(current) => {
                let mut updated = desired;
                updated.metadata.resource_version = current.metadata.resource_version.clone();
                updated.metadata.annotations = current.metadata.annotations.clone();
                api.replace(&key.name, &PostParams::default(), &updated).await.with_context(|| format!("updating endpoints {key}"))?;
            }
            None => match api.create(&PostParams::default(), &desired).await {
                Ok(_) => {}
                // Created meanwhile (our cache lags our own writes): compare again.
                Err(kube::Error::Api(s)) if s.code == 409 => anyhow::bail!("endpoints {key} exist but are not in the cache yet"),
                Err(e) => return Err(e).with_context(|| format!("creating endpoints {key}")),
            },
        }
        Ok(Action::AwaitChange)
    }
}

/// The Endpoints object `service` should have, given the pods of its namespace.
pub fn desired_endpoints(service: &Service, pods: &[Arc<Pod>]) -> Endpoints {
    let spec = service.spec.clone().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let service_name = service.metadata.name.clone().unwrap_or_default();
    let ports = spec.ports.clone().unwrap_or_default();

    // Addresses grouped by the exact set of ports they serve, as Kubernetes'
    // RepackSubsets does: pods with the same resolved ports share a subset.
    let mut groups: BTreeMap<Vec<PortKey>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> = BTreeMap::new();
    for pod in selected_pods(service, pods) {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()) else { continue };
        if objects::is_pod_terminated(pod) || (pod.metadata.deletion_timestamp.is_some() && !publish_not_ready) {
            continue;
        }
        let resolved: Vec<PortKey> = if ports.is_empty() && headless {
            Vec::new()
        } else {
            // A pod that cannot serve any port of the service is left out.
            let resolved: BTreeSet<PortKey> = ports.iter().filter_map(|p| resolve_port(p, pod)).collect();
            if resolved.is_empty() {
                continue;
            }
            resolved.into_iter().collect()
        };
        let address = endpoint_address(pod, ip, service);
        let (ready, not_ready) = groups.entry(resolved).or_default();
        if publish_not_ready || objects::is_pod_ready(pod) { ready.push(address) } else { not_ready.push(address) }
    }
    let subsets: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| ports.into_iter().map(PortKey::into_endpoint_port).collect()),
            }
        })
        .collect();

    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    Endpoints {
        metadata: ObjectMeta {
            name: Some(service_name),
            namespace: service.metadata.namespace.clone(),
            labels: (!labels.is_empty()).then_some(labels),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

fn endpoint_address(pod: &Pod, ip: String, service: &Service) -> EndpointAddress {
    EndpointAddress {
        ip,
        hostname: pod_hostname(pod, service),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
    }
}

/// One resolved endpoint port, ordered so subsets come out the same every time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    name: Option<String>,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

impl PortKey {
    fn into_endpoint_port(self) -> EndpointPort {
        EndpointPort { name: self.name, port: self.port, protocol: Some(self.protocol), app_protocol: self.app_protocol }
    }
}

/// The pod's port for one service port; None when the pod has no such named port.
fn resolve_port(service_port: &ServicePort, pod: &Pod) -> Option<PortKey> {
    Some(PortKey {
        name: service_port.name.clone(),
        port: target_port(service_port, pod)?,
        protocol: service_port.protocol.clone().unwrap_or_else(|| "TCP".into()),
        app_protocol: service_port.app_protocol.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}}, "spec": spec}))
            .unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, container_ports: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "ports": container_ports}]},
                "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn ready_pods_are_addresses_and_unready_ones_not_ready_addresses() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}));
        let eps = desired_endpoints(&svc, &[pod("a", "10.244.0.2", true, json!([])), pod("b", "10.244.0.3", false, json!([]))]);
        let subsets = eps.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        let ips = |a: &Option<Vec<EndpointAddress>>| a.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>();
        assert_eq!(ips(&subsets[0].addresses), ["10.244.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.244.0.3"]);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
        let target = subsets[0].addresses.as_ref().unwrap()[0].target_ref.clone().unwrap();
        assert_eq!((target.kind.as_deref(), target.name.as_deref()), (Some("Pod"), Some("a")));
        assert_eq!(subsets[0].addresses.as_ref().unwrap()[0].node_name.as_deref(), Some("n1"));
        assert_eq!(eps.metadata.labels.unwrap()["tier"], "front", "Endpoints carry the service's labels");
    }

    #[test]
    fn a_named_target_port_resolves_per_pod() {
        let svc =
            service(json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]}));
        let a = pod("a", "10.244.0.2", true, json!([{"name": "web", "containerPort": 8080}]));
        let b = pod("b", "10.244.0.3", true, json!([{"name": "web", "containerPort": 9090}]));
        let without = pod("c", "10.244.0.4", true, json!([{"name": "other", "containerPort": 7070}]));
        let subsets = desired_endpoints(&svc, &[a, b, without]).subsets.unwrap();
        let by_port: BTreeMap<i32, Vec<String>> = subsets
            .iter()
            .map(|s| (s.ports.as_ref().unwrap()[0].port, s.addresses.iter().flatten().map(|a| a.ip.clone()).collect()))
            .collect();
        assert_eq!(by_port, BTreeMap::from([(8080, vec!["10.244.0.2".to_string()]), (9090, vec!["10.244.0.3".to_string()])]));
    }

    #[test]
    fn pods_without_ip_terminating_or_unmatched_are_left_out() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let no_ip = pod("a", "", true, json!([]));
        let mut terminating = (*pod("b", "10.244.0.3", true, json!([]))).clone();
        terminating.metadata.deletion_timestamp = Some(objects::now());
        let mut other = (*pod("c", "10.244.0.4", true, json!([]))).clone();
        other.metadata.labels = Some(BTreeMap::from([("app".to_string(), "db".to_string())]));
        assert!(desired_endpoints(&svc, &[no_ip, Arc::new(terminating), Arc::new(other)]).subsets.is_none());
    }

    #[test]
    fn headless_services_without_ports_list_addresses_and_are_labelled() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let eps = desired_endpoints(&svc, &[pod("a", "10.244.0.2", true, json!([]))]);
        let subsets = eps.subsets.unwrap();
        assert!(subsets[0].ports.is_none());
        assert_eq!(subsets[0].addresses.as_ref().unwrap()[0].ip, "10.244.0.2");
        assert!(eps.metadata.labels.unwrap().contains_key(HEADLESS_LABEL));
    }

    #[test]
    fn a_pod_whose_hostname_and_subdomain_match_is_named() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let mut p = (*pod("a", "10.244.0.2", true, json!([]))).clone();
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("web-0".into());
        spec.subdomain = Some("web".into());
        let eps = desired_endpoints(&svc, &[Arc::new(p)]);
        assert_eq!(eps.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].hostname.as_deref(), Some("web-0"));
    }
}

//! What the Endpoints and EndpointSlice controllers share: which Services
//! select a pod, and how a pod serves a Service (the port a service port
//! reaches on it, the hostname it is known by).

use hawser_api::selector::LabelSelector;
use hawser_runtime::{Informer, ObjectKey, WorkQueue};
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::sync::Arc;

/// Set on the Endpoints and EndpointSlices of headless services, as Kubernetes does.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The selector of a Service whose endpoints the controllers manage: a
/// non-empty `spec.selector`, and not an ExternalName service.
pub fn service_selector(service: &Service) -> Option<LabelSelector> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    Some(LabelSelector::from_map(selector))
}

/// On every pod change, queues each Service of the pod's namespace whose
/// selector matches the pod's old or new labels (a relabelled pod leaves one
/// Service and joins another).
pub fn queue_selecting_services(pods: &Informer<Pod>, services: &Informer<Service>, queue: &Arc<WorkQueue<ObjectKey>>) {
    let queue = queue.clone();
    let services = services.clone();
    pods.on_change(move |change| {
        for pod in change.versions() {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            for service in services.list_namespace(namespace) {
                if service_selector(&service).is_some_and(|s| s.matches(&labels)) {
                    queue.add(ObjectKey::of(&*service));
                }
            }
        }
    });
}

/// The pods of `pods` that `service` selects.
pub fn selected_pods<'a>(service: &Service, pods: &'a [Arc<Pod>]) -> impl Iterator<Item = &'a Arc<Pod>> {
    let selector = service_selector(service);
    pods.iter().filter(move |pod| {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        selector.as_ref().is_some_and(|s| s.matches(&labels))
    })
}

/// Whether `service` is headless (Kubernetes' `!IsServiceIPSet`).
pub fn is_headless(service: &Service) -> bool {
    matches!(service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()), None | Some("" | "None"))
}

/// Kubernetes' `FindPort`: the pod port a service port reaches. A number is
/// taken as it is; a name is looked up among the ports of the pod's
/// containers, then of its sidecars (init containers that keep running),
/// with the service port's protocol. None when the pod has no such port.
pub fn target_port(service_port: &ServicePort, pod: &Pod) -> Option<i32> {
    let name = match &service_port.target_port {
        // Defaulting sets targetPort to the port; an object that skipped it means the same.
        None => return Some(service_port.port),
        Some(IntOrString::Int(n)) => return Some(*n),
        Some(IntOrString::String(name)) => name,
    };
    let protocol = service_port.protocol.as_deref().unwrap_or("TCP");
    let spec = pod.spec.as_ref()?;
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
        .map(|p| p.container_port)
}

/// Kubernetes' `ShouldSetHostname`: a pod is addressable by its hostname
/// under the Service that is its subdomain.
pub fn pod_hostname(pod: &Pod, service: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_namespace = pod.metadata.namespace == service.metadata.namespace;
    (same_namespace && spec.subdomain.is_some() && spec.subdomain == service.metadata.name).then(|| hostname.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})).unwrap()
    }

    fn port(target: serde_json::Value, protocol: &str) -> ServicePort {
        serde_json::from_value(json!({"port": 80, "targetPort": target, "protocol": protocol})).unwrap()
    }

    #[test]
    fn named_ports_resolve_by_name_and_protocol_including_sidecars() {
        let p = pod(json!({
            "containers": [{"name": "app", "ports": [{"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}],
            "initContainers": [
                {"name": "proxy", "restartPolicy": "Always", "ports": [{"name": "dns", "containerPort": 5354, "protocol": "TCP"}]},
                {"name": "setup", "ports": [{"name": "web", "containerPort": 8080}]},
            ],
        }));
        assert_eq!(target_port(&port(json!("dns"), "UDP"), &p), Some(5353));
        assert_eq!(target_port(&port(json!("dns"), "TCP"), &p), Some(5354), "a sidecar serves the TCP one");
        assert_eq!(target_port(&port(json!("web"), "TCP"), &p), None, "an init container that finishes serves nothing");
        assert_eq!(target_port(&port(json!(9090), "TCP"), &p), Some(9090));
    }

    #[test]
    fn hostname_needs_the_service_as_subdomain() {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "default"}})).unwrap();
        assert_eq!(pod_hostname(&pod(json!({"containers": [], "hostname": "db-0", "subdomain": "db"})), &svc).as_deref(), Some("db-0"));
        assert_eq!(pod_hostname(&pod(json!({"containers": [], "hostname": "db-0", "subdomain": "other"})), &svc), None);
        assert_eq!(pod_hostname(&pod(json!({"containers": [], "subdomain": "db"})), &svc), None);
    }
}

//! `healthCheckNodePort` servers for `externalTrafficPolicy: Local`
//! services, as kube-proxy runs them: an external load balancer asks every
//! node and sends traffic only to those answering 200, i.e. those with a
//! local endpoint. Any path answers with kube-proxy's JSON:
//!
//! ```json
//! {"service":{"namespace":"default","name":"web"},"localEndpoints":1,"serviceProxyHealthy":true}
//! ```
//!
//! 200 when the node has local endpoints, 503 when it has none.

use super::state::ProxyState;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hawser_runtime::ObjectKey;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Server {
    service: ObjectKey,
    local_endpoints: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One server per health-check port in the state.
#[derive(Default)]
pub struct HealthCheckServers {
    servers: BTreeMap<u16, Server>,
}

impl HealthCheckServers {
    /// Starts, updates and stops servers to match `state`.
    pub async fn sync(&mut self, state: &ProxyState) {
        let mut wanted: BTreeMap<u16, (ObjectKey, usize)> = BTreeMap::new();
        for port in state.ports() {
            if let Some(hc) = port.health_check_node_port {
                let count = wanted.entry(hc).or_insert((port.name.service.clone(), 0));
                // A service's ports share one check: its most-served port counts.
                count.1 = count.1.max(port.local_endpoints().len());
            }
        }
        self.servers.retain(|port, server| wanted.get(port).is_some_and(|(service, _)| *service == server.service));
        for (port, (service, count)) in wanted {
            if let Some(server) = self.servers.get(&port) {
                server.local_endpoints.store(count, Ordering::Relaxed);
                continue;
            }
            let local_endpoints = Arc::new(AtomicUsize::new(count));
            match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
                Ok(listener) => {
                    let router = axum::Router::new().fallback({
                        let service = service.clone();
                        let local_endpoints = local_endpoints.clone();
                        move || {
                            let answer = answer(&service, local_endpoints.load(Ordering::Relaxed));
                            async move { answer }
                        }
                    });
                    let task = tokio::spawn(async move {
                        if let Err(e) = axum::serve(listener, router).await {
                            tracing::warn!(port, error = %e, "health check server stopped");
                        }
                    });
                    tracing::info!(port, %service, "serving the health check node port");
                    self.servers.insert(port, Server { service, local_endpoints, task });
                }
                // The next sync tries again.
                Err(e) => tracing::warn!(port, %service, error = %e, "cannot serve the health check node port"),
            }
        }
    }
}

fn answer(service: &ObjectKey, local_endpoints: usize) -> Response {
    let body = serde_json::json!({
        "service": {"namespace": service.namespace, "name": service.name},
        "localEndpoints": local_endpoints,
        "serviceProxyHealthy": true,
    });
    let status = if local_endpoints > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
    if let Ok(weight) = HeaderValue::from_str(&local_endpoints.to_string()) {
        headers.insert("X-Load-Balancing-Endpoint-Weight", weight);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_answer_is_kube_proxys_json_with_200_or_503() {
        let key = ObjectKey::new("default", "web");
        let ok = answer(&key, 2);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["X-Load-Balancing-Endpoint-Weight"], "2");
        let body = axum::body::to_bytes(ok.into_body(), 1024).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"service": {"namespace": "default", "name": "web"}, "localEndpoints": 2, "serviceProxyHealthy": true})
        );
        assert_eq!(answer(&key, 0).status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

//! Talking to a node's agent on kubelet's port, for what only the node has:
//! `pods/log` (the agent's answer streamed through, so `-f` works) and
//! `pods/exec` (an upgrade-aware proxy: the client's WebSocket handshake is
//! forwarded, and after both sides answered 101 the bytes are copied both
//! ways untouched).
//!
//! The agent is found as Kubernetes finds the kubelet: the pod's
//! `spec.nodeName`, that Node's address (InternalIP first) and
//! `status.daemonEndpoints.kubeletEndpoint.Port` (10250 when unset). Its
//! certificate is self-signed and not verified, as Kubernetes does without
//! `--kubelet-certificate-authority`; the API server proves itself with its
//! admin token (the cluster token agents are configured with).

use super::objects;
use super::{Api, request::Query};
use bytes::Bytes;
use futures::stream::BoxStream;
use hawser_api::ApiError;
use hawser_api::resources;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// kubelet's port, when a Node does not say.
pub const DEFAULT_AGENT_PORT: u16 = 10250;
/// How long reaching an agent (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an agent's error answer is read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The log options the agent understands; others are not forwarded.
const LOG_OPTIONS: &[&str] = &["follow", "previous", "tailLines", "timestamps", "sinceSeconds", "sinceTime", "limitBytes"];

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// `(namespace, pod)` when `path` is a pod's `exec` subresource. Exec is
/// routed here before resource parsing: it is an upgrade, not a REST verb.
pub fn exec_target(path: &str) -> Option<(&str, &str)> {
    match path.trim_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        ["api", "v1", "namespaces", namespace, "pods", name, "exec"] if !namespace.is_empty() && !name.is_empty() => {
            Some((namespace, name))
        }
        _ => None,
    }
}

/// The names of a pod's containers: regular, then init, then ephemeral.
fn container_names(pod: &Value) -> (Vec<&str>, Vec<&str>) {
    let names = |field: &str| -> Vec<&str> {
        pod["spec"][field].as_array().map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect()).unwrap_or_default()
    };
    let mut others = names("initContainers");
    others.extend(names("ephemeralContainers"));
    (names("containers"), others)
}

/// The container a request means: the one it names, which must be the
/// pod's; or when it names none, what `default` picks.
fn pick_container(
    pod: &Value,
    requested: Option<&str>,
    default: impl FnOnce(&[&str], &[&str]) -> Result<String, ApiError>,
) -> Result<String, ApiError> {
    let name = objects::name(pod);
    let (containers, others) = container_names(pod);
    match requested {
        Some(c) if containers.contains(&c) || others.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None => default(&containers, &others),
    }
}

/// Logs without a container: the pod's only container, as Kubernetes does.
pub fn log_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = objects::name(pod).to_string();
    pick_container(pod, requested, |containers, others| match containers {
        [only] => Ok(only.to_string()),
        [] => Err(ApiError::bad_request(format!("a container name must be specified for pod {name}"))),
        many => {
            let mut message = format!("a container name must be specified for pod {name}, choose one of: [{}]", many.join(" "));
            if !others.is_empty() {
                message.push_str(&format!(" or one of the init containers: [{}]", others.join(" ")));
            }
            Err(ApiError::bad_request(message))
        }
    })
}

/// Exec without a container: the pod's first (kubectl names one itself,
/// saying `Defaulted container ...`).
fn exec_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = objects::name(pod).to_string();
    pick_container(pod, requested, |containers, _| {
        containers.first().map(|c| c.to_string()).ok_or_else(|| ApiError::bad_request(format!("pod {name} has no containers")))
    })
}

/// Where the agent of the node running `pod` listens.
pub async fn agent_address(api: &Api, pod: &Value) -> Result<SocketAddr, ApiError> {
    let name = objects::name(pod);
    let node = pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?;
    let nodes = resources::lookup("", "v1", "nodes").expect("nodes are served");
    let (node_obj, _) = api.read(nodes, None, node).await?;
    node_endpoint(&node_obj).ok_or_else(|| ApiError::unavailable(format!("node {node} reports no address its agent can be reached at")))
}

/// A Node's agent endpoint: its InternalIP (else ExternalIP, else a
/// Hostname that is an address) and kubelet port.
fn node_endpoint(node: &Value) -> Option<SocketAddr> {
    let addresses = node["status"]["addresses"].as_array()?;
    let ip = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| addresses.iter().filter(|a| a["type"] == *kind).find_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok()))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
        .unwrap_or(DEFAULT_AGENT_PORT);
    Some(SocketAddr::new(ip, port))
}

/// TLS to agents: any certificate, with its handshake signature still
/// checked; HTTP/1.1 because exec is an HTTP/1.1 upgrade.
fn agent_tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| hawser_runtime::tls::trust_any_server(&[b"http/1.1"])).clone()
}

/// Sends `request` to the agent at `addr` over a connection of its own,
/// which may be upgraded.
async fn send(addr: SocketAddr, request: Request<Empty<Bytes>>) -> Result<Response<Incoming>, ApiError> {
    // Worded as Go's HTTP client words it, as Kubernetes reports it.
    let url = format!("https://{addr}{}", request.uri());
    let method = request.method().as_str();
    let op = format!("{}{}", &method[..1], method[1..].to_ascii_lowercase());
    let failed = |e: &dyn std::fmt::Display| ApiError::unavailable(format!("{op} \"{url}\": {e}"));
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("dial tcp {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        tokio_rustls::TlsConnector::from(agent_tls()).connect(name, tcp).await.map_err(|e| format!("TLS handshake with {addr}: {e}"))
    };
    let tls = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Err(_) => return Err(failed(&format!("dial tcp {addr}: i/o timeout"))),
        Ok(Err(e)) => return Err(failed(&e)),
        Ok(Ok(tls)) => tls,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| failed(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "agent connection ended with an error");
        }
    });
    sender.send_request(request).await.map_err(|e| failed(&e))
}

/// An agent's refusal as the client's error: its own Status when it sent
/// one, with the agent's code.
async fn agent_error(response: Response<Incoming>) -> ApiError {
    let code = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_ERROR_BODY).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let status: Option<Value> = serde_json::from_slice(&body).ok();
    let message = status
        .as_ref()
        .and_then(|s| s["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    ApiError { code, reason, message, details: None }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The agent's path for a container's log, with the options it understands.
fn agent_log_path(namespace: &str, pod: &str, container: &str, q: &Query) -> String {
    let query: Vec<String> = LOG_OPTIONS.iter().filter_map(|key| q.get(key).map(|v| format!("{key}={}", encode(v)))).collect();
    let path = format!("/containerLogs/{}/{}/{}", encode(namespace), encode(pod), encode(container));
    if query.is_empty() { path } else { format!("{path}?{}", query.join("&")) }
}

/// GET pods/<name>/log: the agent's answer, streamed as it comes.
pub async fn logs(api: &Api, namespace: &str, pod: &Value, container: &str, q: &Query) -> Result<BoxStream<'static, Bytes>, ApiError> {
    for key in ["tailLines", "limitBytes", "sinceSeconds"] {
        q.number::<i64>(key)?;
    }
    let addr = agent_address(api, pod).await?;
    let path = agent_log_path(namespace, objects::name(pod), container, q);
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {}", api.tokens.admin_token()))
        .body(Empty::new())
        .map_err(|e| ApiError::internal(format!("building the agent request: {e}")))?;
    let response = send(addr, request).await?;
    if response.status() != StatusCode::OK {
        return Err(agent_error(response).await);
    }
    // A failure mid-stream (the agent went away) can only end the body.
    let stream = futures::stream::unfold(response.into_body(), |mut body| async move {
        loop {
            match body.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Some((data, body)),
                    _ => continue,
                },
                Err(e) => {
                    tracing::debug!(error = %e, "a log stream from an agent broke off");
                    return None;
                }
            }
        }
    });
    Ok(Box::pin(stream))
}

/// Whether a request asks for a connection upgrade (WebSocket or SPDY).
fn is_upgrade(headers: &HeaderMap) -> bool {
    let connection = headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok());
    headers.contains_key(header::UPGRADE) && connection.flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The agent's path for an exec: the client's query as it was sent (the
/// command words keep their encoding) less `container`, which the path names.
fn agent_exec_path(namespace: &str, pod: &str, container: &str, query: Option<&str>) -> String {
    let rest: Vec<&str> =
        query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("container")).collect();
    let path = format!("/exec/{}/{}/{}", encode(namespace), encode(pod), encode(container));
    if rest.is_empty() { path } else { format!("{path}?{}", rest.join("&")) }
}

/// The client's headers as the agent gets them: the upgrade handshake
/// (`Upgrade`, `Connection`, `Sec-WebSocket-*`, SPDY's
/// `X-Stream-Protocol-Version`) kept; the client's credentials and the
/// framing of its own connection replaced.
fn agent_headers(client: &HeaderMap, addr: SocketAddr, token: &str) -> HeaderMap {
    const DROPPED: &[&str] = &[
        "host",
        "authorization",
        "proxy-authorization",
        "proxy-connection",
        "content-length",
        "transfer-encoding",
        "te",
        "trailer",
        "keep-alive",
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in client {
        if !DROPPED.contains(&name.as_str()) {
            headers.append(name, value.clone());
        }
    }
    headers.insert(header::HOST, addr.to_string().parse().expect("an address is a valid header"));
    headers.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().expect("a token is a valid header"));
    headers
}

/// GET or POST pods/<name>/exec: checks the pod and container, forwards
/// the upgrade to the node's agent and, once both sides switched
/// protocols, joins the two connections.
pub async fn exec(api: &Api, mut req: Request<Incoming>, namespace: &str, name: &str) -> Result<Response<Body>, ApiError> {
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} pods/exec)",
            req.method()
        )));
    }
    let pods = resources::lookup("", "v1", "pods").expect("pods are served");
    let (pod, _) = api.read(pods, Some(namespace), name).await?;
    let container = exec_container(&pod, Query::parse(req.uri().query()).get("container"))?;
    if !is_upgrade(req.headers()) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let addr = agent_address(api, &pod).await?;
    let mut forwarded = Request::builder()
        .method(req.method().clone())
        .uri(agent_exec_path(namespace, name, &container, req.uri().query()))
        .body(Empty::new())
        .map_err(|e| ApiError::internal(format!("building the agent request: {e}")))?;
    *forwarded.headers_mut() = agent_headers(req.headers(), addr, api.tokens.admin_token());
    let client_side = hyper::upgrade::on(&mut req);
    let mut response = send(addr, forwarded).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(agent_error(response).await);
    }
    let agent_side = hyper::upgrade::on(&mut response);
    let mut reply = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in response.headers() {
        reply = reply.header(name, value);
    }
    let what = format!("{namespace}/{name}/{container}");
    tokio::spawn(async move {
        let joined = async {
            let (client, agent) = tokio::try_join!(client_side, agent_side)?;
            tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(agent)).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        if let Err(e) = joined.await {
            tracing::debug!(exec = what, error = %e, "an exec connection ended with an error");
        }
    });
    reply.body(Full::new(Bytes::new()).boxed_unsync()).map_err(|e| ApiError::internal(format!("building the upgrade answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {
            "containers": [{"name": "app"}, {"name": "sidecar"}],
            "initContainers": [{"name": "init"}],
        }})
    }

    #[test]
    fn exec_paths_are_recognised_exactly() {
        assert_eq!(exec_target("/api/v1/namespaces/default/pods/web/exec"), Some(("default", "web")));
        assert_eq!(exec_target("/api/v1/namespaces/default/pods/web/log"), None);
        assert_eq!(exec_target("/api/v1/namespaces/default/pods/web"), None);
        assert_eq!(exec_target("/apis/apps/v1/namespaces/default/pods/web/exec"), None);
    }

    #[test]
    fn exec_requests_are_rewritten_for_the_agent() {
        let query = "command=sh&command=-c&command=echo%20hi&container=sidecar&stdin=true&stdout=true&stderr=true";
        assert_eq!(
            agent_exec_path("default", "web", "sidecar", Some(query)),
            "/exec/default/web/sidecar?command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&stderr=true"
        );
        assert_eq!(agent_exec_path("default", "web", "app", None), "/exec/default/web/app");

        let mut client = HeaderMap::new();
        for (name, value) in [
            ("host", "apiserver:6443"),
            ("authorization", "Bearer user-token"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "v5.channel.k8s.io"),
            ("sec-websocket-protocol", "v4.channel.k8s.io"),
            ("content-length", "0"),
        ] {
            client.append(name, value.parse().unwrap());
        }
        assert!(is_upgrade(&client));
        let addr: SocketAddr = "198.51.100.2:10250".parse().unwrap();
        let headers = agent_headers(&client, addr, "admin-token");
        assert_eq!(headers["host"], "198.51.100.2:10250");
        assert_eq!(headers["authorization"], "Bearer admin-token");
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        let protocols: Vec<_> = headers.get_all("sec-websocket-protocol").iter().collect();
        assert_eq!(protocols, ["v5.channel.k8s.io", "v4.channel.k8s.io"]);
        assert!(!headers.contains_key("content-length"));
        assert!(!is_upgrade(&HeaderMap::new()));
    }

    #[test]
    fn containers_default_and_must_belong_to_the_pod() {
        assert_eq!(exec_container(&pod(), None).unwrap(), "app");
        assert_eq!(exec_container(&pod(), Some("init")).unwrap(), "init");
        let err = exec_container(&pod(), Some("nope")).unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (400, "container nope is not valid for pod web"));
        let err = log_container(&pod(), None).unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod web, choose one of: [app sidecar] or one of the init containers: [init]"
        );
        let single = json!({"metadata": {"name": "one"}, "spec": {"containers": [{"name": "only"}]}});
        assert_eq!(log_container(&single, None).unwrap(), "only");
    }

    #[test]
    fn the_agent_is_found_at_the_nodes_address_and_kubelet_port() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "198.51.100.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
        }});
        assert_eq!(node_endpoint(&node), Some("198.51.100.2:10350".parse().unwrap()));
        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "198.51.100.3"}]}});
        assert_eq!(node_endpoint(&node), Some("198.51.100.3:10250".parse().unwrap()));
        assert_eq!(node_endpoint(&json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}})), None);
    }

    #[test]
    fn log_options_are_forwarded_encoded() {
        let q = Query::parse(Some("container=app&follow=true&sinceTime=2025-01-01T00%3A00%3A00Z&tailLines=5&pretty=true"));
        assert_eq!(
            agent_log_path("default", "web", "app", &q),
            "/containerLogs/default/web/app?follow=true&tailLines=5&sinceTime=2025-01-01T00%3A00%3A00Z"
        );
    }
}

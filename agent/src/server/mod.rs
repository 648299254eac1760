//! The agent's HTTPS server on kubelet's port (10250): what the API server
//! proxies `kubectl logs` and `kubectl exec` to.
//!
//! Paths are the kubelet's, so the API server's side is the same proxy it
//! would be for a kubelet: `GET /containerLogs/{namespace}/{pod}/{container}`
//! ([`logs`]) and `GET|POST /exec/{namespace}/{pod}/{container}` ([`exec`]).
//! Every request must carry `Authorization: Bearer <token>` with a token the
//! server was given (the API server sends the cluster token it holds);
//! anything else is a 401. The certificate is self-signed and made at each
//! start: the API server does not verify it, as Kubernetes does not without
//! `--kubelet-certificate-authority`. Errors are Kubernetes `Status` objects,
//! which the API server hands on to the client.
//!
//! The server knows pods by namespace and name, the runtime by UID: a
//! [`PodLookup`] (the pod workers' view) maps one to the other.
//!
//! # Layout
//! - this file: [`AgentServer`], authentication, errors, the TLS loop.
//! - [`logs`]: CRI log files back into text, following.
//! - [`exec`]: the WebSocket channel protocol around `Runtime::exec`.

pub mod exec;
pub mod logs;

use crate::runtime::Runtime;
use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State as Shared};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// The pods this node runs, by namespace and name.
pub trait PodLookup: Send + Sync {
    /// The UID of pod `namespace/name` if it runs here.
    fn pod_uid(&self, namespace: &str, name: &str) -> Option<String>;
}

impl<F> PodLookup for F
where
    F: Fn(&str, &str) -> Option<String> + Send + Sync,
{
    fn pod_uid(&self, namespace: &str, name: &str) -> Option<String> {
        self(namespace, name)
    }
}

/// What the handlers share.
pub(crate) struct State {
    tokens: Vec<String>,
    /// What `/metrics` shows (Prometheus text format).
    metrics: Arc<prometheus_client::registry::Registry>,
    runtime: Arc<dyn Runtime>,
    pods: Arc<dyn PodLookup>,
}

impl State {
    fn pod_uid(&self, namespace: &str, name: &str) -> Result<String, Failure> {
        self.pods
            .pod_uid(namespace, name)
            .ok_or_else(|| Failure::not_found(format!("pod \"{name}\" in namespace \"{namespace}\" not found on this node")))
    }

    fn authenticated(&self, header: Option<&str>) -> bool {
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else { return false };
        // Every known token is compared in full, so timing tells nothing.
        self.tokens.iter().fold(false, |found, known| found | constant_time_eq(known.as_bytes(), token.as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error answer: a Kubernetes `Status` with the same code.
#[derive(Debug)]
pub(crate) struct Failure {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl Failure {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into() }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code.as_u16(),
        });
        (self.code, [(header::CONTENT_TYPE, "application/json")], status.to_string()).into_response()
    }
}

/// Decoded `key=value` pairs of a query string, repeated keys kept in order
/// (`command=sh&command=-c`).
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

/// The routes, behind authentication.
fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/containerLogs/{namespace}/{pod}/{container}", get(logs::container_logs))
        .route("/exec/{namespace}/{pod}/{container}", get(exec::exec).post(exec::exec))
        .route("/metrics", get(metrics))
        .fallback(|| async { Failure::not_found("the agent serves /containerLogs, /exec and /metrics only") })
        .layer(middleware::from_fn_with_state(Arc::clone(&state), authenticate))
        .with_state(state)
}

async fn metrics(Shared(state): Shared<Arc<State>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.metrics) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response(),
        Err(e) => Failure::internal(format!("encoding the metrics: {e}")).into_response(),
    }
}

async fn authenticate(Shared(state): Shared<Arc<State>>, request: Request, next: Next) -> Response {
    if !state.authenticated(request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())) {
        return Failure::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized").into_response();
    }
    next.run(request).await
}

/// A bound agent server, serving once [`AgentServer::serve`] runs.
pub struct AgentServer {
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
}

impl AgentServer {
    /// Binds `listen` (`0.0.0.0:10250` in a deployment) and makes the
    /// certificate. Requests must carry one of `tokens`; `runtime` runs the
    /// containers, `pods` says which pods are on this node and `/metrics`
    /// shows `metrics`.
    pub async fn bind(
        listen: SocketAddr,
        tokens: Vec<String>,
        runtime: Arc<dyn Runtime>,
        pods: Arc<dyn PodLookup>,
        metrics: Arc<prometheus_client::registry::Registry>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(tokens.iter().any(|t| !t.trim().is_empty()), "the agent server needs a token to check requests against");
        let tls = self_signed_tls(listen)?;
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding the agent server to {listen}"))?;
        let state = Arc::new(State { tokens, metrics, runtime, pods });
        Ok(Self { listener, tls, router: router(state) })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves; sessions in flight (a followed
    /// log, an exec) are cut when the runtime ends.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait and go on.
                        tracing::warn!(error = %e, "the agent server's accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, router) = (acceptor.clone(), self.router.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "agent server TLS handshake failed");
                        return;
                    }
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
                    tracing::debug!(%peer, error = %e, "agent server connection ended with an error");
                }
            });
        }
    }
}

/// A TLS configuration with a fresh self-signed certificate naming
/// `localhost` and the listen address (no client checks the names: the API
/// server does not verify it).
fn self_signed_tls(listen: SocketAddr) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).context("certificate names")?;
    params.subject_alt_names.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    if !listen.ip().is_unspecified() {
        params.subject_alt_names.push(rcgen::SanType::IpAddress(listen.ip()));
    }
    params.distinguished_name.push(rcgen::DnType::CommonName, "hawser-agent");
    let key = rcgen::KeyPair::generate().context("generating the agent server's key")?;
    let cert = params.self_signed(&key).context("making the agent server's certificate")?;
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| anyhow::anyhow!("the agent server's key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)?;
    // HTTP/1.1 only: exec's WebSocket is an HTTP/1.1 upgrade.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_keep_repeated_keys() {
        let pairs = query_pairs("command=sh&command=-c&command=echo%20a+b%3D1&stdin=true&x&bad=%zz%4");
        let expect = [("command", "sh"), ("command", "-c"), ("command", "echo a b=1"), ("stdin", "true"), ("x", ""), ("bad", "%zz%4")];
        assert_eq!(pairs, expect.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn only_known_tokens_authenticate() {
        let state = State {
            tokens: vec!["secret".into()],
            metrics: Default::default(),
            runtime: Arc::new(crate::runtime::process::ProcessRuntime::new(
                "/nonexistent".into(),
                crate::runtime::process::Cgroup { unified: "/nonexistent".into(), v1: None },
                "/nonexistent".into(),
            )),
            pods: Arc::new(|_: &str, _: &str| None),
        };
        assert!(state.authenticated(Some("Bearer secret")));
        assert!(!state.authenticated(Some("Bearer secre")));
        assert!(!state.authenticated(Some("secret")));
        assert!(!state.authenticated(None));
    }
}

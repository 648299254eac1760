//! HTTPS serving and routing: one task per connection (HTTP/2 or 1.1),
//! authentication, then the request goes to discovery, OpenAPI, metrics or
//! the REST handlers. One request's failure is its own Status answer and
//! never stops the server.

use super::request::{self, Query, Render, Target};
use super::{Api, MAX_BODY_BYTES, Reply, discovery, node_proxy, subresources, watch};
use bytes::Bytes;
use futures::StreamExt;
use hawser_api::ApiError;
use hawser_api::patch::PatchType;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Request counts and latencies, named as Kubernetes names them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<VerbLabels, Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
    resource: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<VerbLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        registry.register("apiserver_request", "Requests by verb, resource and HTTP code", requests.clone());
        registry.register("apiserver_request_duration_seconds", "Request latency by verb and resource", durations.clone());
        Self { registry, requests, durations }
    }
}

impl Metrics {
    fn observe(&self, verb: &str, resource: &str, code: u16, started: Instant) {
        self.requests.get_or_create(&RequestLabels { verb: verb.into(), resource: resource.into(), code }).inc();
        self.durations.get_or_create(&VerbLabels { verb: verb.into(), resource: resource.into() }).observe(started.elapsed().as_secs_f64());
    }

    fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

pub async fn serve(
    api: Arc<Api>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait and go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(handle(api, req).await) }
            });
            // With upgrades: `pods/exec` switches protocols (WebSocket, SPDY).
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response<Body> {
    let mut builder = Response::builder().status(code).header(header::CONTENT_TYPE, "application/json");
    for w in warnings {
        builder = builder.header("Warning", format!("299 - {}", serde_json::to_string(w).unwrap_or_default()));
    }
    builder.body(Full::new(Bytes::from(serde_json::to_vec(body).expect("JSON"))).boxed_unsync()).expect("valid response")
}

fn raw_response(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).boxed_unsync())
        .expect("valid response")
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_json(), &[])
}

/// Paths anyone may read, as Kubernetes' `system:public-info-viewer` allows.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/livez" | "/version")
}

async fn handle(api: Arc<Api>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if !is_public(&path) && api.tokens.authenticate(req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())).is_none() {
        return error_response(&ApiError::unauthorized());
    }
    let (verb, resource, response) = match route(&api, req).await {
        Ok(routed) => routed,
        Err((verb, resource, e)) => (verb, resource, error_response(&e)),
    };
    if verb != "watch" {
        api.metrics.observe(&verb, &resource, response.status().as_u16(), started);
    }
    tracing::debug!(%method, %path, code = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64);
    response
}

type Routed = (String, String, Response<Body>);
type RouteError = (String, String, ApiError);

async fn route(api: &Arc<Api>, req: Request<Incoming>) -> Result<Routed, RouteError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let path = if path.is_empty() { "/".to_string() } else { path };
    let plain = |verb: &str, e: ApiError| (verb.to_string(), String::new(), e);
    // An upgrade, not a REST verb: the request goes on whole to the node.
    if let Some((namespace, name)) = node_proxy::exec_target(&path) {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        let fail = |e| ("create".to_string(), "pods/exec".to_string(), e);
        let resp = node_proxy::exec(api, req, &namespace, &name).await.map_err(fail)?;
        return Ok(("create".into(), "pods/exec".into(), resp));
    }
    if req.method() == Method::GET
        && let Some(resp) = non_resource(api, &path).map_err(|e| plain("get", e))?
    {
        return Ok(("get".into(), String::new(), resp));
    }
    let target = request::parse_path(&path).map_err(|e| plain("get", e))?.ok_or_else(|| plain("get", ApiError::path_not_found(&path)))?;
    let resource = match &target.subresource {
        Some(sub) => format!("{}/{sub}", target.info.plural),
        None => target.info.plural.to_string(),
    };
    let q = Query::parse(req.uri().query());
    let render = Render::from_accept(req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_string();
    let method = req.method().clone();
    let verb = verb_of(&method, &target, &q);
    let fail = |e: ApiError| (verb.to_string(), resource.clone(), e);
    let body = read_body(req).await.map_err(fail)?;

    if verb == "watch" {
        let stream = watch::watch(api, &target, &q, render).await.map_err(fail)?;
        let body = BodyExt::boxed_unsync(StreamBody::new(stream.map(|b| Ok::<_, Infallible>(Frame::data(b)))));
        let resp =
            Response::builder().status(StatusCode::OK).header(header::CONTENT_TYPE, "application/json").body(body).expect("valid response");
        return Ok((verb.into(), resource, resp));
    }
    if verb == "get" && target.subresource.as_deref() == Some("log") {
        let stream = subresources::log(api, &target, &q).await.map_err(fail)?;
        let body = BodyExt::boxed_unsync(StreamBody::new(stream.map(|b| Ok::<_, Infallible>(Frame::data(b)))));
        let resp =
            Response::builder().status(StatusCode::OK).header(header::CONTENT_TYPE, "text/plain").body(body).expect("valid response");
        return Ok((verb.into(), resource, resp));
    }
    let reply = dispatch(api, &target, &q, render, &method, verb, &content_type, &body).await.map_err(fail)?;
    Ok((verb.into(), resource, json_response(reply.code, &reply.body, &reply.warnings)))
}

fn verb_of(method: &Method, t: &Target, q: &Query) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", _) if q.flag("watch") => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => "unknown",
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::too_large(format!("the request body is larger than the {MAX_BODY_BYTES}-byte limit")))
        }
        Err(e) => Err(ApiError::bad_request(format!("reading the request body failed: {e}"))),
    }
}

/// The request body as a JSON value: JSON, or YAML when the client says so.
fn parse_object(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let value: Value = match media {
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        }
        "application/json" | "" | "*/*" => {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?
        }
        hawser_api::protobuf::CONTENT_TYPE => hawser_api::protobuf::decode_object(body)?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    Ok(value)
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    api: &Arc<Api>,
    t: &Target,
    q: &Query,
    render: Render,
    method: &Method,
    verb: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let sub = t.subresource.as_deref();
    let optional_body = || if body.is_empty() { Ok(None) } else { parse_object(content_type, body).map(Some) };
    match (verb, sub) {
        ("get", Some("scale")) => subresources::get_scale(api, t).await,
        ("update", Some("scale")) => subresources::write_scale(api, t, q, None, body).await,
        ("patch", Some("scale")) => {
            let kind = PatchType::from_content_type(content_type).ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            subresources::write_scale(api, t, q, Some(kind), body).await
        }
        ("create", Some("binding")) => subresources::bind(api, t, q, body).await,
        ("get", None | Some("status")) => api.get(t, q, render).await,
        ("list", None) => api.list(t, q, render).await,
        ("create", None) => api.create(t, q, parse_object(content_type, body)?).await,
        ("update", None | Some("status")) => api.update(t, q, parse_object(content_type, body)?).await,
        ("patch", None | Some("status")) => api.patch(t, q, content_type, body).await,
        ("delete", None) => api.delete(t, q, optional_body()?).await,
        ("deletecollection", None) => api.delete_collection(t, q, optional_body()?).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {}{})",
            t.info.plural,
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// Discovery, OpenAPI, health and metrics.
fn non_resource(api: &Api, path: &str) -> Result<Option<Response<Body>>, ApiError> {
    let json = |v: Value| Ok(Some(json_response(200, &v, &[])));
    match path {
        "/healthz" | "/livez" | "/readyz" => Ok(Some(raw_response(200, "text/plain; charset=utf-8", "ok"))),
        "/version" => json(discovery::version()),
        "/api" => json(discovery::core_versions(&format!("0.0.0.0:{}", api.api_port))),
        "/apis" => json(discovery::group_list()),
        "/metrics" => Ok(Some(raw_response(200, "text/plain; version=0.0.4", api.metrics.render()))),
        "/openapi/v3" => json(hawser_api::openapi::v3_root()),
        "/openapi/v2" => Ok(Some(raw_response(200, discovery::OPENAPI_V2_PROTOBUF, discovery::openapi_v2_protobuf()))),
        p if p.starts_with("/openapi/v3/") => match hawser_api::openapi::v3_document_bytes(&p["/openapi/v3/".len()..]) {
            Some(bytes) => Ok(Some(raw_response(200, "application/json", Bytes::copy_from_slice(&bytes)))),
            None => Err(ApiError::path_not_found(p)),
        },
        p => {
            let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
            match parts.as_slice() {
                ["api", version] => discovery::resource_list("", version).map_or_else(|| Err(ApiError::path_not_found(p)), json),
                ["apis", group] => discovery::api_group(group).map_or_else(|| Err(ApiError::path_not_found(p)), json),
                ["apis", group, version] => discovery::resource_list(group, version).map_or_else(|| Err(ApiError::path_not_found(p)), json),
                _ => Ok(None),
            }
        }
    }
}

//! The Kubernetes API server: HTTPS, bearer tokens, discovery, OpenAPI, and
//! the REST verbs over the store for every resource in the registry.
//!
//! # Layout
//! - [`http`]: the accept loop and the routing of one request to a handler.
//! - [`request`]: URL → resource/namespace/name/subresource; query options.
//! - [`rest`]: get, list, create, update, patch, delete over the store.
//! - [`watch`]: streaming WatchEvents.
//! - [`subresources`]: scale, binding, log.
//! - [`node_proxy`]: logs and exec, from the agent of the pod's node.
//! - [`services`]: cluster IP and NodePort allocation.
//! - [`lifecycle`]: cascading deletion, namespace termination, bootstrap objects.
//! - [`discovery`], [`auth`], [`tls`], [`objects`] (the JSON ↔ store codec).

pub mod auth;
pub mod discovery;
pub mod http;
pub mod lifecycle;
pub mod node_proxy;
pub mod objects;
pub mod request;
pub mod rest;
pub mod services;
pub mod subresources;
pub mod tls;
pub mod watch;

use crate::store::Store;
use anyhow::Context;
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// `hawser server`'s settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Where HTTPS is served; 6443 as in Kubernetes.
    pub listen: SocketAddr,
    /// `redb` or `etcd://HOST:PORT[,...]`.
    pub store: String,
    /// The address the `kubernetes` Service's Endpoints point at
    /// (`--advertise-address`); by default the listen address, or when that
    /// is unspecified, the host's first non-loopback IPv4 address.
    pub advertise_address: Option<std::net::IpAddr>,
    /// How long new pods tolerate a not-ready or unreachable node
    /// (`--default-unreachable-toleration-seconds`; Kubernetes: 300).
    pub default_toleration_seconds: i64,
}

/// Request bodies larger than this are refused with 413, as Kubernetes does (3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Everything a request handler needs.
pub struct Api {
    pub store: Arc<dyn Store>,
    pub ranges: services::Ranges,
    pub tokens: auth::Tokens,
    /// The port clients reach the API on; the `kubernetes` Service targets it.
    pub api_port: u16,
    /// Where the `kubernetes` Endpoints point; None when only loopback is
    /// known, which Endpoints may not hold.
    pub advertise_address: Option<std::net::IpAddr>,
    /// Added to new pods' tolerations (see [`Config::default_toleration_seconds`]).
    pub default_toleration_seconds: i64,
    /// Objects whose finalizers a background task is working on.
    pub finalizing: Mutex<HashSet<String>>,
    /// Deleted objects whose dependents the garbage collector must delete.
    pub deleted_owners: tokio::sync::mpsc::UnboundedSender<lifecycle::DeletedOwner>,
    pub metrics: http::Metrics,
}

/// A JSON answer with its status code and any `Warning` headers.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub body: Value,
    pub warnings: Vec<String>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self { code: 200, body, warnings: Vec::new() }
    }

    pub fn created(body: Value) -> Self {
        Self { code: 201, body, warnings: Vec::new() }
    }

    pub fn warn(mut self, warnings: Vec<String>) -> Self {
        self.warnings.extend(warnings);
        self
    }
}

/// A running API server.
pub struct Server {
    pub api: Arc<Api>,
    pub kubeconfig: PathBuf,
    pub local_addr: SocketAddr,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
}

impl Server {
    /// Opens the store, prepares PKI and tokens, creates the bootstrap
    /// objects, binds the listener and writes the kubeconfig.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let store = crate::store::open(&config.store, &config.data_dir)?;
        let ranges = services::Ranges::default();
        let pki = tls::Pki::new(&config.data_dir);
        // Agents on other hosts reach the server at its advertise address.
        let advertise = config.advertise_address.or_else(|| advertise_address(config.listen.ip()));
        let names: Vec<std::net::IpAddr> = [Some(config.listen.ip()), advertise].into_iter().flatten().collect();
        pki.ensure(ranges.api_service_ip().into(), &names)?;
        let tls = pki.server_config()?;
        let tokens = auth::Tokens::load_or_create(&config.data_dir)?;
        let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let (deleted_owners, deleted) = tokio::sync::mpsc::unbounded_channel();
        let api = Arc::new(Api {
            store,
            ranges,
            tokens,
            api_port: local_addr.port(),
            advertise_address: advertise,
            default_toleration_seconds: config.default_toleration_seconds,
            finalizing: Mutex::new(HashSet::new()),
            deleted_owners,
            metrics: http::Metrics::default(),
        });
        tokio::spawn(lifecycle::collect_garbage(Arc::downgrade(&api), deleted));
        lifecycle::bootstrap(&api).await.context("creating the bootstrap namespaces and services")?;
        let kubeconfig = write_kubeconfig(config, &pki, local_addr, api.tokens.admin_token())?;
        Ok(Self { api, kubeconfig, local_addr, listener, tls })
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish (watches are cut).
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        http::serve(self.api, self.listener, self.tls, shutdown).await
    }
}

/// The address to advertise for a server listening on `listen`.
fn advertise_address(listen: std::net::IpAddr) -> Option<std::net::IpAddr> {
    if listen.is_loopback() {
        return None;
    }
    if !listen.is_unspecified() {
        return Some(listen);
    }
    host_ipv4_addresses().into_iter().find(|ip| !ip.is_loopback() && !ip.is_link_local()).map(Into::into)
}

/// The IPv4 addresses of this host's interfaces that are up.
fn host_ipv4_addresses() -> Vec<std::net::Ipv4Addr> {
    let mut found = Vec::new();
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut addrs) != 0 {
            return found;
        }
        let mut cur = addrs;
        while !cur.is_null() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
            if up && !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(addrs);
    }
    found
}

/// Writes `<data-dir>/kubeconfig.yaml` with the CA, the server URL and the admin token.
fn write_kubeconfig(config: &Config, pki: &tls::Pki, addr: SocketAddr, token: &str) -> anyhow::Result<PathBuf> {
    use base64::Engine;
    let ca = std::fs::read(pki.ca_cert_path())?;
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "hawser", "cluster": {
            "server": format!("https://{host}:{}", addr.port()),
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca),
        }}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "hawser", "context": {"cluster": "hawser", "user": "admin", "namespace": "default"}}],
        "current-context": "hawser",
    });
    let path = config.data_dir.join("kubeconfig.yaml");
    let tmp = path.with_extension("yaml.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(serde_yaml::to_string(&doc)?.as_bytes())?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

//! Container probes: one task per probe of a container run, reporting each
//! result to the pod worker, which counts them against the thresholds
//! (as the kubelet's prober workers do).
//!
//! Handlers: `httpGet` (2xx and 3xx pass; HTTP only), `tcpSocket` (a
//! connection opens), `exec` (exit code 0, through the runtime).

use crate::runtime::Runtime;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// As events say it: `Liveness probe failed: ...`.
    pub fn label(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    pub fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Startup => container.startup_probe.as_ref(),
            ProbeKind::Liveness => container.liveness_probe.as_ref(),
            ProbeKind::Readiness => container.readiness_probe.as_ref(),
        }
    }
}

/// One probe result, for one run (`attempt`) of one container.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    pub container: String,
    pub attempt: u32,
    pub kind: ProbeKind,
    /// None when it passed; why it failed otherwise.
    pub failure: Option<String>,
}

/// The thresholds and timings of a probe with Kubernetes' defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Self {
        let secs = |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
        Self {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Where a probe of one container run goes.
#[derive(Clone)]
pub struct Target {
    pub runtime: Arc<dyn Runtime>,
    pub pod_uid: String,
    pub pod_ip: IpAddr,
    pub container: Container,
    pub attempt: u32,
}

/// Starts probing: after the initial delay, every period, until aborted.
pub fn spawn(kind: ProbeKind, target: Target, results: mpsc::UnboundedSender<ProbeResult>) -> Option<AbortHandle> {
    let probe = kind.of(&target.container)?.clone();
    let timing = Timing::of(&probe);
    let task = tokio::spawn(async move {
        tokio::time::sleep(timing.initial_delay).await;
        let mut ticks = tokio::time::interval(timing.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let failure = match tokio::time::timeout(timing.timeout, run(&probe, &target)).await {
                Ok(Ok(())) => None,
                Ok(Err(why)) => Some(why),
                Err(_) => Some(format!("probe timed out after {}s", timing.timeout.as_secs())),
            };
            let result = ProbeResult { container: target.container.name.clone(), attempt: target.attempt, kind, failure };
            if results.send(result).is_err() {
                return;
            }
        }
    });
    Some(task.abort_handle())
}

/// A port given by number or by the name of one of the container's ports.
fn port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => match name.parse() {
            Ok(n) => Ok(n),
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("port {name:?} is not a named port of container {}", container.name)),
        },
    }
}

/// One probe run: Ok when it passed, the failure message otherwise.
async fn run(probe: &Probe, target: &Target) -> Result<(), String> {
    if let Some(http) = &probe.http_get {
        let scheme = http.scheme.as_deref().unwrap_or("HTTP");
        if !scheme.eq_ignore_ascii_case("HTTP") {
            return Err(format!("scheme {scheme} is not supported by this agent's probes (HTTP only)"));
        }
        let host: IpAddr = match http.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h.parse().map_err(|_| format!("probe host {h:?} must be an IP address"))?,
            None => target.pod_ip,
        };
        let port = port(&target.container, &http.port)?;
        let path = http.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
        return http_get(host, port, &path, &headers).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host: IpAddr = match tcp.host.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h.parse().map_err(|_| format!("probe host {h:?} must be an IP address"))?,
            None => target.pod_ip,
        };
        let port = port(&target.container, &tcp.port)?;
        return tokio::net::TcpStream::connect((host, port)).await.map(drop).map_err(|e| format!("dial tcp {host}:{port}: {e}"));
    }
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        let mut session = target.runtime.exec(&target.pod_uid, &target.container.name, &argv, false).await.map_err(|e| e.to_string())?;
        let mut output = String::new();
        let mut errors = String::new();
        let _ = tokio::join!(session.stdout.read_to_string(&mut output), session.stderr.read_to_string(&mut errors));
        let code = session.exit.await.map_err(|e| e.to_string())?;
        return match code {
            0 => Ok(()),
            _ => Err(format!("command {argv:?} exited with {code}: {}{}", output.trim(), errors.trim())),
        };
    }
    Err("the probe has no handler this agent supports (httpGet, tcpSocket or exec)".into())
}

async fn http_get(host: IpAddr, port: u16, path: &str, headers: &[(String, String)]) -> Result<(), String> {
    let url = format!("http://{}/{}", std::net::SocketAddr::new(host, port), path.trim_start_matches('/'));
    let fail = |e: &dyn std::fmt::Display| format!("Get \"{url}\": {e}");
    let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| fail(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| fail(&e))?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path).header("Host", format!("{host}:{port}")).header("User-Agent", "kube-probe/1.33");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request.body(Empty::<bytes::Bytes>::new()).map_err(|e| fail(&e))?;
    let response = sender.send_request(request).await.map_err(|e| fail(&e))?;
    let status = response.status().as_u16();
    // Read (and drop) the body so the server sees a finished exchange.
    let _ = response.into_body().collect().await;
    if (200..400).contains(&status) { Ok(()) } else { Err(format!("HTTP probe failed with statuscode: {status}")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timings_take_kubernetes_defaults() {
        let probe: Probe = serde_json::from_value(json!({"httpGet": {"port": 80}})).unwrap();
        let t = Timing::of(&probe);
        assert_eq!(
            (t.period, t.timeout, t.success_threshold, t.failure_threshold),
            (Duration::from_secs(10), Duration::from_secs(1), 1, 3)
        );
        let probe: Probe = serde_json::from_value(json!({"tcpSocket": {"port": 80}, "periodSeconds": 2, "failureThreshold": 1})).unwrap();
        assert_eq!((Timing::of(&probe).period, Timing::of(&probe).failure_threshold), (Duration::from_secs(2), 1));
    }

    #[test]
    fn named_ports_resolve_through_the_container() {
        let c: Container = serde_json::from_value(json!({"name": "a", "ports": [{"name": "http", "containerPort": 8080}]})).unwrap();
        assert_eq!(port(&c, &IntOrString::String("http".into())), Ok(8080));
        assert_eq!(port(&c, &IntOrString::Int(9000)), Ok(9000));
        assert!(port(&c, &IntOrString::String("metrics".into())).unwrap_err().contains("not a named port"));
    }

    #[tokio::test]
    async fn http_get_passes_on_2xx_and_fails_with_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(http_get(localhost, port, "/healthz", &[]).await, Ok(()));
        assert_eq!(http_get(localhost, port, "/healthz", &[]).await, Err("HTTP probe failed with statuscode: 503".into()));
    }
}

//! The agent server over a real process runtime, spoken to as the API server
//! speaks to it: HTTPS without verifying the agent's certificate, a bearer
//! token, kubelet's paths, and for exec a real WebSocket client on the
//! `v5.channel.k8s.io` protocol.
//!
//! Needs root, as the process runtime does (tests fail with the reason
//! otherwise). Every test has its own state directory and cgroup root
//! (`common::Scratch`), cleaned up also when the test fails.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hawser_agent::runtime::process::ProcessRuntime;
use hawser_agent::runtime::{ContainerSpec, ContainerState, Runtime};
use hawser_agent::server::AgentServer;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TOKEN: &str = "cluster-token";
const UID: &str = "pod-srv";

mod common;
use common::{RESOLV_CONF, Scratch, container, sandbox_spec};

/// One test's scratch state and cgroup, runtime and running agent server.
/// (Fields drop in order: the server stops before the cgroup is emptied.)
struct Fixture {
    _shutdown: tokio::sync::oneshot::Sender<()>,
    runtime: Arc<ProcessRuntime>,
    addr: SocketAddr,
    _scratch: Scratch,
}

impl Fixture {
    async fn new() -> Self {
        let scratch = Scratch::new();
        let runtime = Arc::new(scratch.runtime());
        let lookup = |namespace: &str, name: &str| (namespace == "default" && name == "web-0").then(|| UID.to_string());
        let server =
            AgentServer::bind("127.0.0.1:0".parse().unwrap(), vec![TOKEN.into()], runtime.clone(), Arc::new(lookup), Default::default())
                .await
                .unwrap();
        let addr = server.local_addr().unwrap();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = stop.await;
        }));
        Self { _shutdown: shutdown, runtime, addr, _scratch: scratch }
    }

    /// Pod `default/web-0` with the given containers started (attempt 0).
    async fn pod(&self, containers: &[ContainerSpec]) {
        self.runtime.run_sandbox(&sandbox_spec(UID)).await.unwrap();
        for container in containers {
            self.runtime.start_container(UID, container).await.unwrap();
        }
    }

    async fn wait_exited(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(self.runtime.container_state(UID, name).await, Ok((_, ContainerState::Exited { .. }))) {
            assert!(Instant::now() < deadline, "container {name} still runs");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn tls(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(insecure_client_config());
        connector.connect("127.0.0.1".try_into().unwrap(), tcp).await.unwrap()
    }

    /// GET `path` with `token`: the status and the whole body (read as it
    /// streams, so a followed log ends when the agent ends it).
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(self.tls().await)).await.unwrap();
        tokio::spawn(conn);
        let mut request = hyper::Request::get(path).header("host", self.addr.to_string());
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let body = tokio::time::timeout(Duration::from_secs(30), response.into_body().collect()).await.expect("the body ended").unwrap();
        (status, String::from_utf8(body.to_bytes().to_vec()).unwrap())
    }

    /// One exec session: `stdin` is sent (then closed, v5) after the
    /// upgrade; returns stdout, stderr and the Status of the error channel.
    async fn exec(&self, container: &str, command: &[&str], stdin: Option<&str>) -> Result<(String, String, Value), (u16, Value)> {
        let mut query: Vec<String> =
            command.iter().map(|c| format!("command={}", form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>())).collect();
        query.push("stdout=true&stderr=true".into());
        if stdin.is_some() {
            query.push("stdin=true".into());
        }
        let url = format!("wss://{}/exec/default/web-0/{container}?{}", self.addr, query.join("&"));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        request.headers_mut().insert("sec-websocket-protocol", "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap());
        let (mut ws, response) = match tokio_tungstenite::client_async(request, self.tls().await).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                return Err((response.status().as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null)));
            }
            Err(e) => panic!("exec upgrade: {e}"),
        };
        assert_eq!(response.headers()["sec-websocket-protocol"], "v5.channel.k8s.io");
        if let Some(input) = stdin {
            ws.send(Message::Binary([&[0u8][..], input.as_bytes()].concat().into())).await.unwrap();
            ws.send(Message::Binary(vec![255u8, 0].into())).await.unwrap();
        }
        let (mut stdout, mut stderr, mut error) = (Vec::new(), Vec::new(), Vec::new());
        let session = async {
            while let Some(message) = ws.next().await {
                match message.unwrap() {
                    Message::Binary(data) => match data.first() {
                        Some(1) => stdout.extend_from_slice(&data[1..]),
                        Some(2) => stderr.extend_from_slice(&data[1..]),
                        Some(3) => error.extend_from_slice(&data[1..]),
                        other => panic!("a message on channel {other:?}"),
                    },
                    Message::Close(frame) => {
                        assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000), "a normal close");
                        break;
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), session).await.expect("the session ended");
        let status =
            serde_json::from_slice(&error).unwrap_or_else(|e| panic!("{:?} on the error channel: {e}", String::from_utf8_lossy(&error)));
        Ok((String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap(), status))
    }
}

/// What the API server does: TLS without verifying the agent's certificate.
fn insecure_client_config() -> Arc<rustls::ClientConfig> {
    hawser_runtime::tls::trust_any_server(&[])
}

#[tokio::test]
async fn exec_runs_in_the_containers_namespaces_cgroup_env_and_working_dir() {
    let fx = Fixture::new().await;
    let mut app = container("app", &["sh", "-c", "echo started; exec sleep 600"]);
    app.env = vec![("GREETING".into(), "hello from app".into()), ("PATH".into(), "/usr/bin:/bin".into())];
    app.working_dir = Some("/tmp".into());
    fx.pod(&[app]).await;

    let (stdout, stderr, status) = fx.exec("app", &["cat", "/etc/resolv.conf"], None).await.unwrap();
    assert_eq!((stdout.as_str(), stderr.as_str()), (RESOLV_CONF, ""), "the pod's resolv.conf: its mount namespace");
    assert_eq!(status, json!({"metadata": {}, "status": "Success"}));

    let script = "hostname; echo \"$GREETING\"; pwd; cat /proc/self/cgroup; readlink /proc/self/ns/net";
    let (stdout, _, _) = fx.exec("app", &["sh", "-c", script], None).await.unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(&lines[..3], ["web-0", "hello from app", "/tmp"], "{stdout}");
    let container_cgroup = fx.runtime.container_cgroup(UID, "app");
    let leaf = format!("/pod{UID}/app");
    assert!(lines.iter().any(|l| l.ends_with(&leaf)), "not in {container_cgroup:?}: {stdout}");
    let (_, ContainerState::Running { pid, .. }) = fx.runtime.container_state(UID, "app").await.unwrap() else { panic!("not running") };
    let container_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(lines.last().map(PathBuf::from), Some(container_net), "the container's network namespace");
}

#[tokio::test]
async fn exec_reports_exit_codes_and_stderr_and_takes_stdin() {
    let fx = Fixture::new().await;
    fx.pod(&[container("app", &["sleep", "600"])]).await;

    let (stdout, stderr, status) = fx.exec("app", &["sh", "-c", "echo out; echo err >&2; exit 3"], None).await.unwrap();
    assert_eq!((stdout.as_str(), stderr.as_str()), ("out\n", "err\n"));
    assert_eq!((status["status"].as_str(), status["reason"].as_str()), (Some("Failure"), Some("NonZeroExitCode")), "{status}");
    assert_eq!(status["details"]["causes"], json!([{"reason": "ExitCode", "message": "3"}]));

    // stdin through `cat`: it ends when the client closes stdin (v5).
    let input = "line one\nline two\n";
    let (stdout, _, status) = fx.exec("app", &["cat"], Some(input)).await.unwrap();
    assert_eq!(stdout, input);
    assert_eq!(status["status"], "Success");

    // A command that does not exist is an error on the error channel.
    let (_, _, status) = fx.exec("app", &["no-such-command"], None).await.unwrap();
    assert_eq!(status["reason"], "InternalError", "{status}");
    assert!(status["message"].as_str().unwrap().contains("executable file not found"), "{status}");
}

#[tokio::test]
async fn exec_refusals_come_before_the_upgrade_as_statuses() {
    let fx = Fixture::new().await;
    fx.pod(&[container("app", &["sleep", "600"]), container("done", &["true"])]).await;
    fx.wait_exited("done").await;

    let (code, status) = fx.exec("done", &["true"], None).await.unwrap_err();
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")), "{status}");
    assert!(status["message"].as_str().unwrap().contains("is not running"), "{status}");
    let (code, _) = fx.exec("missing", &["true"], None).await.unwrap_err();
    assert_eq!(code, 400);

    // A TTY, or no token: refused.
    let (code, body) = fx.get("/exec/default/web-0/app?command=sh&stdin=true&stdout=true&tty=true", Some(TOKEN)).await;
    assert_eq!(code, 400);
    assert!(body.contains("TTY"), "{body}");
    let (code, body) = fx.get("/exec/default/web-0/app?command=true&stdout=true", None).await;
    assert_eq!((code, serde_json::from_str::<Value>(&body).unwrap()["reason"].as_str()), (401, Some("Unauthorized")));
    let (code, _) = fx.get("/containerLogs/default/web-0/app", Some("wrong")).await;
    assert_eq!(code, 401);
    // Not a WebSocket (kubectl's SPDY fallback, or a plain GET): refused.
    let (code, body) = fx.get("/exec/default/web-0/app?command=true&stdout=true", Some(TOKEN)).await;
    assert_eq!(code, 400, "{body}");
    // A pod that is not here.
    let (code, _) = fx.get("/exec/default/other/app?command=true&stdout=true", Some(TOKEN)).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn logs_follow_until_the_container_ends_and_take_the_kubelets_options() {
    let fx = Fixture::new().await;
    let script = "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done; echo bye >&2";
    fx.pod(&[container("app", &["sh", "-c", script])]).await;

    // Follow from the start, while it runs: everything, then the end.
    let started = Instant::now();
    let (code, body) = fx.get("/containerLogs/default/web-0/app?follow=true", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(body, "line 1\nline 2\nline 3\nline 4\nline 5\nbye\n");
    assert!(started.elapsed() >= Duration::from_millis(900), "the follow ended before the container did");
    fx.wait_exited("app").await;

    let (_, body) = fx.get("/containerLogs/default/web-0/app?tailLines=2", Some(TOKEN)).await;
    assert_eq!(body, "line 5\nbye\n");
    let (_, body) = fx.get("/containerLogs/default/web-0/app?limitBytes=9", Some(TOKEN)).await;
    assert_eq!(body, "line 1\nli");
    let (_, body) = fx.get("/containerLogs/default/web-0/app?timestamps=true&tailLines=1", Some(TOKEN)).await;
    let (time, text) = body.split_once(' ').unwrap();
    assert_eq!(text, "bye\n");
    assert!(time.parse::<jiff::Timestamp>().is_ok() && time.len() == "2025-01-02T03:04:05.123456789Z".len(), "{time}");
    // Following an ended run answers what there is and ends.
    let (_, body) = fx.get("/containerLogs/default/web-0/app?follow=true&tailLines=1", Some(TOKEN)).await;
    assert_eq!(body, "bye\n");

    // The previous run: none yet, then attempt 0 once attempt 1 ran.
    let (code, body) = fx.get("/containerLogs/default/web-0/app?previous=true", Some(TOKEN)).await;
    assert_eq!(code, 400, "{body}");
    let mut again = container("app", &["sh", "-c", "echo second run"]);
    again.attempt = 1;
    fx.runtime.start_container(UID, &again).await.unwrap();
    fx.wait_exited("app").await;
    let (_, body) = fx.get("/containerLogs/default/web-0/app", Some(TOKEN)).await;
    assert_eq!(body, "second run\n");
    let (_, body) = fx.get("/containerLogs/default/web-0/app?previous=true&tailLines=1", Some(TOKEN)).await;
    assert_eq!(body, "bye\n");
    let (code, _) = fx.get("/containerLogs/default/web-0/app?sinceSeconds=5&sinceTime=2025-01-01T00:00:00Z", Some(TOKEN)).await;
    assert_eq!(code, 400);
}

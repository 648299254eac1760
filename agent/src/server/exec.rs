//! `/exec/{namespace}/{pod}/{container}`: `kubectl exec` over Kubernetes'
//! WebSocket channel protocol, the one kubectl tries first.
//!
//! Every message is binary, its first byte the channel: 0 stdin, 1 stdout,
//! 2 stderr, 3 error (one `metav1.Status` saying how the command ended),
//! 4 resize (terminal size; there is no TTY here, so it is ignored).
//! `v5.channel.k8s.io` adds a message from the client, `[255, channel]`,
//! closing that channel (stdin's EOF); `v4.channel.k8s.io` has no such
//! message, so a v4 client's stdin never ends. When the command has ended
//! and its output is sent, the Status goes on channel 3 and the connection
//! is closed normally; a client that leaves first ends the command.
//!
//! SPDY, which kubectl falls back to when the WebSocket upgrade fails, is
//! not served; everything that can be refused is refused before the
//! upgrade (and so again on kubectl's SPDY try), so kubectl shows why.
//! A TTY (`-t`) is refused too: the runtime's exec gives pipes, not a
//! terminal.

use super::{Failure, State, query_pairs};
use crate::runtime::{ContainerState, ExecSession, RuntimeError};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path as UrlPath, RawQuery, State as Shared};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` closes a channel.
pub const CLOSE: u8 = 255;

pub const V5: &str = "v5.channel.k8s.io";
pub const V4: &str = "v4.channel.k8s.io";

/// How long output may keep coming after the command has exited (a
/// background child still holding its stdout does not hold the session).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// `stdin`, `stdout`, `stderr`, `tty` and the `command` words, from the query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut opts = Self::default();
        let flag = |v: &str| matches!(v, "true" | "1" | "True" | "TRUE");
        for (key, value) in query_pairs(query) {
            match key.as_str() {
                "command" => opts.command.push(value),
                "stdin" | "input" => opts.stdin = flag(&value),
                "stdout" | "output" => opts.stdout = flag(&value),
                "stderr" | "error" => opts.stderr = flag(&value),
                "tty" => opts.tty = flag(&value),
                _ => {}
            }
        }
        if opts.command.is_empty() {
            return Err("you must specify at least one command for the container".into());
        }
        if !(opts.stdin || opts.stdout || opts.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        if opts.tty {
            return Err("a TTY is not supported by this node's agent: run kubectl exec without -t (stdin with -i works)".into());
        }
        Ok(opts)
    }
}

/// Which channel protocol the client and server agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    V4,
    V5,
}

/// What one message from the client means.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    Stdin(&'a [u8]),
    /// v5's close of a channel (only stdin's matters).
    Close(u8),
    Resize,
    /// Empty, or for a channel the client may not write.
    Ignored,
}

pub fn parse_inbound(protocol: Protocol, message: &[u8]) -> Inbound<'_> {
    match message {
        [CLOSE, channel] if protocol == Protocol::V5 => Inbound::Close(*channel),
        [STDIN, data @ ..] => Inbound::Stdin(data),
        [RESIZE, ..] => Inbound::Resize,
        _ => Inbound::Ignored,
    }
}

/// One message on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Bytes {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    message.into()
}

/// The Status sent on the error channel for an exit code, as the kubelet
/// words it: client-go turns `NonZeroExitCode` into the exit code kubectl
/// exits with.
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The Status for a command that could not be run or waited for.
pub fn internal_error_status(message: &str) -> Value {
    let message = format!("error executing command in container: {message}");
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

/// The handler: checks everything it can, then upgrades.
pub(super) async fn exec(
    Shared(state): Shared<Arc<State>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Failure> {
    let opts = ExecOptions::parse(query.as_deref().unwrap_or_default()).map_err(Failure::bad_request)?;
    let uid = state.pod_uid(&namespace, &pod)?;
    match state.runtime.container_state(&uid, &container).await {
        Ok((_, ContainerState::Running { .. })) => {}
        Ok((_, ContainerState::Exited { .. })) | Err(RuntimeError::NoContainer { .. }) => {
            return Err(Failure::bad_request(format!("container \"{container}\" in pod \"{pod}\" is not running")));
        }
        Err(RuntimeError::NoSandbox { .. }) => {
            return Err(Failure::not_found(format!("pod \"{pod}\" in namespace \"{namespace}\" has no sandbox on this node")));
        }
        Err(e) => return Err(Failure::internal(e.to_string())),
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let spdy =
                headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.to_ascii_lowercase().starts_with("spdy"));
            return Err(Failure::bad_request(if spdy {
                "this node's agent serves exec over WebSocket (v5.channel.k8s.io) only, not SPDY".to_string()
            } else {
                format!("Upgrade request required: exec is served over WebSocket ({V5} or {V4}): {rejection}")
            }));
        }
    };
    let upgrade = upgrade.protocols([V5, V4]);
    let protocol = match upgrade.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(V5) => Protocol::V5,
        Some(V4) => Protocol::V4,
        _ => return Err(Failure::bad_request(format!("unsupported WebSocket subprotocol: exec speaks {V5} or {V4}"))),
    };
    let what = format!("{namespace}/{pod}/{container}");
    Ok(upgrade.on_upgrade(move |socket| async move {
        let session = state.runtime.exec(&uid, &container, &opts.command, opts.stdin).await;
        if let Err(e) = serve(socket, protocol, &opts, session).await {
            tracing::debug!(container = what, error = %e, "exec session ended early");
        }
    }))
}

/// Runs one session over an upgraded connection.
async fn serve(
    socket: WebSocket,
    protocol: Protocol,
    opts: &ExecOptions,
    session: Result<ExecSession, RuntimeError>,
) -> Result<(), axum::Error> {
    let (mut sink, mut inbound) = socket.split();
    let ExecSession { stdin, stdout, stderr, exit } = match session {
        Ok(session) => session,
        Err(e) => {
            sink.send(status_message(&internal_error_status(&e.to_string()))).await?;
            return close(&mut sink).await;
        }
    };
    // Output of both streams goes through one queue to the one writer, so
    // nothing of it can come after the Status.
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(16);
    // As the kubelet does: an empty message on the first writable channel
    // tells the client the session is set up.
    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    sink.send(Message::Binary(frame(first, &[]))).await?;
    let mut pumps = tokio::task::JoinSet::new();
    pumps.spawn(pump(stdout, opts.stdout.then_some(STDOUT), out_tx.clone()));
    pumps.spawn(pump(stderr, opts.stderr.then_some(STDERR), out_tx));
    // Writes to stdin wait for the command to read; the socket must not.
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Bytes>(16);
    let mut stdin_tx = Some(stdin_tx);
    if let Some(mut stdin) = stdin {
        tokio::spawn(async move {
            while let Some(data) = stdin_rx.recv().await {
                if stdin.write_all(&data).await.is_err() {
                    break; // The command closed its stdin or ended.
                }
            }
            let _ = stdin.shutdown().await;
        });
    } else {
        stdin_tx = None;
    }

    let mut exit = exit;
    let mut output_open = true;
    let code = loop {
        tokio::select! {
            code = &mut exit => break code,
            out = out_rx.recv(), if output_open => match out {
                Some(message) => sink.send(Message::Binary(message)).await?,
                None => output_open = false,
            },
            message = inbound.next() => match message {
                Some(Ok(Message::Binary(data))) => match parse_inbound(protocol, &data) {
                    Inbound::Stdin(data) if !data.is_empty() => {
                        if let Some(tx) = &stdin_tx {
                            // A command that no longer reads stdin just loses it.
                            let _ = tx.send(Bytes::copy_from_slice(data)).await;
                        }
                    }
                    Inbound::Close(STDIN) => stdin_tx = None,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => return Ok(()), // The client left: dropping `exit` ends the command.
                Some(Err(e)) => return Err(e),
                Some(Ok(_)) => {} // Text is not part of the protocol; pings are answered by the socket.
            },
        }
    };
    drop(stdin_tx);
    // What the command wrote before it ended is still in the pipes.
    let drained = tokio::time::timeout(OUTPUT_DRAIN, async {
        while let Some(message) = out_rx.recv().await {
            sink.send(Message::Binary(message)).await?;
        }
        Ok::<_, axum::Error>(())
    })
    .await;
    if let Ok(result) = drained {
        result?;
    }
    pumps.abort_all();
    let status = match code {
        Ok(code) => exit_status(code),
        Err(e) => internal_error_status(&e.to_string()),
    };
    sink.send(status_message(&status)).await?;
    close(&mut sink).await
}

fn status_message(status: &Value) -> Message {
    Message::Binary(frame(ERROR, &serde_json::to_vec(status).expect("JSON")))
}

async fn close(sink: &mut futures::stream::SplitSink<WebSocket, Message>) -> Result<(), axum::Error> {
    sink.send(Message::Close(Some(CloseFrame { code: axum::extract::ws::close_code::NORMAL, reason: "".into() }))).await?;
    sink.flush().await
}

/// Copies one output pipe to the writer as messages on `channel`, or
/// drains it when the client did not ask for it (the command must not
/// block on a full pipe).
async fn pump(mut pipe: std::pin::Pin<Box<dyn AsyncRead + Send>>, channel: Option<u8>, tx: mpsc::Sender<Bytes>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(channel) = channel
                    && tx.send(frame(channel, &buf[..n])).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_a_channel_byte_and_data() {
        assert_eq!(&frame(STDOUT, b"hi\n")[..], b"\x01hi\n");
        assert_eq!(&frame(ERROR, b"")[..], b"\x03");
        assert_eq!(parse_inbound(Protocol::V5, b"\x00abc"), Inbound::Stdin(b"abc"));
        assert_eq!(parse_inbound(Protocol::V4, b"\x00"), Inbound::Stdin(b""));
        assert_eq!(parse_inbound(Protocol::V5, &[CLOSE, STDIN]), Inbound::Close(STDIN));
        // v4 has no close message; 255 is no channel of its own.
        assert_eq!(parse_inbound(Protocol::V4, &[CLOSE, STDIN]), Inbound::Ignored);
        assert_eq!(parse_inbound(Protocol::V5, b"\x04{\"Width\":80,\"Height\":24}"), Inbound::Resize);
        assert_eq!(parse_inbound(Protocol::V5, b"\x01out"), Inbound::Ignored);
        assert_eq!(parse_inbound(Protocol::V5, b""), Inbound::Ignored);
    }

    #[test]
    fn exit_codes_become_the_status_client_go_decodes() {
        assert_eq!(exit_status(0), json!({"metadata": {}, "status": "Success"}));
        let failed = exit_status(3);
        assert_eq!((failed["status"].as_str(), failed["reason"].as_str()), (Some("Failure"), Some("NonZeroExitCode")));
        assert_eq!(failed["details"]["causes"], json!([{"reason": "ExitCode", "message": "3"}]));
        let internal = internal_error_status("no such file");
        assert_eq!((internal["reason"].as_str(), internal["code"].as_i64()), (Some("InternalError"), Some(500)));
    }

    #[test]
    fn options_need_a_command_and_a_stream_and_refuse_a_tty() {
        let opts = ExecOptions::parse("command=sh&command=-c&command=echo+hi%3B+exit+3&stdout=true&stderr=1").unwrap();
        assert_eq!(opts.command, ["sh", "-c", "echo hi; exit 3"]);
        assert!(opts.stdout && opts.stderr && !opts.stdin && !opts.tty);
        assert!(ExecOptions::parse("stdout=true").unwrap_err().contains("at least one command"));
        assert!(ExecOptions::parse("command=ls").unwrap_err().contains("at least 1 of stdin"));
        assert!(ExecOptions::parse("command=sh&stdin=true&stdout=true&tty=true").unwrap_err().contains("TTY"));
    }
}

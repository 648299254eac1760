//! What the agent and a pod's supervisor say to each other, and the files
//! through which they share state.
//!
//! The agent talks to the supervisor over `control.sock` with one JSON
//! [`Request`] line answered by one JSON [`Response`] line per connection:
//! trivially debuggable (`socat - UNIX:control.sock`) and with no framing
//! to get wrong. Container state is *not* asked for over the socket: the
//! supervisor writes each container's [`ContainerRecord`] atomically to
//! `containers/<name>.json` whenever it changes, so the agent reads the
//! truth from disk, the same way before and after an agent restart.
//!
//! The runtime's own types (`Limits`, `Mount`, `ContainerState`) stay free
//! of serde; this module mirrors them for the wire and converts.

use super::cgroup::Cgroup;
use crate::runtime::{ContainerSpec, ContainerState, ExitReason};
use jiff::Timestamp;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Upper bound on one request or response line, so a confused peer cannot
/// make the other side buffer without end.
pub const MAX_LINE: u64 = 1024 * 1024;

/// Everything the supervisor needs to set a sandbox up, written by the
/// agent to `<pod dir>/sandbox.json` before the supervisor starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxConfig {
    pub pod_uid: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    /// The pod's cgroup (created by the agent, limits included); containers
    /// get children of it, the supervisor sits in its [`SUPERVISOR_CGROUP`] child.
    ///
    /// [`SUPERVISOR_CGROUP`]: super::SUPERVISOR_CGROUP
    pub cgroup: Cgroup,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is the supervisor up? Answered with [`Response::Status`].
    Status,
    Start(StartRequest),
    /// SIGTERM to the container's process group, SIGKILL to its cgroup after
    /// `grace_ms`; answered once the container has exited.
    Stop {
        name: String,
        grace_ms: u64,
    },
    /// Stops every container as `Stop` does, answers, then exits.
    Shutdown {
        grace_ms: u64,
    },
}

/// Run `spec.attempt` of container `spec.name`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartRequest {
    #[serde(flatten)]
    pub spec: ContainerSpec,
    /// Where stdout and stderr go (the agent decides the layout).
    pub log_path: PathBuf,
}

impl std::ops::Deref for StartRequest {
    type Target = ContainerSpec;

    fn deref(&self) -> &ContainerSpec {
        &self.spec
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Status { pid: u32 },
    Error { message: String },
}

/// The latest run of one container, as `containers/<name>.json` holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub attempt: u32,
    /// Recorded as given; processes run from the host filesystem.
    pub image: String,
    /// The main process; None when it could not be started.
    pub pid: Option<u32>,
    /// RFC 3339.
    pub started_at: String,
    /// None while it runs.
    pub exit: Option<ExitRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit status, or 128 + the signal that ended it (as shells and
    /// Kubernetes report it).
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error` or `OOMKilled` ([`ExitReason::as_str`]).
    pub reason: String,
    /// RFC 3339.
    pub finished_at: String,
}

impl ContainerRecord {
    pub fn is_running(&self) -> bool {
        self.exit.is_none()
    }

    /// The runtime's view of this record.
    pub fn state(&self) -> Result<ContainerState, String> {
        let started_at = parse_time(&self.started_at)?;
        match (&self.exit, self.pid) {
            (None, Some(pid)) => Ok(ContainerState::Running { pid, started_at }),
            (None, None) => Err(format!("container {} attempt {} is running without a pid", self.name, self.attempt)),
            (Some(exit), _) => Ok(ContainerState::Exited {
                exit_code: exit.exit_code,
                signal: exit.signal,
                reason: parse_reason(&exit.reason)?,
                started_at,
                finished_at: parse_time(&exit.finished_at)?,
            }),
        }
    }
}

pub fn parse_reason(reason: &str) -> Result<ExitReason, String> {
    [ExitReason::Completed, ExitReason::Error, ExitReason::OOMKilled]
        .into_iter()
        .find(|r| r.as_str() == reason)
        .ok_or_else(|| format!("unknown exit reason {reason:?}"))
}

pub fn format_time(t: Timestamp) -> String {
    t.to_string()
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    s.parse::<Timestamp>().map(SystemTime::from).map_err(|e| format!("bad timestamp {s:?}: {e}"))
}

/// Writes `value` as JSON to `path` through a temporary file and a rename,
/// so a reader sees the old or the new content, never a part.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&mut file, value)?;
    file.write_all(b"\n")?;
    drop(file);
    std::fs::rename(&tmp, path)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<T> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_object_tagged_by_op() {
        let line = serde_json::to_string(&Request::Stop { name: "app".into(), grace_ms: 1500 }).unwrap();
        assert_eq!(line, r#"{"op":"stop","name":"app","grace_ms":1500}"#);
        assert_eq!(serde_json::from_str::<Request>(r#"{"op":"status"}"#).unwrap(), Request::Status);
        let err = serde_json::to_string(&Response::Error { message: "no".into() }).unwrap();
        assert_eq!(err, r#"{"result":"error","message":"no"}"#);
    }

    #[test]
    fn records_become_states() {
        let mut record = ContainerRecord {
            name: "app".into(),
            attempt: 2,
            image: "busybox".into(),
            pid: Some(42),
            started_at: "2025-01-02T03:04:05.123456789Z".into(),
            exit: None,
        };
        let started_at = SystemTime::from("2025-01-02T03:04:05.123456789Z".parse::<Timestamp>().unwrap());
        assert_eq!(record.state().unwrap(), ContainerState::Running { pid: 42, started_at });
        record.exit =
            Some(ExitRecord { exit_code: 137, signal: Some(9), reason: "OOMKilled".into(), finished_at: "2025-01-02T03:04:06Z".into() });
        let ContainerState::Exited { exit_code, signal, reason, finished_at, .. } = record.state().unwrap() else { panic!("not exited") };
        assert_eq!((exit_code, signal, reason), (137, Some(9), ExitReason::OOMKilled));
        assert_eq!(finished_at, SystemTime::from("2025-01-02T03:04:06Z".parse::<Timestamp>().unwrap()));
        record.exit.as_mut().unwrap().reason = "Evicted".into();
        assert!(record.state().is_err());
    }
}

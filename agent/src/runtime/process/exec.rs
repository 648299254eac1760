//! `kubectl exec` for the process runtime: a command started by the agent
//! and moved into a running container before it execs.
//!
//! There is no image config to read the environment and working directory
//! from, and the container's spec is not kept after it starts, so both come
//! from the container's main process itself: its initial environment
//! (`/proc/<pid>/environ`, what it was started with) and its current working
//! directory. The namespaces (net, UTS, IPC, mount: the container's own
//! mount namespace when it has volumes) and the cgroup are joined between
//! fork and exec, with descriptors opened beforehand, so the child only
//! makes raw syscalls (see `supervisor::enter_container` for the same rule).

use super::supervisor::resolve;
use super::{ProcessRuntime, blocking, check_name, io_error};
use crate::runtime::{ContainerState, ExecSession, Runtime, RuntimeError};
use futures::FutureExt;
use rustix::fs::{Mode, OFlags};
use rustix::thread::LinkNameSpaceType;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The namespaces a command joins, in the order joined: the mount namespace
/// last, as nothing after it may need a host path.
const NAMESPACES: [(&str, LinkNameSpaceType); 4] = [
    ("net", LinkNameSpaceType::Network),
    ("uts", LinkNameSpaceType::HostNameAndNISDomainName),
    ("ipc", LinkNameSpaceType::InterProcessCommunication),
    ("mnt", LinkNameSpaceType::Mount),
];

/// Everything the forked child needs, opened before fork.
struct Entry {
    program: PathBuf,
    env: Vec<(String, String)>,
    namespaces: Vec<(OwnedFd, LinkNameSpaceType)>,
    cwd: OwnedFd,
    procs: Vec<File>,
}

pub(super) async fn exec(
    rt: &ProcessRuntime,
    pod_uid: &str,
    name: &str,
    argv: &[String],
    stdin: bool,
) -> Result<ExecSession, RuntimeError> {
    check_name("pod UID", pod_uid)?;
    check_name("container name", name)?;
    if argv.is_empty() {
        return Err(RuntimeError::Other("exec needs a command".into()));
    }
    let pid = running_pid(rt, pod_uid, name).await?;
    let (cgroup, program) = (rt.container_cgroup(pod_uid, name), argv[0].clone());
    let entry = blocking(move || prepare(pid, &cgroup, &program)).await?;
    // The descriptors now pin what they were opened from; if the container
    // ended meanwhile, its pid may name another process already.
    if running_pid(rt, pod_uid, name).await? != pid {
        return Err(RuntimeError::Other(format!("container {name} of pod {pod_uid} restarted while exec was starting")));
    }

    let Entry { program, env, namespaces, cwd, procs } = entry;
    let mut command = tokio::process::Command::new(&program);
    command
        .arg0(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Whoever drops the session (a client that went away) ends the command.
        .kill_on_drop(true);
    // SAFETY: runs in the forked child before exec; `enter` makes only raw
    // syscalls on descriptors opened above, no allocation and no locks.
    unsafe {
        command.pre_exec(move || enter(&procs, &namespaces, &cwd));
    }
    let mut child = command.spawn().map_err(io_error(|| format!("starting {} in container {name} of pod {pod_uid}", program.display())))?;
    let stdin = child.stdin.take().map(|s| Box::pin(s) as std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RuntimeError::Other("exec: the command's output pipes are missing".into()));
    };
    let what = format!("waiting for {} in container {name} of pod {pod_uid}", argv[0]);
    let exit = async move {
        let status = child.wait().await.map_err(|source| RuntimeError::Io { what, source })?;
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 255,
        })
    };
    Ok(ExecSession { stdin, stdout: Box::pin(stdout), stderr: Box::pin(stderr), exit: exit.boxed() })
}

/// The pid of the container's main process, or why there is none.
async fn running_pid(rt: &ProcessRuntime, pod_uid: &str, name: &str) -> Result<u32, RuntimeError> {
    match rt.container_state(pod_uid, name).await? {
        (_, ContainerState::Running { pid, .. }) => Ok(pid),
        (attempt, ContainerState::Exited { .. }) => {
            Err(RuntimeError::Other(format!("container {name} of pod {pod_uid} is not running (attempt {attempt} has exited)")))
        }
    }
}

fn prepare(pid: u32, cgroup: &super::Cgroup, program: &str) -> Result<Entry, RuntimeError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let open = |path: &Path, flags: OFlags| {
        rustix::fs::open(path, flags | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| RuntimeError::Io { what: format!("opening {}", path.display()), source: e.into() })
    };
    let namespaces = NAMESPACES
        .iter()
        .map(|(ns, kind)| Ok((open(&proc.join("ns").join(ns), OFlags::empty())?, *kind)))
        .collect::<Result<Vec<_>, RuntimeError>>()?;
    let cwd = open(&proc.join("cwd"), OFlags::DIRECTORY)?;
    let environ = proc.join("environ");
    let env = parse_environ(&fs::read(&environ).map_err(io_error(|| format!("reading {}", environ.display())))?);
    let procs = cgroup
        .procs_files()
        .iter()
        .map(|path| OpenOptions::new().write(true).open(path).map_err(io_error(|| format!("opening {}", path.display()))))
        .collect::<Result<Vec<_>, _>>()?;
    let program = resolve(program, &env).map_err(RuntimeError::Other)?;
    Ok(Entry { program, env, namespaces, cwd, procs })
}

/// What runs in the forked child before exec: a session of its own (out of
/// the agent's process group, as a container is), the container's cgroup,
/// a neutral `oom_score_adj`, its namespaces, its working directory.
fn enter(procs: &[File], namespaces: &[(OwnedFd, LinkNameSpaceType)], cwd: &OwnedFd) -> io::Result<()> {
    rustix::process::setsid()?;
    for file in procs {
        // "0" moves the writing process.
        rustix::io::write(file, b"0")?;
    }
    if let Ok(adj) = rustix::fs::open(c"/proc/self/oom_score_adj", OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()) {
        let _ = rustix::io::write(&adj, b"0");
    }
    for (fd, kind) in namespaces {
        rustix::thread::move_into_link_name_space(fd.as_fd(), Some(*kind))?;
    }
    rustix::process::fchdir(cwd)?;
    Ok(())
}

/// `/proc/<pid>/environ`: NUL-separated `KEY=value` entries.
fn parse_environ(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|&b| b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (key, value) = entry.split_once('=')?;
            (!key.is_empty()).then(|| (key.to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environ_entries_split_at_the_first_equals_sign() {
        let env = parse_environ(b"PATH=/bin:/usr/bin\0A=b=c\0EMPTY=\0junk\0\0");
        let expect = [("PATH", "/bin:/usr/bin"), ("A", "b=c"), ("EMPTY", "")];
        assert_eq!(env, expect.map(|(k, v)| (k.to_string(), v.to_string())));
    }
}

//! The per-pod supervisor: the process that holds a pod's namespaces and
//! starts, watches and stops its containers, so the agent can die and come
//! back without the pod noticing (containerd's shim, with the pause
//! container's job folded in).
//!
//! It runs as `hawser pod-supervisor --dir <pod dir>` (or the
//! `hawser-pod-supervisor` binary), started by the agent in a session of its
//! own, and reads everything else from `<pod dir>/sandbox.json`. In order:
//! 1. While the process is still single-threaded (unsharing a mount
//!    namespace fails in a multi-threaded one, and nothing here may start an
//!    async runtime first): new network, UTS, IPC and mount namespaces; the
//!    pod's hostname; every mount made a downstream (`rslave`) of the host's,
//!    so later host mounts (volumes) still show up inside while nothing
//!    mounted inside leaks out; the pod's `etc/{resolv.conf,hosts,hostname}`
//!    bind-mounted over the host's.
//! 2. Into its own leaf of the pod cgroup (the agent made the cgroups), with
//!    a low `oom_score_adj` so a pod over its memory limit loses a container,
//!    not its supervisor.
//! 3. Listening on `control.sock` (see [`super::protocol`]) with a thread per
//!    connection; per container a thread that waits for it and two that copy
//!    its stdout and stderr into its log ([`super::logs`]).
//!
//! Containers are forked with `std::process::Command`; what happens between
//! fork and exec ([`enter_container`]) is raw syscalls on data prepared
//! beforehand, as a forked child of a multi-threaded process requires.

use super::cgroup::{Cgroup, Role};
use super::logs::{self, LogFile, Stream};
use super::protocol::{self, ContainerRecord, ExitRecord, Request, Response, SandboxConfig, StartRequest};
use super::{CONTAINERS_DIR, ETC_DIR, PID_FILE, SANDBOX_FILE, SOCKET, SUPERVISOR_CGROUP, check_name};
use crate::runtime::ExitReason;
use crate::runtime::Mount;
use anyhow::{Context, bail};
use jiff::Timestamp;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::process::{Pid, Signal};
use rustix::thread::UnshareFlags;
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsString};
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The subcommand of `hawser` that runs a supervisor.
pub const SUBCOMMAND: &str = "pod-supervisor";
/// The search path for a command when the container's env has no `PATH`
/// (containerd's default for images that set none).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long a SIGKILLed cgroup may take to empty.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long the log readers of an exited container may take to drain its pipes.
const LOG_DRAIN_WAIT: Duration = Duration::from_secs(2);
/// The supervisor's `oom_score_adj` (containers get 0): the OOM killer
/// should pick a container, never the process that watches them.
const SUPERVISOR_OOM_SCORE_ADJ: &str = "-998";
/// How long a client may take to send its request line.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The exit code of a container that could not be started (Kubernetes'
/// `StartError` uses 128 as well).
const START_FAILED: i32 = 128;

/// The supervisor's command line: only the pod directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorArgs {
    pub dir: PathBuf,
}

impl SupervisorArgs {
    /// The arguments to run a supervisor with (after the program name).
    pub fn command_line(&self) -> Vec<OsString> {
        vec![SUBCOMMAND.into(), "--dir".into(), self.dir.clone().into()]
    }

    /// Parses [`Self::command_line`]'s output (the leading subcommand is optional).
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Self> {
        let mut args = args.into_iter().peekable();
        if args.peek().is_some_and(|a| a == SUBCOMMAND) {
            args.next();
        }
        let mut dir = None;
        while let Some(arg) = args.next() {
            match arg.to_str() {
                Some("--dir") => dir = Some(PathBuf::from(args.next().context("--dir needs a value")?)),
                _ => bail!("unexpected argument {arg:?} (usage: {SUBCOMMAND} --dir <pod dir>)"),
            }
        }
        Ok(Self { dir: dir.context("--dir <pod dir> is required")? })
    }
}

/// Runs a pod's supervisor until the agent asks it to shut down. Must be
/// called while the process is single-threaded (see the module doc).
pub fn run_supervisor(args: SupervisorArgs) -> anyhow::Result<()> {
    let dir = args.dir;
    let config: SandboxConfig =
        protocol::read_json(&dir.join(SANDBOX_FILE)).with_context(|| format!("reading {}", dir.join(SANDBOX_FILE).display()))?;
    let pod = format!("pod {} ({}/{})", config.pod_uid, config.namespace, config.name);
    enter_sandbox(&dir, &config).with_context(|| format!("setting up the sandbox of {pod}"))?;
    config
        .cgroup
        .child(SUPERVISOR_CGROUP)
        .add_process(std::process::id())
        .with_context(|| format!("moving the supervisor of {pod} into its cgroup"))?;
    if let Err(e) = fs::write("/proc/self/oom_score_adj", SUPERVISOR_OOM_SCORE_ADJ) {
        log(format_args!("setting the supervisor's oom_score_adj: {e}"));
    }
    std::env::set_current_dir("/").context("changing to /")?;

    let socket = dir.join(SOCKET);
    match fs::remove_file(&socket) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e).with_context(|| format!("removing {}", socket.display())),
        _ => {}
    }
    let listener = UnixListener::bind(&socket).with_context(|| format!("listening on {}", socket.display()))?;
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)).with_context(|| format!("restricting {}", socket.display()))?;
    let pid_file = dir.join(PID_FILE);
    let tmp = dir.join(format!("{PID_FILE}.tmp"));
    fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|()| fs::rename(&tmp, &pid_file))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    log(format_args!("supervising {pod} as pid {}", std::process::id()));

    let supervisor = Arc::new(Supervisor { dir, pod, config, containers: Mutex::default(), exited: Condvar::new() });
    let (shutdown, shut_down) = mpsc::channel();
    let server = Arc::clone(&supervisor);
    thread::Builder::new().name("accept".into()).spawn(move || server.accept(listener, shutdown)).context("starting the accept thread")?;
    // The sender lives in the accept thread and its connection threads.
    shut_down.recv().context("the accept thread ended")?;
    log(format_args!("{} shut down", supervisor.pod));
    let _ = fs::remove_file(&socket);
    Ok(())
}

/// Step 1 of the module doc.
fn enter_sandbox(dir: &Path, config: &SandboxConfig) -> anyhow::Result<()> {
    let flags = UnshareFlags::NEWNET | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC | UnshareFlags::NEWNS;
    // SAFETY: `unshare_unsafe` is unsafe only because of CLONE_FILES (a
    // thread could then see descriptors of a table it no longer shares),
    // which is not passed. The process is single-threaded here, as
    // CLONE_NEWNS requires.
    unsafe { rustix::thread::unshare_unsafe(flags) }.context("unsharing the network, UTS, IPC and mount namespaces")?;
    rustix::system::sethostname(config.hostname.as_bytes()).with_context(|| format!("setting the hostname {:?}", config.hostname))?;
    rustix::mount::mount_change(c"/", MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC)
        .context("making every mount a downstream of the host's (mount --make-rslave /)")?;
    for file in ["resolv.conf", "hosts", "hostname"] {
        let (source, target) = (dir.join(ETC_DIR).join(file), Path::new("/etc").join(file));
        if file == "hostname" && !target.exists() {
            continue; // Not every host has one; resolv.conf and hosts are required.
        }
        rustix::mount::mount_bind(&source, &target)
            .with_context(|| format!("bind-mounting {} over {}", source.display(), target.display()))?;
    }
    Ok(())
}

struct Supervisor {
    dir: PathBuf,
    /// "pod <uid> (<namespace>/<name>)", for messages.
    pod: String,
    config: SandboxConfig,
    /// The latest run of every container started, by name.
    containers: Mutex<HashMap<String, ContainerRecord>>,
    /// Notified whenever a container's exit is recorded.
    exited: Condvar,
}

/// A container that was started, with what its watcher needs.
struct Spawned {
    child: Child,
    log_threads: Vec<JoinHandle<()>>,
    oom_kills_before: u64,
}

/// A bind mount prepared before fork, so the child only makes syscalls.
struct BindMount {
    source: CString,
    target: CString,
    read_only: bool,
}

impl Supervisor {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, ContainerRecord>> {
        self.containers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn accept(self: Arc<Self>, listener: UnixListener, shutdown: mpsc::Sender<()>) {
        for conn in listener.incoming() {
            let stream = match conn {
                Ok(stream) => stream,
                Err(e) => {
                    log(format_args!("accepting a connection: {e}"));
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let (supervisor, shutdown) = (Arc::clone(&self), shutdown.clone());
            if let Err(e) = thread::Builder::new().name("request".into()).spawn(move || supervisor.serve(stream, &shutdown)) {
                log(format_args!("starting a thread for a request: {e}"));
            }
        }
    }

    /// Answers the one request of a connection.
    fn serve(self: Arc<Self>, stream: UnixStream, shutdown: &mpsc::Sender<()>) {
        let mut line = String::new();
        // A client that connects and says nothing must not hold a thread for good.
        let _ = stream.set_read_timeout(Some(REQUEST_READ_TIMEOUT));
        if let Err(e) = BufReader::new((&stream).take(protocol::MAX_LINE)).read_line(&mut line) {
            log(format_args!("reading a request: {e}"));
            return;
        }
        let request: Request = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(e) => return reply(&stream, &Response::Error { message: format!("bad request {:?}: {e}", line.trim_end()) }),
        };
        let result = match &request {
            Request::Status => Ok(Response::Status { pid: std::process::id() }),
            Request::Start(start) => self.start(start).map(|()| Response::Ok),
            Request::Stop { name, grace_ms } => self.stop(Some(name), Duration::from_millis(*grace_ms)).map(|()| Response::Ok),
            Request::Shutdown { grace_ms } => self.stop(None, Duration::from_millis(*grace_ms)).map(|()| Response::Ok),
        };
        reply(&stream, &result.unwrap_or_else(|message| Response::Error { message }));
        if matches!(request, Request::Shutdown { .. }) {
            let _ = shutdown.send(());
        }
    }

    /// Starts run `req.attempt` of a container; a retry of the latest
    /// attempt starts nothing (a success if that attempt did start).
    fn start(self: &Arc<Self>, req: &StartRequest) -> Result<(), String> {
        check_name("container name", &req.name).map_err(|e| e.to_string())?;
        let what = format!("container {} (attempt {}) of {}", req.name, req.attempt, self.pod);
        if req.argv.is_empty() {
            return Err(format!("{what}: no command"));
        }
        let mut containers = self.lock();
        if let Some(latest) = containers.get(&req.name) {
            if latest.attempt == req.attempt && latest.pid.is_none() {
                return Err(format!("{what}: it failed to start; the next attempt may"));
            }
            if latest.attempt == req.attempt {
                return Ok(());
            }
            if latest.is_running() {
                return Err(format!("{what}: attempt {} is still running", latest.attempt));
            }
            if latest.attempt > req.attempt {
                return Err(format!("{what}: attempt {} has already run", latest.attempt));
            }
        }
        let cgroup = self.config.cgroup.child(&req.name);
        let mut record = ContainerRecord {
            name: req.name.clone(),
            attempt: req.attempt,
            image: req.image.clone(),
            pid: None,
            started_at: protocol::format_time(Timestamp::now()),
            exit: None,
        };
        let exited = |exit_code, signal| {
            Some(ExitRecord {
                exit_code,
                signal,
                reason: ExitReason::Error.as_str().to_string(),
                finished_at: protocol::format_time(Timestamp::now()),
            })
        };
        let result = match self.spawn(req, &cgroup) {
            Ok(spawned) => {
                let pid = spawned.child.id();
                record.pid = Some(pid);
                // The watcher records the exit under the lock held here, so
                // it cannot get ahead of the record inserted below.
                let (supervisor, name, attempt, watched) = (Arc::clone(self), req.name.clone(), req.attempt, cgroup.clone());
                match thread::Builder::new().name(format!("wait-{name}")).spawn(move || supervisor.watch(&name, attempt, spawned, &watched))
                {
                    Ok(_) => {
                        log(format_args!("started {what} as pid {pid}"));
                        Ok(())
                    }
                    Err(e) => {
                        // Unwatched, it could never be reported: end it.
                        let _ = cgroup.kill();
                        record.exit = exited(128 + Signal::KILL.as_raw(), Some(Signal::KILL.as_raw()));
                        Err(format!("{what}: starting its watcher thread: {e}"))
                    }
                }
            }
            Err(e) => {
                if let Err(e) = cgroup.remove() {
                    log(format_args!("{what}: {e}"));
                }
                record.exit = exited(START_FAILED, None);
                Err(format!("{what}: {e}"))
            }
        };
        if let Err(message) = &result {
            log(message);
        }
        let saved = self.save(&record).map_err(|e| format!("{what}: recording its state: {e}"));
        containers.insert(req.name.clone(), record);
        result.and(saved)
    }

    /// Prepares everything outside the child, forks and execs.
    fn spawn(&self, req: &StartRequest, cgroup: &Cgroup) -> Result<Spawned, String> {
        cgroup.create(&req.limits, Role::Container).map_err(|e| format!("creating its cgroup: {e}"))?;
        let oom_kills_before = cgroup.oom_kills().map_err(|e| e.to_string())?;
        let procs = cgroup
            .procs_files()
            .iter()
            .map(|path| OpenOptions::new().write(true).open(path).map_err(|e| format!("opening {}: {e}", path.display())))
            .collect::<Result<Vec<File>, String>>()?;
        let program = resolve(&req.argv[0], &req.env)?;
        let mounts = req.mounts.iter().map(prepare_mount).collect::<Result<Vec<_>, _>>()?;
        let cwd = req.working_dir.clone().unwrap_or_else(|| PathBuf::from("/"));
        // Checked here for a clear message (a failed chdir in the child reads
        // as a failed exec); one inside a volume exists only once mounted.
        if !cwd.is_dir() && !req.mounts.iter().any(|m| cwd.starts_with(&m.container_path)) {
            return Err(format!("working directory {} does not exist on the host", cwd.display()));
        }
        let cwd =
            CString::new(cwd.as_os_str().as_bytes()).map_err(|_| format!("working directory {} contains a NUL byte", cwd.display()))?;
        let log = LogFile::open(&req.log_path, logs::MAX_FILE).map_err(|e| format!("opening its log {}: {e}", req.log_path.display()))?;

        let mut command = Command::new(&program);
        command
            .arg0(&req.argv[0])
            .args(&req.argv[1..])
            .env_clear()
            .envs(req.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe work is allowed; `enter_container` makes raw
        // syscalls on data prepared above and neither allocates nor locks.
        unsafe {
            command.pre_exec(move || enter_container(&procs, &mounts, &cwd));
        }
        let mut child = command.spawn().map_err(|e| format!("starting {}: {e}", program.display()))?;

        let log = Arc::new(Mutex::new(log));
        let mut log_threads = Vec::new();
        let pipes: [(Option<Box<dyn Read + Send>>, Stream); 2] = [
            (child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>), Stream::Stdout),
            (child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>), Stream::Stderr),
        ];
        for (pipe, stream) in pipes {
            let (Some(pipe), log) = (pipe, Arc::clone(&log)) else { continue };
            match thread::Builder::new().name(format!("log-{}", req.name)).spawn(move || logs::forward(pipe, stream, &log)) {
                Ok(handle) => log_threads.push(handle),
                Err(e) => {
                    // Nobody would drain the pipe: the container would block on it.
                    let _ = cgroup.kill();
                    let _ = child.wait();
                    return Err(format!("starting a log thread: {e}"));
                }
            }
        }
        Ok(Spawned { child, log_threads, oom_kills_before })
    }

    /// Waits for a container's main process, then ends what it left behind,
    /// lets the logs drain, removes its cgroup and records how it ended.
    fn watch(&self, name: &str, attempt: u32, spawned: Spawned, cgroup: &Cgroup) {
        let Spawned { mut child, log_threads, oom_kills_before } = spawned;
        let status = child.wait();
        let finished_at = Timestamp::now();
        let what = format!("container {name} (attempt {attempt}) of {}", self.pod);
        let oom_killed = match cgroup.oom_kills() {
            Ok(kills) => kills > oom_kills_before,
            Err(e) => {
                log(format_args!("{what}: {e}"));
                false
            }
        };
        // As the end of a container's PID namespace would.
        if let Err(e) = kill_and_wait(cgroup) {
            log(format_args!("{what}: ending its remaining processes: {e}"));
        }
        let deadline = Instant::now() + LOG_DRAIN_WAIT;
        while log_threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = cgroup.remove() {
            log(format_args!("{what}: {e}"));
        }
        let (exit_code, signal) = match status {
            Ok(status) => exit_code(status),
            Err(e) => {
                log(format_args!("{what}: waiting for it: {e}"));
                (255, None)
            }
        };
        let reason = match (oom_killed, exit_code) {
            (true, _) => ExitReason::OOMKilled,
            (false, 0) => ExitReason::Completed,
            (false, _) => ExitReason::Error,
        };
        log(format_args!("{what} exited: code {exit_code}, signal {signal:?}, {}", reason.as_str()));
        let mut containers = self.lock();
        if let Some(record) = containers.get_mut(name).filter(|r| r.attempt == attempt) {
            record.exit = Some(ExitRecord {
                exit_code,
                signal,
                reason: reason.as_str().to_string(),
                finished_at: protocol::format_time(finished_at),
            });
            if let Err(e) = self.save(record) {
                log(format_args!("{what}: recording its exit: {e}"));
            }
        }
        self.exited.notify_all();
    }

    /// SIGTERM to the process group of one container (or of all), SIGKILL
    /// to the cgroup of each still running after `grace`; returns once all
    /// have exited. A container that never ran or has exited is fine.
    fn stop(&self, only: Option<&str>, grace: Duration) -> Result<(), String> {
        let mut containers = self.lock();
        let targets: Vec<(String, u32)> = containers
            .values()
            .filter(|r| r.is_running() && only.is_none_or(|name| r.name == name))
            .map(|r| (r.name.clone(), r.attempt))
            .collect();
        for record in containers.values().filter(|r| targets.iter().any(|(name, _)| *name == r.name)) {
            let Some(pid) = record.pid.and_then(|pid| Pid::from_raw(pid as i32)) else { continue };
            match rustix::process::kill_process_group(pid, Signal::TERM) {
                Ok(()) | Err(Errno::SRCH) => {}
                Err(e) => log(format_args!("sending SIGTERM to container {} of {}: {e}", record.name, self.pod)),
            }
        }
        let running = |containers: &HashMap<String, ContainerRecord>| -> Vec<String> {
            targets
                .iter()
                .filter(|(name, attempt)| containers.get(name).is_some_and(|r| r.attempt == *attempt && r.is_running()))
                .map(|(name, _)| name.clone())
                .collect()
        };
        containers = self.wait_until(containers, Instant::now() + grace, |c| running(c).is_empty());
        let late = running(&containers);
        if late.is_empty() {
            return Ok(());
        }
        for name in &late {
            log(format_args!("container {name} of {} still runs after {grace:?}: SIGKILL", self.pod));
            self.config.cgroup.child(name).kill().map_err(|e| format!("killing container {name} of {}: {e}", self.pod))?;
        }
        containers = self.wait_until(containers, Instant::now() + KILL_WAIT, |c| running(c).is_empty());
        match running(&containers).as_slice() {
            [] => Ok(()),
            survivors => Err(format!("containers {survivors:?} of {} still run {KILL_WAIT:?} after SIGKILL", self.pod)),
        }
    }

    fn wait_until<'a>(
        &self,
        mut containers: MutexGuard<'a, HashMap<String, ContainerRecord>>,
        deadline: Instant,
        done: impl Fn(&HashMap<String, ContainerRecord>) -> bool,
    ) -> MutexGuard<'a, HashMap<String, ContainerRecord>> {
        while !done(&containers) {
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { break };
            containers = self.exited.wait_timeout(containers, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        containers
    }

    fn save(&self, record: &ContainerRecord) -> io::Result<()> {
        let dir = self.dir.join(CONTAINERS_DIR);
        fs::create_dir_all(&dir)?;
        protocol::write_json_atomic(&dir.join(format!("{}.json", record.name)), record)
    }
}

/// What runs in the forked child before exec: a session (and so a process
/// group) of its own, the container's cgroup, a neutral `oom_score_adj`,
/// its bind mounts in a mount namespace of its own (only when it has any),
/// its working directory. Only raw syscalls: see [`Supervisor::spawn`].
fn enter_container(procs: &[File], mounts: &[BindMount], cwd: &CStr) -> io::Result<()> {
    rustix::process::setsid()?;
    for file in procs {
        // "0" moves the writing process.
        rustix::io::write(file, b"0")?;
    }
    // Best effort: a kernel that refuses it should not keep the container from running.
    if let Ok(adj) = rustix::fs::open(c"/proc/self/oom_score_adj", OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()) {
        let _ = rustix::io::write(&adj, b"0");
    }
    if !mounts.is_empty() {
        // SAFETY: no CLONE_FILES (see `enter_sandbox`); the forked child is single-threaded.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }?;
        for mount in mounts {
            rustix::mount::mount_bind_recursive(mount.source.as_c_str(), mount.target.as_c_str())?;
            if mount.read_only {
                rustix::mount::mount_remount(mount.target.as_c_str(), MountFlags::BIND | MountFlags::RDONLY, c"")?;
            }
        }
    }
    rustix::process::chdir(cwd)?;
    Ok(())
}

/// Checks a volume mount and makes its mount point: processes run from the
/// host filesystem, so a container path that does not exist is created
/// there (an empty directory, or an empty file for a file volume).
fn prepare_mount(mount: &Mount) -> Result<BindMount, String> {
    let (source, target) = (&mount.host_path, &mount.container_path);
    if !source.is_absolute() || !target.is_absolute() {
        return Err(format!("mount {} -> {}: both paths must be absolute", source.display(), target.display()));
    }
    let meta = fs::metadata(source).map_err(|e| format!("mount source {}: {e}", source.display()))?;
    if fs::symlink_metadata(target).is_err() {
        let made = if meta.is_dir() {
            fs::create_dir_all(target)
        } else {
            target.parent().map_or(Ok(()), fs::create_dir_all).and_then(|()| File::create(target).map(drop))
        };
        made.map_err(|e| format!("creating mount point {}: {e}", target.display()))?;
    }
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("mount path {} contains a NUL byte", p.display()));
    Ok(BindMount { source: c(source)?, target: c(target)?, read_only: mount.read_only })
}

/// Finds a command without a `/` along the container's `PATH` (or
/// [`DEFAULT_PATH`]), as a shell would; the env itself is left as given.
/// (Also what `exec` in a container runs.)
pub(super) fn resolve(program: &str, env: &[(String, String)]) -> Result<PathBuf, String> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env.iter().rev().find(|(k, _)| k == "PATH").map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| format!("exec: {program:?}: executable file not found in $PATH ({path})"))
}

/// (exit code, signal): a signal is reported as 128 + its number, as shells do.
fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        (None, None) => (255, None),
    }
}

/// SIGKILLs whatever is left in `cgroup` and waits until it is empty.
fn kill_and_wait(cgroup: &Cgroup) -> io::Result<()> {
    if !cgroup.populated()? {
        return Ok(());
    }
    cgroup.kill()?;
    let deadline = Instant::now() + KILL_WAIT;
    while cgroup.populated()? {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!("processes survived SIGKILL for {KILL_WAIT:?}")));
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn reply(mut stream: &UnixStream, response: &Response) {
    let mut line = serde_json::to_vec(response).unwrap_or_else(|e| format!(r#"{{"result":"error","message":"{e}"}}"#).into_bytes());
    line.push(b'\n');
    if let Err(e) = stream.write_all(&line) {
        log(format_args!("answering a request: {e}"));
    }
}

/// The supervisor's log is its stderr (`<pod dir>/supervisor.log`).
fn log(message: impl Display) {
    eprintln!("{} {message}", Timestamp::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let args = SupervisorArgs { dir: "/var/lib/hawser/pods/u-1".into() };
        assert_eq!(SupervisorArgs::parse(args.command_line()).unwrap(), args);
        assert_eq!(SupervisorArgs::parse(["--dir".into(), "/x".into()]).unwrap().dir, PathBuf::from("/x"));
        assert!(SupervisorArgs::parse(Vec::<OsString>::new()).is_err());
        assert!(SupervisorArgs::parse(["--dir".into(), "/x".into(), "--other".into()]).is_err());
    }

    #[test]
    fn commands_are_found_along_the_containers_path() {
        assert_eq!(resolve("sh", &[]).unwrap().file_name().unwrap(), "sh");
        assert_eq!(resolve("./run", &[]).unwrap(), PathBuf::from("./run"));
        let err = resolve("sh", &[("PATH".into(), "/nonexistent".into())]).unwrap_err();
        assert!(err.contains("executable file not found in $PATH (/nonexistent)"), "{err}");
    }

    #[test]
    fn signals_become_128_plus_their_number() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), (3, None));
        assert_eq!(exit_code(ExitStatus::from_raw(9)), (137, Some(9)));
    }
}

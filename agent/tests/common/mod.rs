//! What the process runtime's integration tests share: a per-test state dir
//! and cgroup root that clean up after themselves, and small specs.
//!
//! These tests need root and cgroups, which the project's machines have; a
//! machine without them fails the tests with the reason (they never pass
//! without having run).

#![allow(dead_code)] // each test file uses its own subset

use hawser_agent::runtime::process::{Cgroup, Placement, ProcessRuntime};
use hawser_agent::runtime::{ContainerSpec, Limits, SandboxSpec};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const MIB: u64 = 1024 * 1024;
pub const RESOLV_CONF: &str = "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n";
pub const HOSTS: &str = "127.0.0.1\tlocalhost\n10.244.0.7\tweb-0\n";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The supervisor: the crate's `hawser-pod-supervisor` binary, built fresh
/// for the tests, or `HAWSER_TEST_SUPERVISOR` (e.g. `target/debug/hawser`).
pub fn supervisor_exe() -> PathBuf {
    std::env::var_os("HAWSER_TEST_SUPERVISOR").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hawser-pod-supervisor")), PathBuf::from)
}

/// One test's state dir and cgroup root (`hawser-test-<pid>-<n>`; in v1
/// hierarchies below the test's own cgroup, so the pods stay inside the
/// limits the test runs under). Dropping it ends every process left in the
/// cgroup and removes it, also when the test fails.
pub struct Scratch {
    pub state: TempDir,
    pub cgroup: Cgroup,
}

impl Scratch {
    pub fn new() -> Self {
        assert!(rustix::process::geteuid().is_root(), "the process runtime's tests need root (namespaces, mounts, cgroups)");
        let name = format!("hawser-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let cgroup = Cgroup::detect(&name, Placement::BelowOwn).unwrap_or_else(|e| panic!("no usable cgroups for the tests: {e}"));
        let state = tempfile::Builder::new().prefix("hawser-rt-").tempdir().expect("creating a state dir");
        Self { state, cgroup }
    }

    /// A runtime over this state; a second one is a restarted agent.
    pub fn runtime(&self) -> ProcessRuntime {
        ProcessRuntime::new(self.state.path().to_path_buf(), self.cgroup.clone(), supervisor_exe())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.cgroup.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cgroup.populated().unwrap_or(false) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = self.cgroup.remove() {
            eprintln!("cleaning up cgroup {:?}: {e}", self.cgroup);
        }
    }
}

/// Pod `default/web-0` with the usual resolv.conf and hosts.
pub fn sandbox_spec(uid: &str) -> SandboxSpec {
    SandboxSpec {
        pod_uid: uid.to_string(),
        namespace: "default".into(),
        name: "web-0".into(),
        hostname: "web-0".into(),
        resolv_conf: RESOLV_CONF.into(),
        hosts: HOSTS.into(),
        limits: Limits::default(),
    }
}

/// Run 0 of container `name` running `argv`.
pub fn container(name: &str, argv: &[&str]) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        attempt: 0,
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        working_dir: None,
        image: "busybox:1.36".into(),
        limits: Limits::default(),
        mounts: Vec::new(),
    }
}

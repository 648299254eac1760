//! The cgroups of pods and containers: limits, membership, killing and OOM
//! counts.
//!
//! cgroup v2 is the target: one tree, `cpu.max` and `memory.max` per pod
//! and per container, `memory.events` for OOM kills, `cgroup.kill` to end
//! every process of a pod or container at once. Some hosts still run
//! systemd's *hybrid* layout, where a cgroup2 tree is mounted (at
//! `/sys/fs/cgroup/unified`) but the cpu and memory controllers are bound to
//! cgroup v1 hierarchies, and a controller can only live in one place. There
//! a [`Cgroup`] is one directory in the cgroup2 tree (membership,
//! `cgroup.kill`, `cgroup.events`) plus one in each of the v1 cpu and memory
//! trees (`cpu.cfs_quota_us`, `memory.limit_in_bytes`, and
//! `memory.oom_control`'s `oom_kill` count), as runc does. Hosts with no
//! cgroup2 tree at all are not supported: without `cgroup.kill` a pod's
//! processes cannot be ended reliably.
//!
//! The layout of a pod (v2 no-internal-processes rule: only leaves hold
//! processes, so the supervisor gets a leaf beside its containers):
//! `<root>/pod<uid>/{_supervisor,<container>...}`.

use crate::runtime::Limits;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

/// `cpu.max`'s period; quotas are millicores scaled to it.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel's smallest quota (and Kubernetes' `MinQuotaPeriod`).
const MIN_CPU_QUOTA_US: u64 = 1_000;
const CONTROLLERS: [&str; 2] = ["cpu", "memory"];

/// One cgroup, as directories in every hierarchy that has a part of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// The cgroup2 directory: processes join it, `cgroup.kill` ends them,
    /// `cgroup.events` says whether any is left. Limits too when `v1` is None.
    pub unified: PathBuf,
    /// Hybrid hosts: where the cpu and memory limits live instead.
    pub v1: Option<V1Dirs>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Dirs {
    pub cpu: PathBuf,
    pub memory: PathBuf,
}

/// Where [`Cgroup::detect`] puts the runtime's root cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// At the top of every hierarchy, as the kubelet's `/kubepods`: what a
    /// node agent wants.
    Top,
    /// In v1 hierarchies, below the calling process's own cgroup, so the
    /// pods stay inside whatever limits the caller runs under (tests). The
    /// cgroup2 part stays at the top: a v2 cgroup holding processes (the
    /// caller's) cannot delegate controllers to children.
    BelowOwn,
}

/// What a cgroup is for, which decides what besides limits it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Delegates cpu and memory to its children (v2).
    Pod,
    /// One container: the whole group is OOM-killed together
    /// (`memory.oom.group`, as the kubelet does on v2) and never swaps.
    Container,
    /// The supervisor's leaf.
    Supervisor,
}

/// `cpu.max`'s content for `limits`.
pub fn cpu_max(limits: &Limits) -> String {
    match limits.cpu_millis {
        Some(millis) => format!("{} {CPU_PERIOD_US}", cpu_quota_us(millis)),
        None => format!("max {CPU_PERIOD_US}"),
    }
}

/// Millicores as a quota per [`CPU_PERIOD_US`] (at least the kernel's minimum).
pub fn cpu_quota_us(millis: u64) -> u64 {
    (millis.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_CPU_QUOTA_US)
}

impl Cgroup {
    /// The cgroup `name` for this host's layout: pure v2 when the cgroup2
    /// tree has the cpu and memory controllers, else hybrid.
    pub fn detect(name: &str, placement: Placement) -> io::Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let own = fs::read_to_string("/proc/self/cgroup")?;
        let mounts = Mounts::parse(&mountinfo);
        let unified = mounts.unified.ok_or_else(|| io::Error::new(ErrorKind::NotFound, "no cgroup2 hierarchy is mounted"))?;
        let controllers = fs::read_to_string(unified.join("cgroup.controllers"))?;
        if CONTROLLERS.iter().all(|c| controllers.split_whitespace().any(|have| have == *c)) {
            return Ok(Self { unified: unified.join(name), v1: None });
        }
        let (Some(cpu), Some(memory)) = (mounts.cpu, mounts.memory) else {
            return Err(io::Error::new(
                ErrorKind::NotFound,
                format!(
                    "the cpu and memory controllers are neither in the cgroup2 hierarchy at {} nor in cgroup v1 ones",
                    unified.display()
                ),
            ));
        };
        let own = own_cgroups(&own);
        let base = |mount: PathBuf, controller: &str| match (placement, own.get(controller)) {
            (Placement::BelowOwn, Some(path)) => mount.join(path.trim_start_matches('/')),
            _ => mount,
        };
        Ok(Self {
            unified: unified.join(name),
            v1: Some(V1Dirs { cpu: base(cpu, "cpu").join(name), memory: base(memory, "memory").join(name) }),
        })
    }

    pub fn child(&self, name: &str) -> Self {
        Self {
            unified: self.unified.join(name),
            v1: self.v1.as_ref().map(|v1| V1Dirs { cpu: v1.cpu.join(name), memory: v1.memory.join(name) }),
        }
    }

    /// Creates this cgroup as the runtime's root: every missing directory,
    /// and (v2) the cpu and memory controllers enabled from the top of the
    /// hierarchy down to it, so its children can carry limits. Idempotent.
    pub fn create_root(&self) -> io::Result<()> {
        let top =
            self.unified.ancestors().filter(|dir| dir.join("cgroup.controllers").is_file()).last().ok_or_else(|| {
                io::Error::new(ErrorKind::NotFound, format!("{} is not inside a cgroup2 hierarchy", self.unified.display()))
            })?;
        let mut chain: Vec<&Path> = self.unified.ancestors().take_while(|dir| *dir != top).collect();
        chain.push(top);
        for dir in chain.into_iter().rev() {
            make_dir(dir)?;
            if self.v1.is_none() {
                delegate(dir)?;
            }
        }
        if let Some(v1) = &self.v1 {
            for dir in [&v1.cpu, &v1.memory] {
                fs::create_dir_all(dir).map_err(|e| context(e, format!("creating {}", dir.display())))?;
            }
        }
        Ok(())
    }

    /// Creates this cgroup (its parent exists) with `limits`; idempotent, so
    /// the limits are rewritten when it already exists.
    pub fn create(&self, limits: &Limits, role: Role) -> io::Result<()> {
        make_dir(&self.unified)?;
        let memory_max = limits.memory_bytes.map_or("max".to_string(), |b| b.to_string());
        match &self.v1 {
            None => {
                write(&self.unified.join("cpu.max"), &cpu_max(limits))?;
                write(&self.unified.join("memory.max"), &memory_max)?;
                match role {
                    Role::Pod => delegate(&self.unified)?,
                    Role::Container => {
                        write(&self.unified.join("memory.oom.group"), "1")?;
                        if limits.memory_bytes.is_some() {
                            // Absent when the kernel does no swap accounting.
                            ignore_missing(write(&self.unified.join("memory.swap.max"), "0"))?;
                        }
                    }
                    Role::Supervisor => {}
                }
            }
            Some(v1) => {
                make_dir(&v1.cpu)?;
                make_dir(&v1.memory)?;
                let quota = limits.cpu_millis.map_or("-1".to_string(), |m| cpu_quota_us(m).to_string());
                write(&v1.cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&v1.cpu.join("cpu.cfs_quota_us"), &quota)?;
                write(&v1.memory.join("memory.limit_in_bytes"), limits.memory_bytes.map_or("-1", |_| &memory_max))?;
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process joins this cgroup through.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.unified.join("cgroup.procs")];
        if let Some(v1) = &self.v1 {
            files.extend([v1.cpu.join("cgroup.procs"), v1.memory.join("cgroup.procs")]);
        }
        files
    }

    /// Moves process `pid` into this cgroup, in every hierarchy.
    pub fn add_process(&self, pid: u32) -> io::Result<()> {
        self.procs_files().iter().try_for_each(|file| write(file, &pid.to_string()))
    }

    /// How many processes of this cgroup (and its children) an OOM killer
    /// has killed since it was created.
    pub fn oom_kills(&self) -> io::Result<u64> {
        let file = match &self.v1 {
            None => self.unified.join("memory.events"),
            Some(v1) => v1.memory.join("memory.oom_control"),
        };
        let text = fs::read_to_string(&file).map_err(|e| context(e, format!("reading {}", file.display())))?;
        Ok(text.lines().find_map(|line| line.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0))
    }

    /// SIGKILLs every process in this cgroup and its children (`cgroup.kill`);
    /// a cgroup that no longer exists has none.
    pub fn kill(&self) -> io::Result<()> {
        ignore_missing(write(&self.unified.join("cgroup.kill"), "1"))
    }

    /// Does any process remain in this cgroup or its children?
    pub fn populated(&self) -> io::Result<bool> {
        match fs::read_to_string(self.unified.join("cgroup.events")) {
            Ok(events) => Ok(events.lines().any(|line| line.trim() == "populated 1")),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(context(e, format!("reading {}/cgroup.events", self.unified.display()))),
        }
    }

    pub fn exists(&self) -> bool {
        self.unified.exists() || self.v1.as_ref().is_some_and(|v1| v1.cpu.exists() || v1.memory.exists())
    }

    /// Removes this cgroup and its children in every hierarchy (they must
    /// hold no process any more); a missing one is fine.
    pub fn remove(&self) -> io::Result<()> {
        remove_tree(&self.unified)?;
        if let Some(v1) = &self.v1 {
            remove_tree(&v1.cpu)?;
            remove_tree(&v1.memory)?;
        }
        Ok(())
    }
}

fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(context(e, format!("listing {}", dir.display()))),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    ignore_missing(fs::remove_dir(dir)).map_err(|e| context(e, format!("removing cgroup {}", dir.display())))
}

/// Enables the cpu and memory controllers for `dir`'s children.
fn delegate(dir: &Path) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&file).map_err(|e| context(e, format!("reading {}", file.display())))?;
    if CONTROLLERS.iter().all(|c| enabled.split_whitespace().any(|have| have == *c)) {
        return Ok(());
    }
    write(&file, "+cpu +memory")
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(context(e, format!("creating cgroup {}", dir.display()))),
        _ => Ok(()),
    }
}

fn write(file: &Path, value: &str) -> io::Result<()> {
    fs::write(file, value).map_err(|e| context(e, format!("writing {value:?} to {}", file.display())))
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` in systemd's hybrid layout): its top is the
/// root cgroup the eBPF proxy's socket programs hang on.
pub fn cgroup2_mount() -> io::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    Mounts::parse(&mountinfo).unified.ok_or_else(|| io::Error::new(ErrorKind::NotFound, "no cgroup2 hierarchy is mounted"))
}

/// Where the cgroup hierarchies this runtime uses are mounted.
#[derive(Debug, Default, PartialEq)]
struct Mounts {
    unified: Option<PathBuf>,
    cpu: Option<PathBuf>,
    memory: Option<PathBuf>,
}

impl Mounts {
    /// From `/proc/self/mountinfo`: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS
    /// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`, v1 controllers in SUPEROPTS.
    fn parse(mountinfo: &str) -> Self {
        let mut mounts = Self::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let Some(point) = left.split(' ').nth(4) else { continue };
            let mut right = right.split(' ');
            let (fstype, options) = (right.next(), right.nth(1).unwrap_or(""));
            match fstype {
                Some("cgroup2") => mounts.unified = mounts.unified.take().or(Some(PathBuf::from(point))),
                Some("cgroup") => {
                    for option in options.split(',') {
                        let slot = match option {
                            "cpu" => &mut mounts.cpu,
                            "memory" => &mut mounts.memory,
                            _ => continue,
                        };
                        slot.get_or_insert_with(|| PathBuf::from(point));
                    }
                }
                _ => {}
            }
        }
        mounts
    }
}

/// The calling process's cgroup per v1 controller, from `/proc/self/cgroup`
/// (`ID:CONTROLLERS:PATH`).
fn own_cgroups(proc_cgroup: &str) -> HashMap<String, String> {
    let mut own = HashMap::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        for controller in controllers.split(',').filter(|c| !c.is_empty()) {
            own.insert(controller.to_string(), path.to_string());
        }
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 29 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 29 0:29 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
38 29 0:34 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hierarchies_are_found_in_mountinfo() {
        let mounts = Mounts::parse(HYBRID);
        assert_eq!(mounts.unified, Some("/sys/fs/cgroup/unified".into()));
        assert_eq!(mounts.cpu, Some("/sys/fs/cgroup/cpu".into()));
        assert_eq!(mounts.memory, Some("/sys/fs/cgroup/memory".into()));
        let v2 = Mounts::parse("40 1 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        assert_eq!(v2, Mounts { unified: Some("/sys/fs/cgroup".into()), ..Mounts::default() });
    }

    #[test]
    fn own_cgroups_per_controller() {
        let own = own_cgroups("4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n");
        assert_eq!(own.get("memory").map(String::as_str), Some("/process_api/abc"));
        assert_eq!(own.get("cpuacct").map(String::as_str), Some("/"));
        assert!(!own.contains_key(""));
    }

    #[test]
    fn cpu_max_is_millicores_per_100ms() {
        assert_eq!(cpu_max(&Limits { cpu_millis: Some(500), memory_bytes: None }), "50000 100000");
        assert_eq!(cpu_max(&Limits { cpu_millis: Some(2000), memory_bytes: None }), "200000 100000");
        assert_eq!(cpu_max(&Limits { cpu_millis: Some(1), memory_bytes: None }), "1000 100000");
        assert_eq!(cpu_max(&Limits::default()), "max 100000");
    }

    #[test]
    fn children_follow_every_hierarchy() {
        let root = Cgroup { unified: "/u/root".into(), v1: Some(V1Dirs { cpu: "/c/own/root".into(), memory: "/m/own/root".into() }) };
        let pod = root.child("podx");
        assert_eq!(pod.unified, PathBuf::from("/u/root/podx"));
        assert_eq!(pod.v1.as_ref().unwrap().memory, PathBuf::from("/m/own/root/podx"));
        assert_eq!(pod.procs_files().len(), 3);
    }
}

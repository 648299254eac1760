//! `iptables-save` and `iptables-restore`, the way kube-proxy drives
//! iptables: every change is one `iptables-restore --noflush` input, so it
//! applies whole or not at all and leaves everyone else's rules alone.
//! Used by the pod network (masquerade and forwarding chains) and by the
//! service proxy's iptables backend.
//!
//! Two backends program the same kernel hooks: `nft` (`iptables-nft-*`,
//! Debian's default) and `legacy` (`iptables-legacy-*`, the x_tables
//! interface). They differ in cost at scale: legacy rewrites a whole table
//! per restore, nft changes only what the input names but creates chains
//! slowly when there are tens of thousands (docs/benchmarks.md has the
//! figures). [`Backend::System`] uses whatever `iptables-restore` the
//! machine's alternatives point at, as an administrator's `iptables -L`
//! would show.
//!
//! Both tools act on the network namespace of the thread that starts them.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Which `iptables` programs to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-save` / `iptables-restore`, whichever the system chose.
    #[default]
    System,
    /// `iptables-nft-save` / `iptables-nft-restore`.
    Nft,
    /// `iptables-legacy-save` / `iptables-legacy-restore`.
    Legacy,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(Backend::System),
            "nft" => Ok(Backend::Nft),
            "legacy" => Ok(Backend::Legacy),
            other => Err(format!("unknown iptables backend {other:?}: expected system, nft or legacy")),
        }
    }
}

impl Backend {
    fn program(self, tool: &str) -> String {
        match self {
            Backend::System => format!("iptables-{tool}"),
            Backend::Nft => format!("iptables-nft-{tool}"),
            Backend::Legacy => format!("iptables-legacy-{tool}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{context}: {detail}")]
pub struct IptablesError {
    pub context: String,
    pub detail: String,
}

/// How long a restore waits for the xtables lock another program holds.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// `iptables-save` of one table (or of every table when `table` is None).
pub async fn save(backend: Backend, table: Option<&str>) -> Result<String, IptablesError> {
    let program = backend.program("save");
    let context = || format!("running {program}{}", table.map(|t| format!(" -t {t}")).unwrap_or_default());
    let mut command = Command::new(&program);
    if let Some(table) = table {
        command.args(["-t", table]);
    }
    let output = command.stdin(Stdio::null()).output().await.map_err(|e| IptablesError { context: context(), detail: e.to_string() })?;
    if !output.status.success() {
        return Err(IptablesError { context: context(), detail: failure(&output) });
    }
    String::from_utf8(output.stdout).map_err(|e| IptablesError { context: context(), detail: format!("output is not UTF-8: {e}") })
}

/// One `iptables-restore --noflush` of `input`; `context` says what the
/// input was for. On failure the error holds the tool's message and the
/// lines it names, not the whole (possibly huge) input.
pub async fn restore(backend: Backend, input: &str, context: &str) -> Result<(), IptablesError> {
    let program = backend.program("restore");
    let error = |detail: String| IptablesError { context: format!("{context} ({program})"), detail };
    let mut child = Command::new(&program)
        .args(["--noflush", "--wait", &LOCK_WAIT.as_secs().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| error(format!("starting it: {e}")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A restore that fails early closes its stdin; its exit says why.
    let written = stdin.write_all(input.as_bytes()).await;
    drop(stdin);
    let output = child.wait_with_output().await.map_err(|e| error(format!("waiting for it: {e}")))?;
    if !output.status.success() {
        return Err(error(format!("{}{}", failure(&output), failing_lines(input, &String::from_utf8_lossy(&output.stderr)))));
    }
    written.map_err(|e| error(format!("writing its input: {e}")))
}

/// Whether `backend`'s programs are iptables-nft (`--version` says
/// `nf_tables`); false when that cannot be told.
pub async fn is_nft(backend: Backend) -> bool {
    match Command::new(backend.program("restore")).arg("--version").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).contains("nf_tables"),
        Err(_) => false,
    }
}

fn failure(output: &std::process::Output) -> String {
    format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())
}

/// The input lines `iptables-restore` names in its error (`line N failed`,
/// `Error occurred at line: N`), to show with the error.
fn failing_lines(input: &str, stderr: &str) -> String {
    let numbers: BTreeSet<usize> = stderr
        .split(|c: char| !c.is_ascii_digit())
        .zip(stderr.split(|c: char| !c.is_ascii_digit()).skip(1))
        .filter_map(|(_, n)| n.parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let lines: Vec<&str> = input.lines().collect();
    numbers.into_iter().filter_map(|n| lines.get(n - 1).map(|line| format!("\n  line {n}: {line}"))).take(5).collect()
}

/// What `iptables-save` printed, by table: each table's chains (built-in
/// and user-defined) and each chain's rules as saved (`-A CHAIN ...`).
#[derive(Debug, Default)]
pub struct Saved {
    pub tables: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Saved {
    pub fn parse(text: &str) -> Self {
        let mut saved = Saved::default();
        let mut table: Option<&mut BTreeMap<String, Vec<String>>> = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix('*') {
                table = Some(saved.tables.entry(name.trim().to_string()).or_default());
            } else if let Some(table) = table.as_deref_mut() {
                if let Some(decl) = line.strip_prefix(':') {
                    if let Some(chain) = decl.split_whitespace().next() {
                        table.entry(chain.to_string()).or_default();
                    }
                } else if let Some(rule) = line.strip_prefix("-A ")
                    && let Some(chain) = rule.split_whitespace().next()
                {
                    table.entry(chain.to_string()).or_default().push(line.to_string());
                }
            }
        }
        saved
    }

    /// The chains of `table` (empty when the table was not saved).
    pub fn chains(&self, table: &str) -> impl Iterator<Item = &str> {
        self.tables.get(table).into_iter().flat_map(|chains| chains.keys().map(String::as_str))
    }

    /// The saved rules of `chain` in `table` that jump to `target`.
    pub fn jumps(&self, table: &str, chain: &str, target: &str) -> Vec<&str> {
        let rules = self.tables.get(table).and_then(|chains| chains.get(chain));
        rules
            .into_iter()
            .flatten()
            .filter(|rule| rule.split_whitespace().collect::<Vec<_>>().windows(2).any(|pair| pair == ["-j", target]))
            .map(String::as_str)
            .collect()
    }
}

/// A restore input being written, table by table (`*table` ... `COMMIT`).
#[derive(Default)]
pub struct RestoreInput {
    text: String,
}

impl RestoreInput {
    pub fn table(&mut self, name: &str) -> &mut Self {
        self.text.push('*');
        self.text.push_str(name);
        self.text.push('\n');
        self
    }

    /// Declares `chain`: made if absent, emptied if present.
    pub fn chain(&mut self, chain: &str) -> &mut Self {
        self.text.push(':');
        self.text.push_str(chain);
        self.text.push_str(" - [0:0]\n");
        self
    }

    pub fn line(&mut self, line: impl AsRef<str>) -> &mut Self {
        self.text.push_str(line.as_ref());
        self.text.push('\n');
        self
    }

    pub fn commit(&mut self) -> &mut Self {
        self.text.push_str("COMMIT\n");
        self
    }

    /// Commits and returns the input.
    pub fn commit_chains(mut self) -> String {
        self.commit();
        self.text
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn into_string(self) -> String {
        self.text
    }
}

/// What `iptables-save` prints on a host with the pod network's chains and
/// someone else's rules: for the tests of every module that reads it.
#[cfg(test)]
pub(crate) const SAVED_SAMPLE: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:HAWSER-POD-FORWARD - [0:0]
-A FORWARD -m comment --comment \"hawser pod forwarding\" -j HAWSER-POD-FORWARD
-A FORWARD -j DOCKER-USER
-A HAWSER-POD-FORWARD -s 10.244.1.0/24 -j ACCEPT
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
:HAWSER-POD-EGRESS - [0:0]
-A POSTROUTING -m comment --comment \"hawser pod egress\" -j HAWSER-POD-EGRESS
-A POSTROUTING -j HAWSER-POD-EGRESS-NOT-OURS
-A HAWSER-POD-EGRESS -s 10.244.1.0/24 ! -d 10.244.0.0/16 -j MASQUERADE
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:HAWSER-DNS-NOTRACK - [0:0]
-A PREROUTING -m comment --comment \"hawser node-local DNS\" -j HAWSER-DNS-NOTRACK
-A OUTPUT -m comment --comment \"hawser node-local DNS\" -j HAWSER-DNS-NOTRACK
COMMIT
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_tables_chains_and_jumps_are_found() {
        let saved = Saved::parse(SAVED_SAMPLE);
        assert_eq!(saved.chains("filter").collect::<Vec<_>>(), ["FORWARD", "HAWSER-POD-FORWARD", "INPUT"]);
        assert_eq!(
            saved.jumps("nat", "POSTROUTING", "HAWSER-POD-EGRESS"),
            ["-A POSTROUTING -m comment --comment \"hawser pod egress\" -j HAWSER-POD-EGRESS"]
        );
        assert!(saved.jumps("nat", "PREROUTING", "HAWSER-POD-EGRESS").is_empty());
        assert_eq!(saved.chains("mangle").count(), 0);
    }

    #[test]
    fn a_failing_restore_shows_the_lines_it_names() {
        let input = "*nat\n:A - [0:0]\n-A A -j NOPE\nCOMMIT\n";
        assert_eq!(failing_lines(input, "iptables-restore: line 3 failed"), "\n  line 3: -A A -j NOPE");
        assert_eq!(failing_lines(input, "no numbers here"), "");
    }

    #[test]
    fn backends_parse_and_name_their_programs() {
        assert_eq!("legacy".parse::<Backend>().unwrap().program("restore"), "iptables-legacy-restore");
        assert_eq!("system".parse::<Backend>().unwrap().program("save"), "iptables-save");
        assert!("iptables".parse::<Backend>().is_err());
    }
}

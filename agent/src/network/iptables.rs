//! The pod network's iptables rules, in two chains of its own: masquerading
//! of pod traffic that leaves the cluster network (pods' addresses are not
//! routable outside it, and replies must find their way back), and
//! accepting forwarded pod traffic (a host whose FORWARD policy is DROP, as
//! Docker leaves it, would otherwise cut pods off).
//!
//! Each change is one `iptables-restore --noflush` input, so it applies
//! whole or not at all and leaves every other rule alone. Declaring a chain
//! in that input empties it, which makes re-applying the rules idempotent;
//! the jumps into our chains from the built-in ones are added only when
//! `iptables-save` shows them missing (an input cannot say "add if absent",
//! and `-D` of a missing rule would fail the whole input), the way
//! kube-proxy keeps its jumps.
//!
//! `iptables-save` and `iptables-restore` act on the network namespace of
//! the thread that starts them: they are started from the caller's thread.

use super::NetworkError;
use super::netlink::Context;
use ipnetwork::Ipv4Network;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The nat chain that masquerades pod egress, jumped to from POSTROUTING.
pub const EGRESS_CHAIN: &str = "HAWSER-POD-EGRESS";
/// The filter chain that accepts forwarded pod traffic, jumped to from FORWARD.
pub const FORWARD_CHAIN: &str = "HAWSER-POD-FORWARD";

/// Installs (or refreshes) both chains and their jumps.
pub(crate) async fn ensure(pod_cidr: Ipv4Network, cluster_cidr: Ipv4Network) -> Result<(), NetworkError> {
    let saved = save().await?;
    restore(&ensure_input(pod_cidr, cluster_cidr, &saved), "installing the pod network's iptables chains").await
}

/// Removes both chains and every jump to them.
pub(crate) async fn remove() -> Result<(), NetworkError> {
    let saved = save().await?;
    restore(&remove_input(&saved), "removing the pod network's iptables chains").await
}

/// One of our chains: where it lives, what jumps to it, what it holds.
struct Chain {
    table: &'static str,
    builtin: &'static str,
    name: &'static str,
    /// The jump's comment.
    comment: &'static str,
    rules: fn(&str, Ipv4Network, Ipv4Network) -> Vec<String>,
}

const CHAINS: [Chain; 2] = [
    Chain { table: "nat", builtin: "POSTROUTING", name: EGRESS_CHAIN, comment: "hawser pod egress", rules: egress_rules },
    Chain { table: "filter", builtin: "FORWARD", name: FORWARD_CHAIN, comment: "hawser pod forwarding", rules: forward_rules },
];

fn egress_rules(chain: &str, pod_cidr: Ipv4Network, cluster_cidr: Ipv4Network) -> Vec<String> {
    vec![format!(
        "-A {chain} -s {pod_cidr} ! -d {cluster_cidr} -m comment --comment \"pod traffic leaving the cluster network\" -j MASQUERADE"
    )]
}

fn forward_rules(chain: &str, pod_cidr: Ipv4Network, _: Ipv4Network) -> Vec<String> {
    vec![
        format!("-A {chain} -s {pod_cidr} -m comment --comment \"from this node's pods\" -j ACCEPT"),
        format!("-A {chain} -d {pod_cidr} -m comment --comment \"to this node's pods\" -j ACCEPT"),
    ]
}

/// The restore input for [`ensure`], given what `iptables-save` printed.
fn ensure_input(pod_cidr: Ipv4Network, cluster_cidr: Ipv4Network, saved: &str) -> String {
    let mut input = String::new();
    for Chain { table, builtin, name, comment, rules } in CHAINS {
        input += &format!("*{table}\n:{name} - [0:0]\n");
        for rule in rules(name, pod_cidr, cluster_cidr) {
            input += &format!("{rule}\n");
        }
        if jumps(saved, table, builtin, name).is_empty() {
            input += &format!("-I {builtin} 1 -m comment --comment \"{comment}\" -j {name}\n");
        }
        input += "COMMIT\n";
    }
    input
}

/// The restore input for [`remove`]: every jump deleted as saved, then the
/// chain declared (so emptied, or made if absent) and deleted.
fn remove_input(saved: &str) -> String {
    let mut input = String::new();
    for Chain { table, builtin, name, .. } in CHAINS {
        input += &format!("*{table}\n");
        for jump in jumps(saved, table, builtin, name) {
            input += &format!("-D{}\n", jump.strip_prefix("-A").expect("saved rules start with -A"));
        }
        input += &format!(":{name} - [0:0]\n-X {name}\nCOMMIT\n");
    }
    input
}

/// The saved rules of `builtin` in `table` that jump to `chain`.
fn jumps<'a>(saved: &'a str, table: &str, builtin: &str, chain: &str) -> Vec<&'a str> {
    let mut in_table = false;
    let mut found = Vec::new();
    for line in saved.lines() {
        if let Some(name) = line.strip_prefix('*') {
            in_table = name.trim() == table;
        } else if in_table && line.strip_prefix("-A ").and_then(|rest| rest.split_whitespace().next()) == Some(builtin) {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.windows(2).any(|pair| pair == ["-j", chain]) {
                found.push(line);
            }
        }
    }
    found
}

async fn save() -> Result<String, NetworkError> {
    let output = Command::new("iptables-save").stdin(Stdio::null()).output().await.with_context(|| "running iptables-save".to_string())?;
    if !output.status.success() {
        return Err(NetworkError::Iptables { context: "running iptables-save".to_string(), detail: failure(&output) });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn restore(input: &str, context: &str) -> Result<(), NetworkError> {
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "--wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{context}: running iptables-restore"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(input.as_bytes()).await.with_context(|| format!("{context}: writing to iptables-restore"))?;
    drop(stdin);
    let output = child.wait_with_output().await.with_context(|| format!("{context}: waiting for iptables-restore"))?;
    if !output.status.success() {
        return Err(NetworkError::Iptables { context: context.to_string(), detail: format!("{}; input was:\n{input}", failure(&output)) });
    }
    Ok(())
}

fn failure(output: &std::process::Output) -> String {
    format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED_WITH_JUMPS: &str = "\
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
";

    fn cidrs() -> (Ipv4Network, Ipv4Network) {
        ("10.244.1.0/24".parse().unwrap(), "10.244.0.0/16".parse().unwrap())
    }

    #[test]
    fn ensuring_on_a_fresh_host_declares_both_chains_their_rules_and_jumps() {
        let (pod, cluster) = cidrs();
        assert_eq!(
            ensure_input(pod, cluster, ""),
            "*nat\n\
             :HAWSER-POD-EGRESS - [0:0]\n\
             -A HAWSER-POD-EGRESS -s 10.244.1.0/24 ! -d 10.244.0.0/16 -m comment --comment \"pod traffic leaving the cluster network\" -j MASQUERADE\n\
             -I POSTROUTING 1 -m comment --comment \"hawser pod egress\" -j HAWSER-POD-EGRESS\n\
             COMMIT\n\
             *filter\n\
             :HAWSER-POD-FORWARD - [0:0]\n\
             -A HAWSER-POD-FORWARD -s 10.244.1.0/24 -m comment --comment \"from this node's pods\" -j ACCEPT\n\
             -A HAWSER-POD-FORWARD -d 10.244.1.0/24 -m comment --comment \"to this node's pods\" -j ACCEPT\n\
             -I FORWARD 1 -m comment --comment \"hawser pod forwarding\" -j HAWSER-POD-FORWARD\n\
             COMMIT\n"
        );
    }

    #[test]
    fn ensuring_again_adds_no_second_jump() {
        let (pod, cluster) = cidrs();
        let input = ensure_input(pod, cluster, SAVED_WITH_JUMPS);
        assert!(!input.contains("-I "), "{input}");
        assert!(input.contains(":HAWSER-POD-EGRESS - [0:0]\n-A HAWSER-POD-EGRESS "), "the chain is emptied and refilled: {input}");
    }

    #[test]
    fn removing_deletes_exactly_our_jumps_then_the_chains() {
        assert_eq!(
            remove_input(SAVED_WITH_JUMPS),
            "*nat\n\
             -D POSTROUTING -m comment --comment \"hawser pod egress\" -j HAWSER-POD-EGRESS\n\
             :HAWSER-POD-EGRESS - [0:0]\n\
             -X HAWSER-POD-EGRESS\n\
             COMMIT\n\
             *filter\n\
             -D FORWARD -m comment --comment \"hawser pod forwarding\" -j HAWSER-POD-FORWARD\n\
             :HAWSER-POD-FORWARD - [0:0]\n\
             -X HAWSER-POD-FORWARD\n\
             COMMIT\n"
        );
    }
}

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
//! `iptables-save` and `iptables-restore` ([`crate::iptables`]) act on the
//! network namespace of the thread that starts them.

use super::NetworkError;
use crate::iptables::{self, Backend, Saved};
use ipnetwork::Ipv4Network;

/// The nat chain that masquerades pod egress, jumped to from POSTROUTING.
pub const EGRESS_CHAIN: &str = "HAWSER-POD-EGRESS";
/// The filter chain that accepts forwarded pod traffic, jumped to from FORWARD.
pub const FORWARD_CHAIN: &str = "HAWSER-POD-FORWARD";

/// Installs (or refreshes) both chains and their jumps.
pub(crate) async fn ensure(backend: Backend, pod_cidr: Ipv4Network, cluster_cidr: Ipv4Network) -> Result<(), NetworkError> {
    let saved = Saved::parse(&iptables::save(backend, None).await?);
    iptables::restore(backend, &ensure_input(pod_cidr, cluster_cidr, &saved), "installing the pod network's iptables chains").await?;
    Ok(())
}

/// Removes both chains and every jump to them.
pub(crate) async fn remove(backend: Backend) -> Result<(), NetworkError> {
    let saved = Saved::parse(&iptables::save(backend, None).await?);
    iptables::restore(backend, &remove_input(&saved), "removing the pod network's iptables chains").await?;
    Ok(())
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
fn ensure_input(pod_cidr: Ipv4Network, cluster_cidr: Ipv4Network, saved: &Saved) -> String {
    let mut input = String::new();
    for Chain { table, builtin, name, comment, rules } in CHAINS {
        input += &format!("*{table}\n:{name} - [0:0]\n");
        for rule in rules(name, pod_cidr, cluster_cidr) {
            input += &format!("{rule}\n");
        }
        if saved.jumps(table, builtin, name).is_empty() {
            input += &format!("-I {builtin} 1 -m comment --comment \"{comment}\" -j {name}\n");
        }
        input += "COMMIT\n";
    }
    input
}

/// The restore input for [`remove`]: every jump deleted as saved, then the
/// chain declared (so emptied, or made if absent) and deleted.
fn remove_input(saved: &Saved) -> String {
    let mut input = String::new();
    for Chain { table, builtin, name, .. } in CHAINS {
        input += &format!("*{table}\n");
        for jump in saved.jumps(table, builtin, name) {
            input += &format!("-D{}\n", jump.strip_prefix("-A").expect("saved rules start with -A"));
        }
        input += &format!(":{name} - [0:0]\n-X {name}\nCOMMIT\n");
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs() -> (Ipv4Network, Ipv4Network) {
        ("10.244.1.0/24".parse().unwrap(), "10.244.0.0/16".parse().unwrap())
    }

    #[test]
    fn ensuring_on_a_fresh_host_declares_both_chains_their_rules_and_jumps() {
        let (pod, cluster) = cidrs();
        assert_eq!(
            ensure_input(pod, cluster, &Saved::default()),
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
        let input = ensure_input(pod, cluster, &Saved::parse(crate::iptables::SAVED_SAMPLE));
        assert!(!input.contains("-I "), "{input}");
        assert!(input.contains(":HAWSER-POD-EGRESS - [0:0]\n-A HAWSER-POD-EGRESS "), "the chain is emptied and refilled: {input}");
    }

    #[test]
    fn removing_deletes_exactly_our_jumps_then_the_chains() {
        assert_eq!(
            remove_input(&Saved::parse(crate::iptables::SAVED_SAMPLE)),
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

//! The pod network's iptables rules, in three chains of its own:
//! masquerading of pod traffic that leaves the cluster network (pods'
//! addresses are not routable outside it, and replies must find their way
//! back); accepting forwarded pod traffic (a host whose FORWARD policy is
//! DROP, as Docker leaves it, would otherwise cut pods off); and exempting
//! queries to the node-local DNS addresses from connection tracking, as
//! NodeLocal DNSCache does (every UDP query would otherwise hold a
//! conntrack entry for 30 s and race its siblings for it, the cause of
//! Kubernetes' well-known 5 s lookup stalls).
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
use std::net::Ipv4Addr;

/// The nat chain that masquerades pod egress, jumped to from POSTROUTING.
pub const EGRESS_CHAIN: &str = "HAWSER-POD-EGRESS";
/// The filter chain that accepts forwarded pod traffic, jumped to from FORWARD.
pub const FORWARD_CHAIN: &str = "HAWSER-POD-FORWARD";
/// The raw chain that leaves DNS to and from the node-local DNS addresses
/// untracked, jumped to from PREROUTING (pods) and OUTPUT (the node).
pub const DNS_NOTRACK_CHAIN: &str = "HAWSER-DNS-NOTRACK";

/// What the rules are made from.
#[derive(Clone, Copy)]
pub(crate) struct Inputs<'a> {
    pub pod_cidr: Ipv4Network,
    pub cluster_cidr: Ipv4Network,
    /// The addresses the node's DNS server answers on.
    pub local_dns: &'a [Ipv4Addr],
}

/// Installs (or refreshes) every chain and its jumps.
pub(crate) async fn ensure(backend: Backend, inputs: Inputs<'_>) -> Result<(), NetworkError> {
    let saved = Saved::parse(&iptables::save(backend, None).await?);
    iptables::restore(backend, &ensure_input(inputs, &saved), "installing the pod network's iptables chains").await?;
    Ok(())
}

/// Removes every chain and every jump to them.
pub(crate) async fn remove(backend: Backend) -> Result<(), NetworkError> {
    let saved = Saved::parse(&iptables::save(backend, None).await?);
    iptables::restore(backend, &remove_input(&saved), "removing the pod network's iptables chains").await?;
    Ok(())
}

/// One of our chains: where it lives, what jumps to it, what it holds.
struct Chain {
    table: &'static str,
    builtins: &'static [&'static str],
    name: &'static str,
    /// The jump's comment.
    comment: &'static str,
    rules: fn(&str, Inputs<'_>) -> Vec<String>,
}

const CHAINS: [Chain; 3] = [
    Chain { table: "nat", builtins: &["POSTROUTING"], name: EGRESS_CHAIN, comment: "hawser pod egress", rules: egress_rules },
    Chain { table: "filter", builtins: &["FORWARD"], name: FORWARD_CHAIN, comment: "hawser pod forwarding", rules: forward_rules },
    Chain {
        table: "raw",
        builtins: &["PREROUTING", "OUTPUT"],
        name: DNS_NOTRACK_CHAIN,
        comment: "hawser node-local DNS",
        rules: dns_notrack_rules,
    },
];

fn egress_rules(chain: &str, inputs: Inputs<'_>) -> Vec<String> {
    let Inputs { pod_cidr, cluster_cidr, .. } = inputs;
    vec![format!(
        "-A {chain} -s {pod_cidr} ! -d {cluster_cidr} -m comment --comment \"pod traffic leaving the cluster network\" -j MASQUERADE"
    )]
}

fn forward_rules(chain: &str, inputs: Inputs<'_>) -> Vec<String> {
    let pod_cidr = inputs.pod_cidr;
    vec![
        format!("-A {chain} -s {pod_cidr} -m comment --comment \"from this node's pods\" -j ACCEPT"),
        format!("-A {chain} -d {pod_cidr} -m comment --comment \"to this node's pods\" -j ACCEPT"),
    ]
}

fn dns_notrack_rules(chain: &str, inputs: Inputs<'_>) -> Vec<String> {
    let mut rules = Vec::new();
    for ip in inputs.local_dns {
        for protocol in ["udp", "tcp"] {
            rules.push(format!(
                "-A {chain} -d {ip}/32 -p {protocol} -m {protocol} --dport 53 -m comment --comment \"to node-local DNS\" -j NOTRACK"
            ));
            rules.push(format!(
                "-A {chain} -s {ip}/32 -p {protocol} -m {protocol} --sport 53 -m comment --comment \"from node-local DNS\" -j NOTRACK"
            ));
        }
    }
    rules
}

/// The restore input for [`ensure`], given what `iptables-save` printed.
fn ensure_input(inputs: Inputs<'_>, saved: &Saved) -> String {
    let mut input = String::new();
    for Chain { table, builtins, name, comment, rules } in CHAINS {
        input += &format!("*{table}\n:{name} - [0:0]\n");
        for rule in rules(name, inputs) {
            input += &format!("{rule}\n");
        }
        for builtin in builtins {
            if saved.jumps(table, builtin, name).is_empty() {
                input += &format!("-I {builtin} 1 -m comment --comment \"{comment}\" -j {name}\n");
            }
        }
        input += "COMMIT\n";
    }
    input
}

/// The restore input for [`remove`]: every jump deleted as saved, then the
/// chain declared (so emptied, or made if absent) and deleted.
fn remove_input(saved: &Saved) -> String {
    let mut input = String::new();
    for Chain { table, builtins, name, .. } in CHAINS {
        input += &format!("*{table}\n");
        for jump in builtins.iter().flat_map(|builtin| saved.jumps(table, builtin, name)) {
            input += &format!("-D{}\n", jump.strip_prefix("-A").expect("saved rules start with -A"));
        }
        input += &format!(":{name} - [0:0]\n-X {name}\nCOMMIT\n");
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL_DNS: [Ipv4Addr; 1] = [Ipv4Addr::new(169, 254, 20, 10)];

    fn inputs() -> Inputs<'static> {
        Inputs { pod_cidr: "10.244.1.0/24".parse().unwrap(), cluster_cidr: "10.244.0.0/16".parse().unwrap(), local_dns: &LOCAL_DNS }
    }

    #[test]
    fn ensuring_on_a_fresh_host_declares_every_chain_its_rules_and_jumps() {
        assert_eq!(
            ensure_input(inputs(), &Saved::default()),
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
             COMMIT\n\
             *raw\n\
             :HAWSER-DNS-NOTRACK - [0:0]\n\
             -A HAWSER-DNS-NOTRACK -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment \"to node-local DNS\" -j NOTRACK\n\
             -A HAWSER-DNS-NOTRACK -s 169.254.20.10/32 -p udp -m udp --sport 53 -m comment --comment \"from node-local DNS\" -j NOTRACK\n\
             -A HAWSER-DNS-NOTRACK -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m comment --comment \"to node-local DNS\" -j NOTRACK\n\
             -A HAWSER-DNS-NOTRACK -s 169.254.20.10/32 -p tcp -m tcp --sport 53 -m comment --comment \"from node-local DNS\" -j NOTRACK\n\
             -I PREROUTING 1 -m comment --comment \"hawser node-local DNS\" -j HAWSER-DNS-NOTRACK\n\
             -I OUTPUT 1 -m comment --comment \"hawser node-local DNS\" -j HAWSER-DNS-NOTRACK\n\
             COMMIT\n"
        );
    }

    #[test]
    fn ensuring_again_adds_no_second_jump() {
        let input = ensure_input(inputs(), &Saved::parse(crate::iptables::SAVED_SAMPLE));
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
             COMMIT\n\
             *raw\n\
             -D PREROUTING -m comment --comment \"hawser node-local DNS\" -j HAWSER-DNS-NOTRACK\n\
             -D OUTPUT -m comment --comment \"hawser node-local DNS\" -j HAWSER-DNS-NOTRACK\n\
             :HAWSER-DNS-NOTRACK - [0:0]\n\
             -X HAWSER-DNS-NOTRACK\n\
             COMMIT\n"
        );
    }
}

//! The rules, as kube-proxy's iptables proxier lays them out (v1.28+), with
//! `HAWSER-` names. Pure text generation, so the layout is tested without
//! a kernel.
//!
//! ```text
//! nat PREROUTING, OUTPUT → HAWSER-SERVICES
//!     -d VIP --dport P → HAWSER-SVC-x (or HAWSER-SVL-x: internalTrafficPolicy Local)
//!     ... last: addrtype LOCAL → HAWSER-NODEPORTS → --dport NP → HAWSER-EXT-x
//! HAWSER-SVC-x   (all usable endpoints) ! -s clusterCIDR → mark; random 1/(n-i) → HAWSER-SEP-y
//! HAWSER-SVL-x   (this node's usable endpoints) random → HAWSER-SEP-y
//! HAWSER-EXT-x   externalTrafficPolicy Cluster: mark, → SVC;
//!                Local: pods and the node itself → SVC (the node's own
//!                traffic masqueraded), everyone else → SVL, source kept
//! HAWSER-SEP-y   -s itself → mark (hairpin); DNAT to the endpoint
//! nat POSTROUTING → HAWSER-POSTROUTING: marked → MASQUERADE
//! filter: HAWSER-SERVICES / HAWSER-EXTERNAL-SERVICES reject what has no
//!         endpoint (at once, not a timeout), drop NodePort traffic for
//!         Local services without a local endpoint; HAWSER-FORWARD accepts
//!         marked and established service traffic.
//! ```
//!
//! `sessionAffinity: ClientIP` uses the `recent` match as kube-proxy does:
//! the SEP chain records the client, the SVC chain sends a recorded client
//! back to its endpoint before the random choice.

use crate::proxy::state::{Endpoint, ServicePort, ServicePortName};
use ipnetwork::Ipv4Network;
use std::fmt::Write;

pub const SERVICES: &str = "HAWSER-SERVICES";
pub const EXTERNAL_SERVICES: &str = "HAWSER-EXTERNAL-SERVICES";
pub const NODEPORTS: &str = "HAWSER-NODEPORTS";
pub const POSTROUTING: &str = "HAWSER-POSTROUTING";
pub const MARK_MASQ: &str = "HAWSER-MARK-MASQ";
pub const FORWARD: &str = "HAWSER-FORWARD";
/// The prefixes of the per-service chains (the pod network's chains,
/// `HAWSER-POD-*`, are not the proxy's).
pub const PER_SERVICE_PREFIXES: [&str; 4] = ["HAWSER-SVC-", "HAWSER-SVL-", "HAWSER-EXT-", "HAWSER-SEP-"];

/// kube-proxy's masquerade bit.
const MASQ_MARK: &str = "0x4000/0x4000";

/// The jumps from the built-in chains: (table, built-in chain, our chain,
/// extra match, comment).
pub const JUMPS: [(&str, &str, &str, &str, &str); 8] = [
    ("nat", "PREROUTING", SERVICES, "", "hawser service portals"),
    ("nat", "OUTPUT", SERVICES, "", "hawser service portals"),
    ("nat", "POSTROUTING", POSTROUTING, "", "hawser postrouting rules"),
    ("filter", "INPUT", EXTERNAL_SERVICES, "-m conntrack --ctstate NEW ", "hawser externally-visible service portals"),
    ("filter", "FORWARD", SERVICES, "-m conntrack --ctstate NEW ", "hawser service portals"),
    ("filter", "FORWARD", EXTERNAL_SERVICES, "-m conntrack --ctstate NEW ", "hawser externally-visible service portals"),
    ("filter", "OUTPUT", SERVICES, "-m conntrack --ctstate NEW ", "hawser service portals"),
    ("filter", "FORWARD", FORWARD, "", "hawser forwarding rules"),
];

/// The rule that puts a jump in place (`-I` first, as kube-proxy does).
pub fn jump_rule(builtin: &str, chain: &str, matches: &str, comment: &str) -> String {
    format!("-I {builtin} 1 {matches}-m comment --comment \"{comment}\" -j {chain}")
}

/// The chains of one service port, named by a hash of what they are for
/// (kube-proxy's `portProtoHash`: SHA-256, base32, 16 characters), so a
/// restarted agent computes the same names.
pub struct PortChains {
    pub svc: String,
    pub svl: String,
    pub ext: String,
}

impl PortChains {
    pub fn of(name: &ServicePortName) -> Self {
        let id = format!("{name}{}", name.protocol.as_str());
        Self { svc: chain("HAWSER-SVC-", &id), svl: chain("HAWSER-SVL-", &id), ext: chain("HAWSER-EXT-", &id) }
    }
}

/// The SEP chain of one endpoint of one service port.
pub fn endpoint_chain(name: &ServicePortName, endpoint: &Endpoint) -> String {
    chain("HAWSER-SEP-", &format!("{name}{}{endpoint}", name.protocol.as_str()))
}

fn chain(prefix: &str, id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let encoded = data_encoding::BASE32.encode(digest.as_ref());
    format!("{prefix}{}", &encoded[..16])
}

/// The nat rules of one service port, and the chains they fill.
pub struct PortRules {
    /// Its lines of `HAWSER-SERVICES` and `HAWSER-NODEPORTS` (rewritten
    /// whole at every sync).
    pub services: Vec<String>,
    pub nodeports: Vec<String>,
    /// Its own chains, each with its rules (rewritten only when the
    /// service changed).
    pub chains: Vec<(String, Vec<String>)>,
    /// Its lines of the filter table's `HAWSER-SERVICES` and
    /// `HAWSER-EXTERNAL-SERVICES` (rejects and drops).
    pub filter_services: Vec<String>,
    pub filter_external: Vec<String>,
}

/// Everything one service port needs; its own chains only `with_chains`
/// (a sync rewrites those for changed services alone, and building them
/// for every service would cost what partial syncs save).
pub fn port_rules(port: &ServicePort, cluster_cidr: Ipv4Network, with_chains: bool) -> PortRules {
    let name = &port.name;
    let proto = port.name.protocol.as_str();
    let chains = PortChains::of(name);
    let vip = format!("-d {}/32 -p {proto}", port.cluster_ip);
    let dport = format!("-m {proto} --dport {}", port.port);
    let mut rules = PortRules { services: vec![], nodeports: vec![], chains: vec![], filter_services: vec![], filter_external: vec![] };

    let cluster = port.cluster_endpoints();
    let local = port.local_endpoints();
    let internal = port.internal_endpoints();
    let external = port.external_endpoints();

    let uses_svc = !internal.is_empty() && !port.internal_local || port.node_port.is_some() && !cluster.is_empty();
    let uses_svl = !internal.is_empty() && port.internal_local || port.node_port.is_some() && port.external_local;

    if internal.is_empty() {
        rules.filter_services.push(format!("-A {SERVICES} {vip} -m comment --comment \"{name} has no endpoints\" {dport} -j REJECT"));
    } else {
        let target = if port.internal_local { &chains.svl } else { &chains.svc };
        rules.services.push(format!("-A {SERVICES} {vip} -m comment --comment \"{name} cluster IP\" {dport} -j {target}"));
    }

    if let Some(node_port) = port.node_port {
        let np = format!("-p {proto} -m {proto} --dport {node_port}");
        if external.is_empty() && (cluster.is_empty() || !port.external_local) {
            rules.filter_external.push(format!(
                "-A {EXTERNAL_SERVICES} -m comment --comment \"{name} has no endpoints\" -m addrtype --dst-type LOCAL {np} -j REJECT"
            ));
        } else {
            if external.is_empty() {
                // Local policy without a local endpoint: the node's own and
                // its pods' traffic still gets through (EXT sends it to SVC),
                // traffic from outside is dropped rather than forwarded.
                rules.filter_external.push(format!(
                    "-A {EXTERNAL_SERVICES} -m comment --comment \"{name} has no local endpoints\" -m addrtype --dst-type LOCAL {np} -j DROP"
                ));
            }
            rules.nodeports.push(format!("-A {NODEPORTS} -m comment --comment \"{name}\" {np} -j {}", chains.ext));
            if !with_chains {
                return rules;
            }
            let mut ext = Vec::new();
            if port.external_local {
                ext.push(format!(
                    "-A {} -s {cluster_cidr} -m comment --comment \"pod traffic for {name} external destinations\" -j {}",
                    chains.ext, chains.svc
                ));
                ext.push(format!(
                    "-A {} -m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {MARK_MASQ}",
                    chains.ext
                ));
                ext.push(format!(
                    "-A {} -m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {}",
                    chains.ext, chains.svc
                ));
                ext.push(format!("-A {} -j {}", chains.ext, chains.svl));
            } else {
                ext.push(format!(
                    "-A {} -m comment --comment \"masquerade traffic for {name} external destinations\" -j {MARK_MASQ}",
                    chains.ext
                ));
                ext.push(format!("-A {} -j {}", chains.ext, chains.svc));
            }
            rules.chains.push((chains.ext.clone(), ext));
        }
    }

    if !with_chains {
        return rules;
    }
    if uses_svc {
        let mut svc =
            vec![format!("-A {} ! -s {cluster_cidr} {vip} -m comment --comment \"{name} cluster IP\" {dport} -j {MARK_MASQ}", chains.svc)];
        spread(&mut svc, &chains.svc, port, &cluster);
        rules.chains.push((chains.svc.clone(), svc));
    }
    if uses_svl {
        let mut svl = Vec::new();
        spread(&mut svl, &chains.svl, port, &local);
        rules.chains.push((chains.svl.clone(), svl));
    }
    for endpoint in port.reachable_endpoints() {
        let sep = endpoint_chain(name, endpoint);
        let mut dnat = format!("-A {sep} -p {proto} -m comment --comment \"{name}\"");
        if port.affinity_timeout.is_some() {
            let _ = write!(dnat, " -m recent --set --name {sep} --mask 255.255.255.255 --rsource");
        }
        let _ = write!(dnat, " -m {proto} -j DNAT --to-destination {endpoint}");
        rules
            .chains
            .push((sep.clone(), vec![format!("-A {sep} -s {}/32 -m comment --comment \"{name}\" -j {MARK_MASQ}", endpoint.ip), dnat]));
    }
    rules
}

/// The rules of a SVC or SVL chain: affinity first, then a random choice
/// with probability 1/(n-i) for endpoint i, so each gets 1/n.
fn spread(rules: &mut Vec<String>, chain: &str, port: &ServicePort, endpoints: &[&Endpoint]) {
    let name = &port.name;
    if let Some(timeout) = port.affinity_timeout {
        for endpoint in endpoints {
            let sep = endpoint_chain(name, endpoint);
            rules.push(format!(
                "-A {chain} -m comment --comment \"{name} -> {endpoint}\" -m recent --rcheck --seconds {timeout} --reap --name {sep} --mask 255.255.255.255 --rsource -j {sep}"
            ));
        }
    }
    let n = endpoints.len();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let sep = endpoint_chain(name, endpoint);
        if i + 1 < n {
            rules.push(format!(
                "-A {chain} -m comment --comment \"{name} -> {endpoint}\" -m statistic --mode random --probability {} -j {sep}",
                probability(n - i)
            ));
        } else {
            rules.push(format!("-A {chain} -m comment --comment \"{name} -> {endpoint}\" -j {sep}"));
        }
    }
}

/// 1/n as `iptables-save` prints it: the statistic match keeps the
/// probability in steps of 1/2^31 and prints 11 decimals, so writing that
/// same text lets a full sync recognise a chain that needs no rewrite.
fn probability(n: usize) -> String {
    const STEPS: f64 = 2_147_483_648.0;
    format!("{:.11}", (STEPS / n as f64).round() / STEPS)
}

/// The fixed rules of the proxy's own chains.
pub fn postrouting_rules() -> Vec<String> {
    vec![
        format!("-A {POSTROUTING} -m mark ! --mark {MASQ_MARK} -j RETURN"),
        // The mark is cleared so a packet that goes through a second time
        // (e.g. re-routed) is not masqueraded twice.
        format!("-A {POSTROUTING} -j MARK --xor-mark 0x4000"),
        format!("-A {POSTROUTING} -m comment --comment \"hawser service traffic requiring SNAT\" -j MASQUERADE --random-fully"),
    ]
}

pub fn mark_masq_rules() -> Vec<String> {
    vec![format!("-A {MARK_MASQ} -j MARK --or-mark 0x4000")]
}

pub fn forward_rules() -> Vec<String> {
    vec![
        format!("-A {FORWARD} -m conntrack --ctstate INVALID -j DROP"),
        format!("-A {FORWARD} -m comment --comment \"hawser forwarding rules\" -m mark --mark {MASQ_MARK} -j ACCEPT"),
        format!(
            "-A {FORWARD} -m comment --comment \"hawser forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        ),
    ]
}

/// The last rule of the nat `HAWSER-SERVICES`: NodePorts on every local
/// address.
pub fn nodeports_jump() -> String {
    format!(
        "-A {SERVICES} -m comment --comment \"hawser service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j {NODEPORTS}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::state::Protocol;
    use std::net::Ipv4Addr;

    fn cidr() -> Ipv4Network {
        "10.244.0.0/16".parse().unwrap()
    }

    fn endpoint(last: u8, local: bool, ready: bool) -> Endpoint {
        Endpoint { ip: Ipv4Addr::new(10, 244, 1, last), port: 8080, local, ready, serving: ready, terminating: false }
    }

    fn port(endpoints: Vec<Endpoint>) -> ServicePort {
        ServicePort::for_test("web", "http", Protocol::Tcp, Ipv4Addr::new(10, 96, 0, 20), 80, endpoints)
    }

    fn chain_rules<'a>(rules: &'a PortRules, prefix: &str) -> Vec<&'a [String]> {
        rules.chains.iter().filter(|(name, _)| name.starts_with(prefix)).map(|(_, r)| r.as_slice()).collect()
    }

    #[test]
    fn chain_names_are_stable_hashes_that_fit_iptables() {
        let name = port(vec![]).name;
        let chains = PortChains::of(&name);
        assert_eq!(chains.svc, PortChains::of(&name).svc);
        assert!(chains.svc.starts_with("HAWSER-SVC-") && chains.svc.len() == 27, "{}", chains.svc);
        assert_eq!(chains.svc[11..], chains.svl[11..], "a port's chains share its hash, as kube-proxy's do");
        let sep = endpoint_chain(&name, &endpoint(5, true, true));
        assert!(sep.len() <= 28, "iptables chain names are at most 28 characters: {sep}");
        assert_ne!(sep, endpoint_chain(&name, &endpoint(6, true, true)));
    }

    #[test]
    fn three_endpoints_get_one_third_each_and_hairpin_masquerade() {
        let rules = port_rules(&port(vec![endpoint(5, true, true), endpoint(6, false, true), endpoint(7, false, true)]), cidr(), true);
        assert_eq!(rules.services.len(), 1);
        assert!(rules.services[0].starts_with("-A HAWSER-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j HAWSER-SVC-"));
        let svc = chain_rules(&rules, "HAWSER-SVC-");
        assert_eq!(svc.len(), 1);
        let svc = svc[0];
        assert!(svc[0].contains("! -s 10.244.0.0/16 -d 10.96.0.20/32") && svc[0].ends_with("-j HAWSER-MARK-MASQ"), "{}", svc[0]);
        assert!(svc[1].contains("--probability 0.33333333349 "), "{}", svc[1]);
        assert!(svc[2].contains("--probability 0.50000000000 "), "{}", svc[2]);
        assert!(!svc[3].contains("statistic"), "{}", svc[3]);
        let seps = chain_rules(&rules, "HAWSER-SEP-");
        assert_eq!(seps.len(), 3);
        assert!(seps[0][0].contains("-s 10.244.1.") && seps[0][0].ends_with("-j HAWSER-MARK-MASQ"));
        assert!(seps.iter().any(|r| r[1].ends_with("-m tcp -j DNAT --to-destination 10.244.1.6:8080")));
        assert!(rules.filter_services.is_empty() && rules.nodeports.is_empty() && chain_rules(&rules, "HAWSER-SVL-").is_empty());
    }

    #[test]
    fn no_endpoints_rejects_at_once_in_the_filter_table() {
        let mut p = port(vec![endpoint(5, true, false)]);
        p.node_port = Some(30080);
        let rules = port_rules(&p, cidr(), true);
        assert!(rules.services.is_empty() && rules.nodeports.is_empty() && rules.chains.is_empty());
        assert_eq!(
            rules.filter_services,
            [
                "-A HAWSER-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment \"default/web:http has no endpoints\" -m tcp --dport 80 -j REJECT"
            ]
        );
        assert!(rules.filter_external[0].ends_with("-m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080 -j REJECT"));
    }

    #[test]
    fn node_port_with_cluster_policy_masquerades_and_uses_every_endpoint() {
        let mut p = port(vec![endpoint(5, false, true)]);
        p.node_port = Some(30080);
        let rules = port_rules(&p, cidr(), true);
        assert!(rules.nodeports[0].contains("-p tcp -m tcp --dport 30080 -j HAWSER-EXT-"));
        let ext = chain_rules(&rules, "HAWSER-EXT-")[0];
        assert!(ext[0].ends_with("-j HAWSER-MARK-MASQ") && ext[1].contains("-j HAWSER-SVC-"), "{ext:?}");
    }

    #[test]
    fn local_policy_keeps_the_source_and_drops_outside_traffic_without_a_local_endpoint() {
        let mut p = port(vec![endpoint(5, true, true), endpoint(6, false, true)]);
        p.node_port = Some(30080);
        p.external_local = true;
        let rules = port_rules(&p, cidr(), true);
        let ext = chain_rules(&rules, "HAWSER-EXT-")[0];
        assert!(ext[0].contains("-s 10.244.0.0/16") && ext[0].contains("-j HAWSER-SVC-"), "pods go to every endpoint: {ext:?}");
        assert!(ext[1].contains("--src-type LOCAL -j HAWSER-MARK-MASQ"));
        assert!(ext[3].contains("-j HAWSER-SVL-") && !ext.iter().any(|r| r.ends_with("-j HAWSER-MARK-MASQ") && !r.contains("LOCAL")));
        let svl = chain_rules(&rules, "HAWSER-SVL-")[0];
        assert_eq!(svl.len(), 1, "only the local endpoint: {svl:?}");
        assert!(svl[0].contains("10.244.1.5:8080"));
        assert!(rules.filter_external.is_empty());

        // Without a local endpoint: SVL is empty and outside traffic dropped.
        let mut remote = port(vec![endpoint(6, false, true)]);
        remote.node_port = Some(30080);
        remote.external_local = true;
        let rules = port_rules(&remote, cidr(), true);
        assert!(chain_rules(&rules, "HAWSER-SVL-")[0].is_empty());
        assert!(rules.filter_external[0].contains("has no local endpoints") && rules.filter_external[0].ends_with("-j DROP"));
        assert_eq!(rules.nodeports.len(), 1, "the node's own and its pods' traffic still goes through");
    }

    #[test]
    fn client_ip_affinity_checks_recent_clients_first_and_records_them_at_dnat() {
        let mut p = port(vec![endpoint(5, true, true), endpoint(6, true, true)]);
        p.affinity_timeout = Some(600);
        let rules = port_rules(&p, cidr(), true);
        let svc = chain_rules(&rules, "HAWSER-SVC-")[0];
        assert!(svc[1].contains("-m recent --rcheck --seconds 600 --reap --name HAWSER-SEP-"), "{}", svc[1]);
        assert!(svc[2].contains("-m recent --rcheck"));
        assert!(svc[3].contains("statistic"));
        let sep = chain_rules(&rules, "HAWSER-SEP-")[0];
        assert!(sep[1].contains("-m recent --set --name HAWSER-SEP-"), "{}", sep[1]);
    }

    #[test]
    fn internal_local_policy_sends_the_cluster_ip_to_local_endpoints_only() {
        let mut p = port(vec![endpoint(5, true, true), endpoint(6, false, true)]);
        p.internal_local = true;
        let rules = port_rules(&p, cidr(), true);
        assert!(rules.services[0].contains("-j HAWSER-SVL-"));
        assert!(chain_rules(&rules, "HAWSER-SVC-").is_empty());
        assert_eq!(chain_rules(&rules, "HAWSER-SEP-").len(), 1);
    }
}

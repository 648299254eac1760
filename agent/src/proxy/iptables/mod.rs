//! The iptables backend: kube-proxy's chain layout ([`rules`]), written as
//! one `iptables-restore --noflush` input per sync, nat and filter tables
//! each committed whole.
//!
//! Partial syncs (kube-proxy's KEP-3453): the top-level chains
//! (`HAWSER-SERVICES`, `HAWSER-NODEPORTS`, the filter chains) are rewritten
//! every time, since they list every service, but a service's own chains
//! (SVC, SVL, EXT, SEP) only when that service changed; chains a changed
//! service no longer needs are emptied and deleted in the same input.
//!
//! A full sync (the first after start, after a failure, and periodically)
//! reads `iptables-save` first: it deletes every per-service chain no
//! service needs (a restarted agent's leftovers), re-adds missing jumps
//! from the built-in chains, and rewrites only chains whose saved rules
//! differ from the wanted ones (the rules are written in `iptables-save`'s
//! own form, so unchanged chains compare equal). Until the first sync the
//! rules of the previous run stay in force: a restart leaves no gap.

pub mod rules;

use super::state::{ProxyState, ServicePort};
use super::{Changes, Proxier, ProxyError};
use crate::iptables::{self, Backend, RestoreInput, Saved};
use hawser_runtime::ObjectKey;
use ipnetwork::Ipv4Network;
use rules::{EXTERNAL_SERVICES, FORWARD, JUMPS, MARK_MASQ, NODEPORTS, PER_SERVICE_PREFIXES, POSTROUTING, SERVICES};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub struct IptablesProxier {
    backend: Backend,
    cluster_cidr: Ipv4Network,
    /// The per-service chains in the kernel, by Service, as last written.
    written: HashMap<ObjectKey, BTreeSet<String>>,
}

impl IptablesProxier {
    pub fn new(backend: Backend, cluster_cidr: Ipv4Network) -> Self {
        Self { backend, cluster_cidr, written: HashMap::new() }
    }
}

#[async_trait::async_trait]
impl Proxier for IptablesProxier {
    fn name(&self) -> &'static str {
        "iptables"
    }

    async fn sync(&mut self, state: &ProxyState, changes: &Changes) -> Result<(), ProxyError> {
        let saved = if changes.full { Some(Saved::parse(&iptables::save(self.backend, None).await?)) } else { None };
        let plan = plan(state, changes, &self.written, saved.as_ref(), self.cluster_cidr);
        iptables::restore(self.backend, plan.input.as_str(), "syncing the service proxy's rules").await?;
        if changes.full {
            self.written = plan.written;
        } else {
            for key in &changes.services {
                match plan.written.get(key) {
                    Some(chains) => self.written.insert(key.clone(), chains.clone()),
                    None => self.written.remove(key),
                };
            }
        }
        Ok(())
    }
}

/// Removes every chain and jump the proxy made (`hawser agent --cleanup`).
pub async fn cleanup(backend: Backend) -> Result<(), ProxyError> {
    let saved = Saved::parse(&iptables::save(backend, None).await?);
    iptables::restore(backend, &cleanup_input(&saved), "removing the service proxy's rules").await?;
    Ok(())
}

/// One sync's restore input, and the per-service chains it leaves, by
/// Service (for every Service on a full sync, the changed ones otherwise).
struct Plan {
    input: RestoreInput,
    written: HashMap<ObjectKey, BTreeSet<String>>,
}

fn plan(
    state: &ProxyState,
    changes: &Changes,
    written: &HashMap<ObjectKey, BTreeSet<String>>,
    saved: Option<&Saved>,
    cluster_cidr: Ipv4Network,
) -> Plan {
    let mut services = Vec::new();
    let mut nodeports = Vec::new();
    let mut filter_services = Vec::new();
    let mut filter_external = Vec::new();
    // The chains to (re)write, with their rules.
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut now_written: HashMap<ObjectKey, BTreeSet<String>> = HashMap::new();
    for (key, ports) in &state.services {
        let rewrite = changes.full || changes.services.contains(key);
        for port in ports {
            let mut port_rules = rules::port_rules(port, cluster_cidr, rewrite);
            services.append(&mut port_rules.services);
            nodeports.append(&mut port_rules.nodeports);
            filter_services.append(&mut port_rules.filter_services);
            filter_external.append(&mut port_rules.filter_external);
            if rewrite {
                let owned = now_written.entry(key.clone()).or_default();
                for (chain, rules) in port_rules.chains {
                    owned.insert(chain.clone());
                    chains.insert(chain, rules);
                }
            }
        }
    }

    // Chains that are no longer wanted: on a full sync every per-service
    // chain in the kernel not wanted now; otherwise the changed services'.
    let wanted: BTreeSet<&str> = chains.keys().map(String::as_str).collect();
    let stale: BTreeSet<String> = match saved {
        Some(saved) => saved.chains("nat").filter(|c| is_per_service(c) && !wanted.contains(c)).map(str::to_string).collect(),
        None => {
            changes.services.iter().filter_map(|key| written.get(key)).flatten().filter(|c| !wanted.contains(c.as_str())).cloned().collect()
        }
    };
    // A full sync leaves alone the chains the kernel already holds as wanted.
    if let Some(saved) = saved {
        let kernel = saved.tables.get("nat");
        chains.retain(|chain, rules| kernel.and_then(|k| k.get(chain)) != Some(rules));
    }

    let mut input = RestoreInput::default();
    input.table("nat");
    for chain in [SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ].iter().copied().chain(chains.keys().map(String::as_str)) {
        input.chain(chain);
    }
    for chain in &stale {
        input.chain(chain);
    }
    for line in rules::postrouting_rules().iter().chain(&rules::mark_masq_rules()).chain(&services) {
        input.line(line);
    }
    input.line(rules::nodeports_jump());
    for line in nodeports.iter().chain(chains.values().flatten()) {
        input.line(line);
    }
    for chain in &stale {
        input.line(format!("-X {chain}"));
    }
    missing_jumps(&mut input, saved, "nat");
    input.commit();

    input.table("filter");
    for chain in [SERVICES, EXTERNAL_SERVICES, FORWARD] {
        input.chain(chain);
    }
    for line in filter_services.iter().chain(&filter_external).chain(&rules::forward_rules()) {
        input.line(line);
    }
    missing_jumps(&mut input, saved, "filter");
    input.commit();

    Plan { input, written: now_written }
}

fn is_per_service(chain: &str) -> bool {
    PER_SERVICE_PREFIXES.iter().any(|prefix| chain.starts_with(prefix))
}

/// Jumps from the built-in chains that `saved` lacks (a partial sync,
/// without `saved`, trusts the last full one).
fn missing_jumps(input: &mut RestoreInput, saved: Option<&Saved>, table: &str) {
    let Some(saved) = saved else { return };
    for (t, builtin, chain, matches, comment) in JUMPS {
        if t == table && saved.jumps(table, builtin, chain).is_empty() {
            input.line(rules::jump_rule(builtin, chain, matches, comment));
        }
    }
}

/// Deletes every jump to a proxy chain, then every proxy chain.
fn cleanup_input(saved: &Saved) -> String {
    let mut input = RestoreInput::default();
    for table in ["nat", "filter"] {
        input.table(table);
        let ours: Vec<&str> = saved
            .chains(table)
            .filter(|c| is_per_service(c) || [SERVICES, EXTERNAL_SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ, FORWARD].contains(c))
            .collect();
        for (t, builtin, chain, _, _) in JUMPS {
            if t == table {
                for jump in saved.jumps(table, builtin, chain) {
                    input.line(format!("-D{}", jump.strip_prefix("-A").expect("saved rules start with -A")));
                }
            }
        }
        for chain in &ours {
            input.chain(chain);
        }
        for chain in &ours {
            input.line(format!("-X {chain}"));
        }
        input.commit();
    }
    input.into_string()
}

/// The per-service chains `port` needs (for tests that compare the kernel
/// with the wanted state).
pub fn chains_of(port: &ServicePort, cluster_cidr: Ipv4Network) -> Vec<(String, Vec<String>)> {
    rules::port_rules(port, cluster_cidr, true).chains
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::state::{Endpoint, Protocol, ServicePortName};
    use std::net::Ipv4Addr;

    fn cidr() -> Ipv4Network {
        "10.244.0.0/16".parse().unwrap()
    }

    fn state(services: &[(&str, u8)]) -> ProxyState {
        let mut state = ProxyState::default();
        for (i, (name, endpoints)) in services.iter().enumerate() {
            let key = ObjectKey::new("default", *name);
            let port = ServicePort {
                name: ServicePortName { service: key.clone(), port: String::new(), protocol: Protocol::Tcp },
                cluster_ip: Ipv4Addr::new(10, 96, 0, 10 + i as u8),
                port: 80,
                node_port: None,
                external_local: false,
                internal_local: false,
                health_check_node_port: None,
                affinity_timeout: None,
                endpoints: (0..*endpoints)
                    .map(|e| Endpoint {
                        ip: Ipv4Addr::new(10, 244, i as u8, e + 2),
                        port: 8080,
                        local: false,
                        ready: true,
                        serving: true,
                        terminating: false,
                    })
                    .collect(),
            };
            state.set(key, vec![port]);
        }
        state
    }

    fn changes(full: bool, keys: &[&str]) -> Changes {
        Changes { full, services: keys.iter().map(|k| ObjectKey::new("default", *k)).collect() }
    }

    fn declared(input: &str) -> Vec<&str> {
        input.lines().filter_map(|l| l.strip_prefix(':')).map(|l| l.split(' ').next().unwrap()).collect()
    }

    #[test]
    fn a_partial_sync_rewrites_only_the_changed_services_chains_and_deletes_its_stale_ones() {
        let before = state(&[("a", 2), ("b", 2)]);
        let first = plan(&before, &changes(true, &[]), &HashMap::new(), Some(&Saved::default()), cidr());
        let a_chains = first.written[&ObjectKey::new("default", "a")].clone();
        assert_eq!(a_chains.len(), 3, "SVC and two SEPs: {a_chains:?}");
        // Jumps go in on a fresh host.
        assert!(first.input.as_str().contains("-I PREROUTING 1 -m comment --comment \"hawser service portals\" -j HAWSER-SERVICES"));
        assert!(first.input.as_str().contains("-I INPUT 1 -m conntrack --ctstate NEW -m comment"));

        // b loses an endpoint: only b's chains are declared, its old SEP deleted.
        let after = state(&[("a", 2), ("b", 1)]);
        let second = plan(&after, &changes(false, &["b"]), &first.written, None, cidr());
        let text = second.input.as_str();
        let declared = declared(text);
        assert!(a_chains.iter().all(|c| !declared.contains(&c.as_str())), "a is untouched: {text}");
        let b_before = &first.written[&ObjectKey::new("default", "b")];
        let b_after = &second.written[&ObjectKey::new("default", "b")];
        let gone: Vec<&String> = b_before.difference(b_after).collect();
        assert_eq!(gone.len(), 1);
        assert!(text.contains(&format!("-X {}", gone[0])));
        assert!(!text.contains("-I "), "a partial sync adds no jumps");
        // The top-level chains still list every service.
        assert_eq!(text.lines().filter(|l| l.starts_with("-A HAWSER-SERVICES -d")).count(), 2);
        assert!(text.lines().rfind(|l| l.starts_with("-A HAWSER-SERVICES")).unwrap().contains("HAWSER-NODEPORTS"));
    }

    #[test]
    fn a_deleted_service_loses_all_its_chains() {
        let before = state(&[("a", 2)]);
        let first = plan(&before, &changes(true, &[]), &HashMap::new(), Some(&Saved::default()), cidr());
        let second = plan(&ProxyState::default(), &changes(false, &["a"]), &first.written, None, cidr());
        for chain in &first.written[&ObjectKey::new("default", "a")] {
            assert!(second.input.as_str().contains(&format!("-X {chain}\n")), "{chain}");
        }
        assert!(second.written.is_empty());
    }

    #[test]
    fn a_full_sync_keeps_chains_the_kernel_holds_unchanged_and_deletes_leftovers() {
        let desired = state(&[("a", 2)]);
        let first = plan(&desired, &changes(true, &[]), &HashMap::new(), Some(&Saved::default()), cidr());
        // The kernel as iptables-save would print it after the first sync,
        // plus a chain of a service that is gone and the jumps.
        let mut kernel = String::from("*nat\n");
        for line in first.input.as_str().lines().take_while(|l| *l != "COMMIT") {
            if line.starts_with(':') || line.starts_with("-A ") {
                kernel += &format!("{line}\n");
            } else if let Some(jump) = line.strip_prefix("-I ") {
                let (chain, rest) = jump.split_once(" 1 ").unwrap();
                kernel += &format!("-A {chain} {rest}\n");
            }
        }
        kernel += ":HAWSER-SEP-LEFTOVER0000000 - [0:0]\nCOMMIT\n";
        let saved = Saved::parse(&kernel);
        let again = plan(&desired, &changes(true, &[]), &HashMap::new(), Some(&saved), cidr());
        let text = again.input.as_str();
        assert!(declared(text).iter().all(|c| !c.starts_with("HAWSER-SVC-")), "nothing to rewrite: {text}");
        assert!(text.contains("-X HAWSER-SEP-LEFTOVER0000000\n"));
        assert!(!text.split("*filter").next().unwrap().contains("-I "), "the nat jumps are there: {text}");
        assert_eq!(again.written, first.written);
    }

    #[test]
    fn cleanup_removes_jumps_then_chains_and_leaves_the_pod_network_alone() {
        let saved = Saved::parse(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:HAWSER-SERVICES - [0:0]\n:HAWSER-SVC-AAAA - [0:0]\n:HAWSER-POD-EGRESS - [0:0]\n\
             -A PREROUTING -m comment --comment \"hawser service portals\" -j HAWSER-SERVICES\nCOMMIT\n",
        );
        let input = cleanup_input(&saved);
        assert!(input.contains("-D PREROUTING -m comment --comment \"hawser service portals\" -j HAWSER-SERVICES\n"));
        assert!(input.contains("-X HAWSER-SERVICES\n") && input.contains("-X HAWSER-SVC-AAAA\n"));
        assert!(!input.contains("HAWSER-POD-EGRESS"));
    }
}

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
use std::collections::{BTreeSet, HashMap};

pub struct IptablesProxier {
    backend: Backend,
    cluster_cidr: Ipv4Network,
    /// The per-service chains in the kernel, by Service, as last written.
    written: HashMap<ObjectKey, BTreeSet<String>>,
    /// Whether the tools are iptables-nft (asked once, at the first sync).
    nft: Option<bool>,
}

/// How many per-service chains one input may declare on iptables-nft,
/// whose restore time grows with the square of the chains one input
/// declares (10,000 services × 10 endpoints in one input: over ten
/// minutes; in batches of this size: about ten seconds).
const NFT_CHAIN_BATCH: usize = 1000;

impl IptablesProxier {
    pub fn new(backend: Backend, cluster_cidr: Ipv4Network) -> Self {
        Self { backend, cluster_cidr, written: HashMap::new(), nft: None }
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
        if self.nft.is_none() {
            self.nft = Some(iptables::is_nft(self.backend).await);
        }
        let batch = if self.nft == Some(true) { Some(NFT_CHAIN_BATCH) } else { None };
        for input in plan.inputs(batch) {
            iptables::restore(self.backend, &input, "syncing the service proxy's rules").await?;
        }
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

/// One sync: what to write, and the per-service chains it leaves, by
/// Service (for every Service on a full sync, the changed ones otherwise).
struct Plan {
    /// The per-service chains to (re)write with their rules, grouped by
    /// Service (a Service's chains are never split between inputs).
    chains: Vec<Vec<(String, Vec<String>)>>,
    /// Per-service chains to empty and delete.
    stale: BTreeSet<String>,
    /// The rules of the top-level nat chains, in order.
    nat: Vec<String>,
    filter: Vec<String>,
    /// Jumps from built-in chains to add, by table.
    nat_jumps: Vec<String>,
    filter_jumps: Vec<String>,
    written: HashMap<ObjectKey, BTreeSet<String>>,
}

impl Plan {
    /// The restore inputs: normally one. With `batch`, when the chains to
    /// write exceed it, the per-service chains go first in inputs of at
    /// most `batch` chains (each Service's chains whole in one input: a
    /// changed Service switches at once, a new one is unreferenced, so
    /// unused, until the last input), and the last input rewrites the
    /// top-level chains that reference them and deletes stale chains.
    fn inputs(&self, batch: Option<usize>) -> Vec<String> {
        let count: usize = self.chains.iter().map(Vec::len).sum();
        let mut inputs = Vec::new();
        let mut inline: &[Vec<(String, Vec<String>)>] = &self.chains;
        if let Some(batch) = batch.filter(|&b| count > b) {
            let mut input = RestoreInput::default();
            let mut in_input = 0;
            for service in &self.chains {
                if in_input > 0 && in_input + service.len() > batch {
                    inputs.push(std::mem::take(&mut input).commit_chains());
                    in_input = 0;
                }
                if in_input == 0 {
                    // Per-service chains jump to the mark chain, which a
                    // cleaned-up table lacks: declared and refilled here
                    // in one commit, so it is never empty for traffic.
                    input.table("nat").chain(MARK_MASQ);
                    for rule in rules::mark_masq_rules() {
                        input.line(rule);
                    }
                }
                for (chain, _) in service {
                    input.chain(chain);
                }
                for (_, rules) in service {
                    for rule in rules {
                        input.line(rule);
                    }
                }
                in_input += service.len();
            }
            if in_input > 0 {
                inputs.push(input.commit_chains());
            }
            inline = &[];
        }
        let mut input = RestoreInput::default();
        input.table("nat");
        for chain in [SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ] {
            input.chain(chain);
        }
        for (chain, _) in inline.iter().flatten() {
            input.chain(chain);
        }
        for chain in &self.stale {
            input.chain(chain);
        }
        for line in &self.nat {
            input.line(line);
        }
        for (_, rules) in inline.iter().flatten() {
            for rule in rules {
                input.line(rule);
            }
        }
        for chain in &self.stale {
            input.line(format!("-X {chain}"));
        }
        for jump in &self.nat_jumps {
            input.line(jump);
        }
        input.commit();
        input.table("filter");
        for chain in [SERVICES, EXTERNAL_SERVICES, FORWARD] {
            input.chain(chain);
        }
        for line in self.filter.iter().chain(&self.filter_jumps) {
            input.line(line);
        }
        input.commit();
        inputs.push(input.into_string());
        inputs
    }
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
    // The chains to (re)write with their rules, by Service.
    let mut chains: Vec<Vec<(String, Vec<String>)>> = Vec::new();
    let mut now_written: HashMap<ObjectKey, BTreeSet<String>> = HashMap::new();
    let kernel = saved.and_then(|saved| saved.tables.get("nat"));
    for (key, ports) in &state.services {
        let rewrite = changes.full || changes.services.contains(key);
        let mut own = Vec::new();
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
                    // A full sync leaves alone the chains the kernel
                    // already holds as wanted.
                    if kernel.and_then(|k| k.get(&chain)) != Some(&rules) {
                        own.push((chain, rules));
                    }
                }
            }
        }
        if !own.is_empty() {
            chains.push(own);
        }
    }

    // Chains that are no longer wanted: on a full sync every per-service
    // chain in the kernel not wanted now; otherwise the changed services'.
    let wanted: BTreeSet<&str> = now_written.values().flatten().map(String::as_str).collect();
    let stale: BTreeSet<String> = match saved {
        Some(saved) => saved.chains("nat").filter(|c| is_per_service(c) && !wanted.contains(c)).map(str::to_string).collect(),
        None => {
            changes.services.iter().filter_map(|key| written.get(key)).flatten().filter(|c| !wanted.contains(c.as_str())).cloned().collect()
        }
    };

    let mut nat: Vec<String> = rules::postrouting_rules();
    nat.extend(rules::mark_masq_rules());
    nat.extend(services);
    nat.push(rules::nodeports_jump());
    nat.extend(nodeports);
    let mut filter = filter_services;
    filter.extend(filter_external);
    filter.extend(rules::forward_rules());
    Plan {
        chains,
        stale,
        nat,
        filter,
        nat_jumps: missing_jumps(saved, "nat"),
        filter_jumps: missing_jumps(saved, "filter"),
        written: now_written,
    }
}

fn is_per_service(chain: &str) -> bool {
    PER_SERVICE_PREFIXES.iter().any(|prefix| chain.starts_with(prefix))
}

/// Jumps from the built-in chains that `saved` lacks (a partial sync,
/// without `saved`, trusts the last full one).
fn missing_jumps(saved: Option<&Saved>, table: &str) -> Vec<String> {
    let Some(saved) = saved else { return Vec::new() };
    JUMPS
        .iter()
        .filter(|(t, builtin, chain, _, _)| *t == table && saved.jumps(table, builtin, chain).is_empty())
        .map(|(_, builtin, chain, matches, comment)| rules::jump_rule(builtin, chain, matches, comment))
        .collect()
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
    use crate::proxy::state::{Endpoint, Protocol};
    use std::net::Ipv4Addr;

    fn cidr() -> Ipv4Network {
        "10.244.0.0/16".parse().unwrap()
    }

    fn state(services: &[(&str, u8)]) -> ProxyState {
        let mut state = ProxyState::default();
        for (i, (name, endpoints)) in services.iter().enumerate() {
            let key = ObjectKey::new("default", *name);
            let endpoints = (0..*endpoints)
                .map(|e| Endpoint {
                    ip: Ipv4Addr::new(10, 244, i as u8, e + 2),
                    port: 8080,
                    local: false,
                    ready: true,
                    serving: true,
                    terminating: false,
                })
                .collect();
            let port = ServicePort::for_test(name, "", Protocol::Tcp, Ipv4Addr::new(10, 96, 0, 10 + i as u8), 80, endpoints);
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
        assert!(first.inputs(None)[0].contains("-I PREROUTING 1 -m comment --comment \"hawser service portals\" -j HAWSER-SERVICES"));
        assert!(first.inputs(None)[0].contains("-I INPUT 1 -m conntrack --ctstate NEW -m comment"));

        // b loses an endpoint: only b's chains are declared, its old SEP deleted.
        let after = state(&[("a", 2), ("b", 1)]);
        let second = plan(&after, &changes(false, &["b"]), &first.written, None, cidr());
        let inputs = second.inputs(None);
        let text = inputs[0].as_str();
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
            assert!(second.inputs(None)[0].contains(&format!("-X {chain}\n")), "{chain}");
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
        for line in first.inputs(None)[0].lines().take_while(|l| *l != "COMMIT") {
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
        let inputs = again.inputs(None);
        let text = inputs[0].as_str();
        assert!(declared(text).iter().all(|c| !c.starts_with("HAWSER-SVC-")), "nothing to rewrite: {text}");
        assert!(text.contains("-X HAWSER-SEP-LEFTOVER0000000\n"));
        assert!(!text.split("*filter").next().unwrap().contains("-I "), "the nat jumps are there: {text}");
        assert_eq!(again.written, first.written);
    }

    #[test]
    fn on_nft_many_chains_go_first_in_bounded_inputs_each_service_whole() {
        let desired = state(&[("a", 3), ("b", 3), ("c", 3)]);
        let plan = plan(&desired, &changes(true, &[]), &HashMap::new(), Some(&Saved::default()), cidr());
        assert_eq!(plan.inputs(Some(100)).len(), 1, "under the batch: one input");
        let inputs = plan.inputs(Some(5));
        // 4 chains per service (SVC and 3 SEPs): one service per input, then the last.
        assert_eq!(inputs.len(), 4, "{inputs:#?}");
        for (input, service) in inputs.iter().zip(["a", "b", "c"]) {
            assert_eq!(declared(input).len(), 5, "{input}");
            assert!(input.contains(":HAWSER-MARK-MASQ - [0:0]\n-A HAWSER-MARK-MASQ -j MARK"), "what SEP chains jump to exists: {input}");
            assert!(input.contains(&format!("default/{service}")) && !input.contains("HAWSER-SERVICES"), "{input}");
            assert!(input.ends_with("COMMIT\n"));
        }
        let last = &inputs[3];
        assert!(declared(last).iter().all(|c| !is_per_service(c)), "the last input only rewrites the top-level chains: {last}");
        assert_eq!(last.lines().filter(|l| l.starts_with("-A HAWSER-SERVICES -d")).count(), 3);
        let per_service = |text: &str| declared(text).into_iter().filter(|c| is_per_service(c)).count();
        assert_eq!(per_service(&inputs.concat()), per_service(&plan.inputs(None)[0]), "the same chains, only split");
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

//! The cluster zone: the records the Kubernetes DNS-based service discovery
//! specification asks for, built from Services and their EndpointSlices
//! (no I/O), and looked up per query.
//!
//! Per Service `<svc>` in namespace `<ns>` under the cluster domain `<zone>`:
//! - with a cluster IP: `<svc>.<ns>.svc.<zone>` A → the cluster IP, and for
//!   each named port `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV → that
//!   name; PTR for the cluster IP;
//! - headless: one A per ready endpoint at the service name, each endpoint
//!   also at `<hostname>.<svc>.<ns>.svc.<zone>` (its hostname, else its
//!   address with dashes, as CoreDNS names it), one SRV per ready endpoint
//!   and named port; PTR for endpoints that have a hostname;
//! - ExternalName: `<svc>.<ns>.svc.<zone>` CNAME → the external name.
//!
//! A name exists when it owns records or a name below it does (an empty
//! non-terminal such as `<ns>.svc.<zone>`): asking it for a type it lacks is
//! NOERROR with no answer, anything else under the zone is NXDOMAIN.

use super::names;
use crate::proxy::state::Protocol;
use hawser_runtime::ObjectKey;
use hickory_server::proto::rr::rdata::{A, CNAME, PTR, SOA, SRV, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// The schema version `dns-version.<zone>` TXT announces (the spec's).
pub const SCHEMA_VERSION: &str = "1.1.0";

/// What the zone says about one question.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Records of the asked type (or a CNAME for any type); `additionals`
    /// are the A records of SRV targets.
    Records { answers: Vec<Record>, additionals: Vec<Record> },
    /// The name is an alias to a name outside the zone: the caller resolves
    /// `target` and answers with the CNAME first.
    Alias { cname: Box<Record>, target: Name },
    /// The name exists without records of that type.
    NoData,
    /// Nothing by that name in the zone.
    NxDomain,
    /// Not a name this zone answers for (forward it).
    NotOurs,
}

/// The cluster zone's records, by owner name.
pub struct Zone {
    domain: LowerName,
    reverse: LowerName,
    ttl: u32,
    soa: Record,
    /// Record sets by owner (several owners may share a name only for PTRs:
    /// a pod behind two headless services).
    records: HashMap<LowerName, Vec<Record>>,
    /// How many owned names lie strictly below each name, up to the apex:
    /// those names exist with no records of their own.
    descendants: HashMap<LowerName, usize>,
    /// What each Service put in, to take it out again on a change.
    by_service: HashMap<ObjectKey, Vec<Record>>,
}

impl Zone {
    /// An empty zone for `domain` (e.g. `cluster.local`), whose records live
    /// `ttl` seconds in caches (negative answers too).
    pub fn new(domain: &str, ttl: u32) -> Result<Self, String> {
        let domain = names::fqdn(domain).map_err(|e| format!("cluster domain {domain:?}: {e}"))?;
        let soa = Record::from_rdata(
            domain.clone(),
            ttl,
            RData::SOA(SOA::new(
                names::child(&domain, &["ns", "dns"])?,
                names::child(&domain, &["hostmaster"])?,
                1,
                7200,
                1800,
                86400,
                ttl,
            )),
        );
        let mut zone = Zone {
            domain: LowerName::new(&domain),
            reverse: LowerName::new(&names::fqdn("in-addr.arpa").expect("a valid name")),
            ttl,
            soa,
            records: HashMap::new(),
            descendants: HashMap::new(),
            by_service: HashMap::new(),
        };
        let version =
            Record::from_rdata(names::child(&domain, &["dns-version"])?, ttl, RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])));
        zone.insert(version);
        zone.insert(zone.soa.clone());
        Ok(zone)
    }

    /// The zone's SOA: what negative answers carry in their authority section.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// The names `service` owns now, from `slices` (its EndpointSlices);
    /// replaces whatever it owned before. `None` (deleted) removes them.
    pub fn set_service<'a>(&mut self, key: &ObjectKey, service: Option<&Service>, slices: impl IntoIterator<Item = &'a EndpointSlice>) {
        for record in self.by_service.remove(key).unwrap_or_default() {
            self.remove(&record);
        }
        let Some(service) = service else { return };
        let records = match service_records(&self.domain, self.ttl, service, slices) {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(service = %key, error = e, "the service has no DNS records");
                return;
            }
        };
        for record in &records {
            self.insert(record.clone());
        }
        self.by_service.insert(key.clone(), records);
    }

    /// The answer to `name` `qtype`.
    pub fn lookup(&self, name: &LowerName, qtype: RecordType) -> Answer {
        let in_forward = self.domain.zone_of(name);
        if !in_forward && !self.reverse.zone_of(name) {
            return Answer::NotOurs;
        }
        let Some(set) = self.records.get(name) else {
            if in_forward && self.descendants.contains_key(name) {
                return Answer::NoData;
            }
            // Reverse names we hold nothing for are other servers' to answer.
            return if in_forward { Answer::NxDomain } else { Answer::NotOurs };
        };
        let original = Name::from(name.clone());
        let with_owner = |r: &Record| {
            let mut r = r.clone();
            r.name = original.clone();
            r
        };
        if let Some(alias) = set.iter().find(|r| r.record_type() == RecordType::CNAME)
            && qtype != RecordType::CNAME
        {
            let RData::CNAME(CNAME(target)) = &alias.data else { unreachable!("a CNAME record holds CNAME data") };
            let cname = with_owner(alias);
            let target_lower = LowerName::new(target);
            if self.domain.zone_of(&target_lower) {
                return match self.lookup(&target_lower, qtype) {
                    Answer::Records { mut answers, additionals } => {
                        answers.insert(0, cname);
                        Answer::Records { answers, additionals }
                    }
                    _ => Answer::Records { answers: vec![cname], additionals: Vec::new() },
                };
            }
            return Answer::Alias { cname: Box::new(cname), target: target.clone() };
        }
        let answers: Vec<Record> = set.iter().filter(|r| qtype == RecordType::ANY || r.record_type() == qtype).map(with_owner).collect();
        if answers.is_empty() {
            return Answer::NoData;
        }
        let additionals = answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(LowerName::new(&srv.target)),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .flat_map(|target| self.records.get(&target).into_iter().flatten().filter(|r| r.record_type() == RecordType::A).cloned())
            .collect();
        Answer::Records { answers, additionals }
    }

    /// How many Services have records (for the log).
    pub fn services(&self) -> usize {
        self.by_service.len()
    }

    fn insert(&mut self, record: Record) {
        let owner = LowerName::new(&record.name);
        let set = self.records.entry(owner.clone()).or_default();
        set.push(record);
        if set.len() == 1 {
            for ancestor in self.ancestors(&owner) {
                *self.descendants.entry(ancestor).or_default() += 1;
            }
        }
    }

    fn remove(&mut self, record: &Record) {
        let owner = LowerName::new(&record.name);
        let Some(set) = self.records.get_mut(&owner) else { return };
        if let Some(at) = set.iter().position(|r| r == record) {
            set.remove(at);
        }
        if set.is_empty() {
            self.records.remove(&owner);
            for ancestor in self.ancestors(&owner) {
                if let Some(count) = self.descendants.get_mut(&ancestor) {
                    *count -= 1;
                    if *count == 0 {
                        self.descendants.remove(&ancestor);
                    }
                }
            }
        }
    }

    /// The names strictly between `owner` and its zone's apex, the apex included.
    fn ancestors(&self, owner: &LowerName) -> Vec<LowerName> {
        let apex = if self.domain.zone_of(owner) { &self.domain } else { &self.reverse };
        let mut out = Vec::new();
        let mut name = owner.base_name();
        while name.num_labels() >= apex.num_labels() && apex.zone_of(&name) {
            out.push(name.clone());
            if name.num_labels() == 0 {
                break;
            }
            name = name.base_name();
        }
        out
    }
}

/// The records the spec gives `service`, owned under `domain`.
fn service_records<'a>(
    domain: &LowerName,
    ttl: u32,
    service: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Result<Vec<Record>, String> {
    let key = ObjectKey::of(service);
    let Some(spec) = &service.spec else { return Ok(Vec::new()) };
    let domain = Name::from(domain.clone());
    let service_name = names::child(&domain, &[&key.name, &key.namespace, "svc"])?;
    let mut records = Vec::new();
    if spec.type_.as_deref() == Some("ExternalName") {
        let Some(external) = spec.external_name.as_deref().filter(|n| !n.is_empty()) else { return Ok(records) };
        let target = names::fqdn(external).map_err(|e| format!("externalName {external:?}: {e}"))?;
        records.push(Record::from_rdata(service_name, ttl, RData::CNAME(CNAME(target))));
        return Ok(records);
    }
    let named_ports: Vec<(String, Protocol)> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone().filter(|n| !n.is_empty())?, Protocol::parse(p.protocol.as_deref())?)))
        .collect();
    let cluster_ip = spec.cluster_ip.as_deref().filter(|ip| *ip != "None").and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    if let Some(ip) = cluster_ip {
        records.push(Record::from_rdata(service_name.clone(), ttl, RData::A(A(ip))));
        records.push(Record::from_rdata(names::reverse(ip), ttl, RData::PTR(PTR(service_name.clone()))));
        for (port_name, protocol) in &named_ports {
            let Some(port) = spec.ports.iter().flatten().find(|p| p.name.as_deref() == Some(port_name.as_str())) else { continue };
            let owner = srv_owner(&service_name, port_name, *protocol)?;
            records.push(Record::from_rdata(owner, ttl, RData::SRV(SRV::new(0, 100, port.port as u16, service_name.clone()))));
        }
        return Ok(records);
    }
    if spec.cluster_ip.as_deref() != Some("None") {
        return Ok(records); // No address allocated yet.
    }
    // Headless: every ready endpoint, once per address.
    let mut endpoints: Vec<HeadlessEndpoint> = Vec::new();
    for slice in slices.into_iter().filter(|s| s.address_type == "IPv4") {
        for endpoint in &slice.endpoints {
            if !endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true) {
                continue;
            }
            let Some(ip) = endpoint.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else { continue };
            let ports: Vec<(String, Protocol, u16)> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some((p.name.clone().filter(|n| !n.is_empty())?, Protocol::parse(p.protocol.as_deref())?, u16::try_from(p.port?).ok()?))
                })
                .collect();
            match endpoints.iter_mut().find(|e| e.ip == ip) {
                Some(known) => known.ports.extend_from_slice(&ports),
                None => endpoints.push(HeadlessEndpoint { ip, hostname: endpoint.hostname.clone(), ports }),
            }
        }
    }
    endpoints.sort_by_key(|e| e.ip);
    let weight = (100 / endpoints.len().max(1)).max(1) as u16;
    for endpoint in &endpoints {
        let label = endpoint.hostname.clone().unwrap_or_else(|| endpoint.ip.to_string().replace('.', "-"));
        let host = service_name.prepend_label(label.as_str()).map_err(|e| format!("endpoint hostname {label:?}: {e}"))?;
        records.push(Record::from_rdata(service_name.clone(), ttl, RData::A(A(endpoint.ip))));
        records.push(Record::from_rdata(host.clone(), ttl, RData::A(A(endpoint.ip))));
        if endpoint.hostname.is_some() {
            records.push(Record::from_rdata(names::reverse(endpoint.ip), ttl, RData::PTR(PTR(host.clone()))));
        }
        for (port_name, protocol) in &named_ports {
            let Some((_, _, port)) = endpoint.ports.iter().find(|(n, p, _)| n == port_name && p == protocol) else { continue };
            let owner = srv_owner(&service_name, port_name, *protocol)?;
            records.push(Record::from_rdata(owner, ttl, RData::SRV(SRV::new(0, weight, *port, host.clone()))));
        }
    }
    Ok(records)
}

struct HeadlessEndpoint {
    ip: Ipv4Addr,
    hostname: Option<String>,
    /// Named ports: name, protocol, port.
    ports: Vec<(String, Protocol, u16)>,
}

/// `_<port>._<proto>.<service name>`.
fn srv_owner(service_name: &Name, port: &str, protocol: Protocol) -> Result<Name, String> {
    service_name
        .prepend_label(format!("_{}", protocol.as_str()))
        .and_then(|n| n.prepend_label(format!("_{port}")))
        .map_err(|e| format!("port name {port:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Zone {
        Zone::new("cluster.local", 5).unwrap()
    }

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    fn name(text: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(text).unwrap())
    }

    fn data(answer: &Answer) -> Vec<String> {
        match answer {
            Answer::Records { answers, .. } => answers.iter().map(|r| format!("{} {}", r.name, r.data)).collect(),
            other => vec![format!("{other:?}")],
        }
    }

    fn web() -> Service {
        service(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.3.4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}}))
    }

    fn headless() -> (Service, EndpointSlice) {
        let svc = service(json!({"metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}}));
        let slice = slice(json!({"metadata": {"name": "db-x", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4", "ports": [{"name": "pg", "port": 6432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.7"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.2.9"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.10"], "conditions": {"ready": false}}]}));
        (svc, slice)
    }

    #[test]
    fn a_cluster_ip_service_has_its_address_srv_for_named_ports_and_a_ptr() {
        let mut zone = zone();
        zone.set_service(&ObjectKey::new("default", "web"), Some(&web()), []);
        assert_eq!(
            data(&zone.lookup(&name("web.default.svc.cluster.local."), RecordType::A)),
            ["web.default.svc.cluster.local. 10.96.3.4"]
        );
        assert_eq!(
            data(&zone.lookup(&name("_http._tcp.web.default.svc.cluster.local."), RecordType::SRV)),
            ["_http._tcp.web.default.svc.cluster.local. 0 100 80 web.default.svc.cluster.local."]
        );
        let Answer::Records { additionals, .. } = zone.lookup(&name("_http._tcp.web.default.svc.cluster.local."), RecordType::SRV) else {
            panic!()
        };
        assert_eq!(additionals.len(), 1, "the SRV target's address comes along");
        assert_eq!(
            data(&zone.lookup(&name("4.3.96.10.in-addr.arpa."), RecordType::PTR)),
            ["4.3.96.10.in-addr.arpa. web.default.svc.cluster.local."]
        );
    }

    #[test]
    fn existing_names_without_the_type_are_nodata_and_others_nxdomain() {
        let mut zone = zone();
        zone.set_service(&ObjectKey::new("default", "web"), Some(&web()), []);
        for existing in
            ["web.default.svc.cluster.local.", "default.svc.cluster.local.", "svc.cluster.local.", "_tcp.web.default.svc.cluster.local."]
        {
            assert_eq!(zone.lookup(&name(existing), RecordType::TXT), Answer::NoData, "{existing}");
        }
        assert_eq!(zone.lookup(&name("web.default.svc.cluster.local."), RecordType::AAAA), Answer::NoData);
        assert_eq!(zone.lookup(&name("nope.default.svc.cluster.local."), RecordType::A), Answer::NxDomain);
        assert_eq!(zone.lookup(&name("other.svc.cluster.local."), RecordType::A), Answer::NxDomain);
        assert_eq!(zone.lookup(&name("example.com."), RecordType::A), Answer::NotOurs);
        assert_eq!(zone.lookup(&name("1.1.168.192.in-addr.arpa."), RecordType::PTR), Answer::NotOurs);
        assert_eq!(data(&zone.lookup(&name("dns-version.cluster.local."), RecordType::TXT)), ["dns-version.cluster.local. 1.1.0"]);
    }

    #[test]
    fn removing_a_service_removes_its_names_and_the_empty_ones_above() {
        let mut zone = zone();
        let key = ObjectKey::new("default", "web");
        zone.set_service(&key, Some(&web()), []);
        zone.set_service(&key, None, []);
        assert_eq!(zone.lookup(&name("web.default.svc.cluster.local."), RecordType::A), Answer::NxDomain);
        assert_eq!(zone.lookup(&name("default.svc.cluster.local."), RecordType::A), Answer::NxDomain);
        assert_eq!(zone.lookup(&name("4.3.96.10.in-addr.arpa."), RecordType::PTR), Answer::NotOurs);
        assert_eq!(zone.records.len(), 2, "the SOA and the version record remain");
    }

    #[test]
    fn a_headless_service_lists_ready_endpoints_by_hostname_or_address() {
        let mut zone = zone();
        let (svc, slice) = headless();
        zone.set_service(&ObjectKey::new("shop", "db"), Some(&svc), [&slice]);
        let mut all = data(&zone.lookup(&name("db.shop.svc.cluster.local."), RecordType::A));
        all.sort();
        assert_eq!(all, ["db.shop.svc.cluster.local. 10.244.1.7", "db.shop.svc.cluster.local. 10.244.2.9"]);
        assert_eq!(
            data(&zone.lookup(&name("db-0.db.shop.svc.cluster.local."), RecordType::A)),
            ["db-0.db.shop.svc.cluster.local. 10.244.1.7"]
        );
        assert_eq!(
            data(&zone.lookup(&name("10-244-2-9.db.shop.svc.cluster.local."), RecordType::A)),
            ["10-244-2-9.db.shop.svc.cluster.local. 10.244.2.9"]
        );
        let mut srv = data(&zone.lookup(&name("_pg._tcp.db.shop.svc.cluster.local."), RecordType::SRV));
        srv.sort();
        assert_eq!(
            srv,
            [
                "_pg._tcp.db.shop.svc.cluster.local. 0 50 6432 10-244-2-9.db.shop.svc.cluster.local.",
                "_pg._tcp.db.shop.svc.cluster.local. 0 50 6432 db-0.db.shop.svc.cluster.local."
            ]
        );
        assert_eq!(
            data(&zone.lookup(&name("7.1.244.10.in-addr.arpa."), RecordType::PTR)),
            ["7.1.244.10.in-addr.arpa. db-0.db.shop.svc.cluster.local."]
        );
        assert_eq!(zone.lookup(&name("9.2.244.10.in-addr.arpa."), RecordType::PTR), Answer::NotOurs, "no hostname, no PTR");
        assert_eq!(zone.lookup(&name("10-244-2-10.db.shop.svc.cluster.local."), RecordType::A), Answer::NxDomain, "not ready");
    }

    #[test]
    fn an_external_name_is_an_alias() {
        let mut zone = zone();
        let svc = service(json!({"metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "db.example.test"}}));
        zone.set_service(&ObjectKey::new("default", "ext"), Some(&svc), []);
        let Answer::Alias { cname, target } = zone.lookup(&name("ext.default.svc.cluster.local."), RecordType::A) else { panic!() };
        assert_eq!(target.to_string(), "db.example.test.");
        assert_eq!(cname.to_string(), "ext.default.svc.cluster.local. 5 IN CNAME db.example.test.");
        assert_eq!(
            data(&zone.lookup(&name("ext.default.svc.cluster.local."), RecordType::CNAME)),
            ["ext.default.svc.cluster.local. db.example.test."]
        );
    }

    #[test]
    fn names_match_whatever_their_case() {
        let mut zone = zone();
        zone.set_service(&ObjectKey::new("default", "web"), Some(&web()), []);
        let asked = LowerName::new(&Name::from_ascii("WEB.Default.svc.cluster.local.").unwrap());
        let Answer::Records { answers, .. } = zone.lookup(&asked, RecordType::A) else { panic!() };
        assert_eq!(answers[0].data, RData::A(A(Ipv4Addr::new(10, 96, 3, 4))));
    }
}

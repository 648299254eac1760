//! Names outside the cluster: forwarded to the node's own resolvers (the
//! `nameserver` lines of its resolv.conf) by hickory-resolver, over UDP and
//! again over TCP when an answer comes back truncated, and kept in a cache
//! that honours each answer's TTL, negative answers for their SOA's
//! negative TTL (RFC 2308).

use super::metrics::Metrics;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{LowerName, Name, Record, RecordType};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many answers the cache holds at most.
const CACHE_ENTRIES: usize = 10_000;
/// The longest an answer is kept, whatever its TTL (CoreDNS' cache: 1 h).
const MAX_TTL: u32 = 3600;

/// An upstream answer.
#[derive(Clone, Debug)]
pub struct Forwarded {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    /// The SOA of a negative answer.
    pub authorities: Vec<Record>,
}

struct Cached {
    answer: Forwarded,
    stored: Instant,
    ttl: u32,
}

/// The node's resolvers behind a cache.
pub struct Upstream {
    resolver: Option<TokioResolver>,
    cache: Mutex<HashMap<(LowerName, RecordType), Cached>>,
    metrics: Arc<Metrics>,
}

impl Upstream {
    /// Forwards to the `nameserver`s of `resolv_conf` (the node's
    /// resolv.conf text) but those in `ours` (our own addresses: a node
    /// whose resolv.conf names the node-local server would loop). Without
    /// any, every forwarded name is SERVFAIL.
    pub fn new(resolv_conf: &str, ours: &[IpAddr], metrics: Arc<Metrics>) -> Self {
        let (looping, servers): (Vec<IpAddr>, Vec<IpAddr>) = nameservers(resolv_conf).into_iter().partition(|s| ours.contains(s));
        if !looping.is_empty() {
            tracing::warn!(?looping, "the node's resolv.conf names this DNS server; not forwarding to itself");
        }
        if servers.is_empty() {
            tracing::warn!("the node's resolv.conf names no other DNS server: names outside the cluster get SERVFAIL");
        }
        let resolver = (!servers.is_empty()).then(|| {
            let config = ResolverConfig::from_name_servers(servers.iter().map(|ip| NameServerConfig::udp_and_tcp(*ip)).collect());
            let mut options = ResolverOpts::default();
            // Our own cache sits in front (it also counts hits).
            options.cache_size = 0;
            options.preserve_intermediates = true;
            options.use_hosts_file = ResolveHosts::Never;
            options.ndots = 0;
            options.timeout = Duration::from_secs(2);
            options.attempts = 2;
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .expect("a resolver over explicit name servers builds")
        });
        Upstream { resolver, cache: Mutex::new(HashMap::new()), metrics }
    }

    /// The answer to `name` `qtype`: from the cache while it lives, else
    /// from the node's resolvers.
    pub async fn resolve(&self, name: &LowerName, qtype: RecordType) -> Forwarded {
        let key = (name.clone(), qtype);
        if let Some(answer) = self.cached(&key) {
            self.metrics.cache_hit();
            return answer;
        }
        self.metrics.cache_miss();
        let Some(resolver) = &self.resolver else {
            return Forwarded { rcode: ResponseCode::ServFail, answers: Vec::new(), authorities: Vec::new() };
        };
        let started = Instant::now();
        let result = resolver.lookup(Name::from(name.clone()), qtype).await;
        self.metrics.upstream_latency(started.elapsed());
        let (answer, ttl) = match result {
            Ok(lookup) => {
                let answers = lookup.answers().to_vec();
                let ttl = answers.iter().map(|r| r.ttl).min().unwrap_or(0);
                (Forwarded { rcode: ResponseCode::NoError, answers, authorities: Vec::new() }, Some(ttl))
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(none))) => {
                let authorities: Vec<Record> = none.soa.iter().map(|soa| (**soa).clone().into_record_of_rdata()).collect();
                (Forwarded { rcode: none.response_code, answers: Vec::new(), authorities }, none.negative_ttl)
            }
            Err(e) => {
                tracing::debug!(%name, %qtype, error = %e, "upstream lookup failed");
                (Forwarded { rcode: ResponseCode::ServFail, answers: Vec::new(), authorities: Vec::new() }, None)
            }
        };
        if let Some(ttl) = ttl.filter(|ttl| *ttl > 0) {
            self.store(key, answer.clone(), ttl.min(MAX_TTL));
        }
        answer
    }

    fn cached(&self, key: &(LowerName, RecordType)) -> Option<Forwarded> {
        let cache = self.cache.lock().unwrap();
        let entry = cache.get(key)?;
        let age = entry.stored.elapsed().as_secs() as u32;
        if age >= entry.ttl {
            return None;
        }
        // TTLs count down as the answer ages.
        let mut answer = entry.answer.clone();
        for record in answer.answers.iter_mut().chain(answer.authorities.iter_mut()) {
            record.ttl = record.ttl.saturating_sub(age).min(entry.ttl - age);
        }
        Some(answer)
    }

    fn store(&self, key: (LowerName, RecordType), answer: Forwarded, ttl: u32) {
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, e| e.stored.elapsed().as_secs() < u64::from(e.ttl));
            if cache.len() >= CACHE_ENTRIES
                && let Some(victim) = cache.keys().next().cloned()
            {
                cache.remove(&victim);
            }
        }
        cache.insert(key, Cached { answer, stored: Instant::now(), ttl });
    }
}

/// The `nameserver` addresses of a resolv.conf (an IPv6 zone index dropped).
fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    let (servers, _, _) = crate::pods::spec::parse_resolv_conf(resolv_conf);
    servers.iter().filter_map(|s| s.split('%').next()?.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::rr::RData;
    use hickory_server::proto::rr::rdata::A;

    fn upstream() -> Upstream {
        Upstream::new("", &[], Arc::new(Metrics::register(&mut Default::default())))
    }

    fn key(name: &str) -> (LowerName, RecordType) {
        (LowerName::new(&Name::from_ascii(name).unwrap()), RecordType::A)
    }

    #[test]
    fn cached_answers_age_and_expire_with_their_ttl() {
        let upstream = upstream();
        let record = Record::from_rdata(Name::from_ascii("www.example.test.").unwrap(), 300, RData::A(A::new(192, 0, 2, 7)));
        let answer = Forwarded { rcode: ResponseCode::NoError, answers: vec![record], authorities: Vec::new() };
        upstream.store(key("www.example.test."), answer, 300);
        // As if stored 100 s ago.
        upstream.cache.lock().unwrap().values_mut().for_each(|e| e.stored -= Duration::from_secs(100));
        let aged = upstream.cached(&key("www.example.test.")).expect("still cached");
        assert_eq!(aged.answers[0].ttl, 200, "the TTL counts down");
        upstream.cache.lock().unwrap().values_mut().for_each(|e| e.stored -= Duration::from_secs(200));
        assert!(upstream.cached(&key("www.example.test.")).is_none(), "gone once the TTL ran out");
    }

    #[test]
    fn a_negative_answer_is_kept_for_its_negative_ttl() {
        let upstream = upstream();
        let answer = Forwarded { rcode: ResponseCode::NXDomain, answers: Vec::new(), authorities: Vec::new() };
        upstream.store(key("missing.example.test."), answer, 30);
        assert_eq!(upstream.cached(&key("missing.example.test.")).unwrap().rcode, ResponseCode::NXDomain);
        upstream.cache.lock().unwrap().values_mut().for_each(|e| e.stored -= Duration::from_secs(30));
        assert!(upstream.cached(&key("missing.example.test.")).is_none());
    }

    #[tokio::test]
    async fn without_upstream_servers_other_names_fail() {
        let answer = upstream().resolve(&key("www.example.test.").0, RecordType::A).await;
        assert_eq!(answer.rcode, ResponseCode::ServFail);
    }

    #[test]
    fn nameservers_come_from_the_nameserver_lines() {
        let text = "# generated\nsearch corp.example\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\noptions ndots:2\nnameserver bogus\n";
        assert_eq!(nameservers(text), ["192.0.2.53".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]);
    }
}

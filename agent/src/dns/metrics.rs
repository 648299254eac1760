//! The DNS server's Prometheus metrics (named as CoreDNS names its own, so
//! existing dashboards read them): requests, responses by rcode, cache hits
//! and misses, upstream latency.

use hickory_server::proto::op::ResponseCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The rcodes counted on their own, as dig and CoreDNS print them; the
/// rest count as OTHER.
const RCODES: [&str; 7] = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "OTHER"];

fn rcode_index(rcode: ResponseCode) -> usize {
    match rcode {
        ResponseCode::NoError => 0,
        ResponseCode::FormErr => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::NXDomain => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::Refused => 5,
        _ => 6,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    proto: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RcodeLabels {
    rcode: &'static str,
}

/// Every counter is resolved once, here: the per-query path only
/// increments (a family lookup per query would cost a lock and a hash).
pub struct Metrics {
    udp_requests: Counter,
    tcp_requests: Counter,
    responses: [Counter; RCODES.len()],
    cache_hits: Counter,
    cache_misses: Counter,
    answer_cache_hits: Counter,
    upstream: Histogram,
}

impl Metrics {
    /// New metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<ProtocolLabels, Counter>::default();
        let responses = Family::<RcodeLabels, Counter>::default();
        // One statement each: get_or_create hands out a read guard, and a
        // second insert while it lives would wait for it forever.
        let counter = |proto| requests.get_or_create(&ProtocolLabels { proto }).clone();
        let (udp_requests, tcp_requests) = (counter("udp"), counter("tcp"));
        let responses_by_rcode = RCODES.map(|rcode| responses.get_or_create(&RcodeLabels { rcode }).clone());
        let metrics = Metrics {
            udp_requests,
            tcp_requests,
            responses: responses_by_rcode,
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            answer_cache_hits: Counter::default(),
            upstream: Histogram::new([0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0]),
        };
        let dns = registry.sub_registry_with_prefix("hawser_dns");
        dns.register("requests", "DNS requests received, by transport", requests);
        dns.register("responses", "DNS responses sent, by rcode", responses);
        dns.register("cache_hits", "Forwarded names answered from the cache", metrics.cache_hits.clone());
        dns.register("cache_misses", "Forwarded names asked of the upstream servers", metrics.cache_misses.clone());
        dns.register(
            "answer_cache_hits",
            "Cluster names answered with an encoded answer kept from before",
            metrics.answer_cache_hits.clone(),
        );
        dns.register("upstream_request_duration_seconds", "Time to an upstream answer", metrics.upstream.clone());
        metrics
    }

    pub fn request(&self, tcp: bool) {
        if tcp {
            self.tcp_requests.inc()
        } else {
            self.udp_requests.inc()
        };
    }

    pub fn response(&self, rcode: ResponseCode) {
        self.responses[rcode_index(rcode)].inc();
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_answer(&self, rcode: ResponseCode) {
        self.answer_cache_hits.inc();
        self.response(rcode);
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    pub fn upstream_latency(&self, elapsed: Duration) {
        self.upstream.observe(elapsed.as_secs_f64());
    }
}
